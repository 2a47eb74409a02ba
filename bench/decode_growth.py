"""What a decode step does per running sequence that tpsim does not price, beside the growth
per sequence that SGLang v0.3.0's and vLLM v0.6.0's published runs show
(bench/serve_rate_published.py, docs/serving.md "Under a Poisson request rate").

    python bench/decode_growth.py

Prints, per engine and model, the decode step's growth per sequence measured and tpsim's
(:func:`serve_rate_published.growth`), and what each candidate left out of tpsim's step adds
per sequence at tpsim's own rates (the shipped ``dgx-a100`` and ``dgx-h100``):

* **the sampler's passes over the vocabulary** beyond the one tpsim prices (``fwd.sample``,
  :mod:`tpsim.layer.infer_graph`: read the b x V logits, write them as fp32). The runs'
  client, ``sglang.bench_serving``, sends every request greedy (``temperature`` 0.0,
  ``best_of`` 1, ``max_tokens``, ``ignore_eos``; no top-p, top-k, penalty or logprobs), so
  neither engine sorts the vocabulary (vLLM's ``_apply_top_k_top_p`` runs only for
  ``do_top_p_top_k``), nor builds penalty tensors (vLLM's ``do_penalties``, SGLang's
  penalizers' ``is_required``) nor returns top logprobs. What is left, in bytes per vocabulary
  element (SAMPLER_BYTES): vLLM's V0 ``Sampler.forward``
  (vllm/model_executor/layers/sampler.py, the V0 engine's multi-step-era file as of commit
  00f5ff3475): ``logits.div_(temperatures)`` in fp32 (8),
  ``torch.softmax`` (8) and ``torch.log_softmax`` (8), the greedy path's
  ``logprobs[long_sample_indices]`` copy (8) and ``argmax`` (4), and, where ``get_logprobs``
  computes the sampled token's rank (that commit skips it when no logprobs are asked for;
  the high bound keeps it), another copy of the rows (8) and ``_get_ranks``' comparison and
  sum (4 + 2); SGLang v0.3.0's ``Sampler`` (python/sglang/srt/layers/sampler.py):
  ``logits.div_(temperatures)`` (8), ``torch.softmax`` (8) and FlashInfer's
  ``top_k_top_p_sampling_from_probs`` with top_k 1 (SGLang turns temperature 0 into top_k 1),
  two passes over the row a rejection round, 1-3 rounds (8 to 24);
* **the GEMMs' growth with the step's rows**: microsoft/vidur's profiled decode GEMMs
  (tests/data/published_compute/decode_gemm_vidur.csv) fitted linearly over 8-64 rows, a
  layer, times the layers, against tpsim's :func:`tpsim.cost.compute.gemm_time` over the
  same rows.

And two diagnostics, neither a model: the measured growth less tpsim's taken as host time
per sequence (``host_seq_us`` raised by it) against the offline rows, whose steps hold
133-187 sequences.
"""
from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import serve_rate_published as S  # noqa: E402
from compute_published import DECODE_OPS as OPS, decode_layer_us, rows as published  # noqa: E402
from tpsim.cluster.topology import load_topology  # noqa: E402
from tpsim.cost.compute import elementwise_time  # noqa: E402
from tpsim.serving.engine import serve  # noqa: E402
from tpsim.spec.model import load_model  # noqa: E402
from tpsim.spec.serve import ServeSettings  # noqa: E402

# bytes a vocabulary element, beyond tpsim's fwd.sample, (low, high) (module docstring)
SAMPLER_BYTES = {"vLLM": (8 + 8 + 8 + 8 + 4, 8 + 8 + 8 + 8 + 4 + 8 + 4 + 2),
                 "SGLang": (8 + 8 + 8, 8 + 8 + 24)}
TOPOLOGY = {"llama3-8b": "dgx-a100", "llama3-70b": "dgx-h100"}
VIDUR_MODEL = {"llama3-8b": "Meta-Llama-3-8B", "llama3-70b": "Llama-2-70b-hf"}


def sampler_us(engine: str, model: str) -> tuple[float, float]:
    """(low, high) us a sequence of the sampler's passes tpsim leaves out: SAMPLER_BYTES x V
    at the device's elementwise rate (the slope of :func:`elementwise_time`, its launches
    being per step, not per sequence)."""
    dev = load_topology(TOPOLOGY[model]).device
    vocab = load_model(model).vocab
    return tuple((elementwise_time(2 * b * vocab, dev) - elementwise_time(b * vocab, dev)) * 1e6
                 for b in SAMPLER_BYTES[engine])


def slope(xs, ys) -> float:
    """The least-squares slope of ys on xs."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return (sum((x - mx) * (y - my) for x, y in zip(xs, ys)) /
            sum((x - mx) ** 2 for x in xs))


def gemm_us(model: str) -> tuple[float, float]:
    """(Vidur's, tpsim's) growth of a decode step's GEMMs, us a sequence: the slope of a
    layer's four GEMMs over 8-64 rows, times the model's layers."""
    rows = [r for r in published("decode_gemm_vidur.csv")
            if r["model"] == VIDUR_MODEL[model] and int(r["rows"]) >= 8]
    m = [int(r["rows"]) for r in rows]
    layers = load_model(model).layers
    meas = slope(m, [sum(float(r[o]) for o in OPS) for r in rows])
    got = slope(m, [sum(decode_layer_us(r)) for r in rows])
    return meas * layers, got * layers


def offline_with(extra_us: dict) -> list[str]:
    """Each offline row's error with ``host_seq_us`` raised by ``extra_us[(engine, model)]``
    (module docstring: a diagnostic)."""
    lines = []
    for r in S.published():
        model, topo, tp, rate, n, engine = S.case(r)
        if not math.isinf(rate):
            continue
        x = extra_us[(engine, model)]
        p = serve(model, topo, tp=tp, rate=rate, requests=n, seed=0,
                  prompt=round(S.PROMPT_MEAN), gen=round(S.GEN_MEAN), prompt_dist="exponential",
                  gen_dist="exponential", allreduce="custom", memory_headroom=0.0,
                  host_seq_us=ServeSettings().host_seq_us + x, **S.ENGINES[engine])
        got = p.throughput.output_tokens_per_s / r["output_tokens_per_s"] - 1
        lines.append(f"  {engine} {model} offline, host_seq_us +{x:.0f}: output tok/s "
                     f"{got:+.1%} (mean {p.scheduler.mean_running:.0f} sequences a step)")
    return lines


def main() -> int:
    grow = S.growth(S.batch_points())
    print(f"{'engine':7s} {'model':11s} {'measured':>9s} {'tpsim':>7s} {'missing':>8s} "
          f"{'sampler':>11s} {'GEMMs':>6s}  us a sequence a decode step")
    extra = {}
    for (engine, model), (meas, got) in grow.items():
        lo, hi = sampler_us(engine, model)
        vidur, own = gemm_us(model)
        extra[(engine, model)] = (meas - got) * 1e3
        print(f"{engine:7s} {model:11s} {meas * 1e3:9.0f} {got * 1e3:7.0f} "
              f"{(meas - got) * 1e3:8.0f} {lo:5.1f}-{hi:<5.1f} {vidur - own:6.1f}")
    print("the missing growth as host time a sequence, against the offline rows:")
    print("\n".join(offline_with(extra)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
