"""Time the expert-parallel MoE layer (:mod:`tpsim.tp.moe`) over every rank and predict its
forward with tpsim's MoE slot (:mod:`tpsim.layer.infer_moe`) on the calibrated topology.

Each rank routes its own seq x batch tokens to top_k of experts_per_rank x world experts; the
layer dispatches them with an all-to-all, runs its experts, combines with an all-to-all. The
prediction is the serial sum of the slot's priced ops (router GEMM, top-k, dispatch, permute,
the grouped expert GEMMs and activation, combine, unpermute), as the layer issues every
collective synchronously, plus the layer's exchange of row counts before the dispatch (an
all-to-all of p x E/p int64 counts, which the serving slot has no op for: DeepEP exchanges
them inside its kernels), priced by tpsim's all-to-all on the same topology. The fit sees
all-to-alls only as microbenchmarks (``bench.collective_items``). What the prediction leaves
out: the router's softmax, its sort of the (token, expert) pairs, and the layer's sort and
unsort of the received rows by expert (``validate/moe_probe.py`` times each part).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from bench import Item
from layer_bench import _runner

from tpsim.layer.infer_graph import InferDims
from tpsim.layer.infer_moe import infer_moe_fwd
from tpsim.layer.ops import Collective
from tpsim.layer.template import Builder
from tpsim.sim.price import Pricing, price
from tpsim.sim.simulate import simulate
from tpsim.spec.parallel import Parallelism


@dataclass(frozen=True)
class MoeShape:
    """One MoE layer's sizes per rank: seq x batch tokens, experts_per_rank experts each."""
    seq: int
    batch: int
    hidden: int
    ffn: int
    experts_per_rank: int
    top_k: int
    activation: str = "gelu"

    def label(self) -> str:
        return (f"s{self.seq} b{self.batch} h{self.hidden} f{self.ffn} "
                f"E{self.experts_per_rank}/rank top{self.top_k} {self.activation}")

    def as_dict(self) -> dict:
        return asdict(self)


SHAPES = {"smoke": (MoeShape(32, 2, 64, 128, 2, 2, "gelu"),),
          "quick": (MoeShape(256, 2, 512, 1024, 4, 2, "swiglu"),
                    MoeShape(512, 1, 384, 768, 8, 2, "gelu")),
          "full": (MoeShape(256, 2, 512, 1024, 4, 2, "swiglu"),
                   MoeShape(512, 1, 384, 768, 8, 2, "gelu"),
                   MoeShape(1024, 1, 512, 1024, 8, 4, "swiglu"))}


def moe_items(mode: str, world: int, dtype, device) -> list[Item]:
    """One forward timing :class:`bench.Item` per shape of ``mode``."""
    from tpsim.tp.moe import ExpertParallelMoE
    items = []
    for sh in SHAPES[mode]:
        layer = ExpertParallelMoE(sh.hidden, sh.ffn, sh.experts_per_rank * world, sh.top_k,
                                  activation=sh.activation, seed=7, dtype=dtype, device=device)
        run, setup = _runner(layer, sh, "forward", dtype, device)
        items.append(Item(f"layer/moe/forward/{sh.label()}", run,
                          {"layer": "moe", "phase": "forward", "shape_obj": sh}, setup))
    return items


def counts_exchange(sh: MoeShape, world: int) -> Collective:
    """The layer's all-to-all of its (world x experts_per_rank) int64 row counts."""
    return Collective("all-to-all", 8.0 * world * sh.experts_per_rank, "ep", dtype="int64")


def simulate_moe_forward(topo, sh: MoeShape, world: int, dtype: str):
    """(template, simulation, the row-count exchange's seconds) of the serving MoE slot's
    forward at ``sh`` on EP ``world`` (:mod:`tpsim.layer.infer_moe`) on ``topo``."""
    B = Builder(False)
    infer_moe_fwd(B, None, sh.activation == "swiglu", False)
    tpl = B.compile({"tp": 1, "ep": world})
    d = InferDims(b=sh.batch, s=sh.seq, h=sh.hidden, tp=1, dtype=dtype, heads=1, kv_heads=1,
                  d=1, f=sh.ffn, sp=False, experts=sh.experts_per_rank, topk=sh.top_k,
                  fe=sh.ffn, act_dtype=dtype, kv_dtype=dtype, ep=world)
    pricing = Pricing(topo, Parallelism(ep=world))
    return tpl, simulate(tpl, d, pricing, 0.0), price(counts_exchange(sh, world), pricing)[0]


def predict_moe_forward(topo, sh: MoeShape, world: int, dtype: str) -> dict:
    """Serial, collective and GEMM seconds of the slot's forward at ``sh`` on EP ``world``, with
    the layer's all-to-all of its (world x experts_per_rank) int64 row counts."""
    _, sim, counts = simulate_moe_forward(topo, sh, world, dtype)
    kinds = [(op.kind, t) for op, t in zip(sim.ops, sim.times)]
    kinds.append(("collective", counts))
    return {"serial": sum(t for _, t in kinds), "comm": sum(t for k, t in kinds if k == "collective"),
            "matmul": sum(t for k, t in kinds if k == "gemm")}


def moe_cases(measured: list[dict], topo, world: int, dtype: str) -> list[dict]:
    """Each timed MoE forward beside its prediction (error: percent of the measurement)."""
    cases = []
    for row in (r for r in measured if r["layer"] == "moe"):
        sh = row["shape_obj"]
        pred = predict_moe_forward(topo, sh, world, dtype)
        case = {k: v for k, v in row.items() if k != "shape_obj"}
        case.update(shape=sh.label(), shape_dims=sh.as_dict(), predicted_s=pred["serial"],
                    predicted_collective_s=pred["comm"], predicted_matmul_s=pred["matmul"],
                    error_pct=100.0 * (pred["serial"] - row["measured_s"]) / row["measured_s"])
        cases.append(case)
    return cases


def render_md(cases: list[dict]) -> str:
    """The MoE section of report.md."""
    if not cases:
        return ""
    lines = ["", "## Expert-parallel MoE layer, forward (tpsim.tp.moe vs tpsim.layer.infer_moe)",
             "", "| shape | measured ms | predicted ms | error | all-to-all ms measured / "
             "predicted |", "| --- | ---: | ---: | ---: | ---: |"]
    for c in cases:
        lines.append(f"| {c['shape']} | {c['measured_s'] * 1e3:.3f} | "
                     f"{c['predicted_s'] * 1e3:.3f} | {c['error_pct']:+.1f}% | "
                     f"{c['collective_s'] * 1e3:.3f} / {c['predicted_collective_s'] * 1e3:.3f} |")
    lines += ["", "All-to-all measured: the instrumented pass's time inside the calls, the wait for "
              "the other rank included; predicted: dispatch, combine and the row counts' exchange. "
              "Each part against its price: `validate/moe_probe.py`."]
    return "\n".join(lines) + "\n"
