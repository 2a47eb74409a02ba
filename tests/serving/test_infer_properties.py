"""tpsim infer as a monotone model: more work is never faster, more resources never slower.

Why batch never lowers tokens/s (but see the tiles below): every op's time is a max (or, for
NCCL's choice of algorithm, a min) of affine functions of the batch with non-negative
intercepts (launches, latencies, weight bytes), so time/batch never grows; sums and maxima of
the schedule keep that.

Two exceptions are real. vLLM's custom all-reduce picks one-shot or two-shot, or falls back to
NCCL, by a size rule rather than by time, so where a bigger batch or prompt crosses one of its
thresholds the step may get faster or slower: the properties compare custom all-reduce runs
only where both use the same kernels (``_dispatch``). And a GEMM's output is computed in tiles
(:func:`tpsim.cost.compute.tile_wave_efficiency`, NVIDIA's tile quantization): a decode batch one
token past a multiple of the tile's rows adds a tile row that is almost empty, and where the
GEMMs are compute-bound the step can take up to twice as long for one more token (Llama 2 70B,
TP 4 on A100s: 30 ms at batch 128, 66 ms at 129). Within one tile row a GEMM's compute time
is constant and its memory time affine, so tokens/s is compared only for batches that fill the
same number of tile rows.
"""
import dataclasses
import math

from hypothesis import assume, given, settings, strategies as st

from tpsim.serving.infer import infer
from tpsim.spec.model import load_model
from tpsim.cluster.topology import load_topology

MODELS = {n: load_model(n) for n in ("llama2-70b", "llama3-8b", "gpt3-13b")}
TOPOS = {n: load_topology(n) for n in ("dgx-h100", "dgx-a100")}
FAST = settings(max_examples=20, deadline=None)

configs = st.fixed_dictionaries({
    "model": st.sampled_from(sorted(MODELS)), "topology": st.sampled_from(sorted(TOPOS)),
    "tp": st.sampled_from([1, 2, 4, 8]), "batch": st.integers(1, 96),
    "prompt": st.integers(1, 3000), "gen": st.integers(2, 300),
    "allreduce": st.sampled_from(["nccl", "custom"]), "eager": st.booleans()})


def run(c, **change):
    c = {**c, **change}
    return infer(MODELS[c["model"]], TOPOS[c["topology"]], tp=c["tp"], batch=c["batch"],
                 prompt=c["prompt"], gen=c["gen"], allreduce=c["allreduce"], eager=c["eager"])


TOL = 1 + 1e-12


def _dispatch(p):
    """The all-reduce kernels a prediction ran (algorithm/protocol of each collective)."""
    return tuple(frozenset(r.algorithm for r in rows)
                 for rows in (p.prefill_collectives, p.decode_collectives))


def same_kernels(c, a, b) -> bool:
    return c["allreduce"] != "custom" or _dispatch(a) == _dispatch(b)


@FAST
@given(configs, st.integers(1, 2000))
def test_longer_prompt_never_faster(c, more):
    a, b = run(c), run(c, prompt=c["prompt"] + more)
    assume(same_kernels(c, a, b))
    assert b.prefill.time_s * TOL >= a.prefill.time_s
    assert b.decode.time_per_token_s * TOL >= a.decode.time_per_token_s
    assert b.memory.kv_cache_bytes > a.memory.kv_cache_bytes


@FAST
@given(configs, st.integers(1, 200))
def test_more_batch_never_a_faster_step_nor_fewer_tokens_per_second(c, more):
    """Tokens/s within one tile row of the decode GEMMs (module docstring)."""
    a, b = run(c), run(c, batch=c["batch"] + more)
    assume(same_kernels(c, a, b))
    assert b.decode.time_per_token_s * TOL >= a.decode.time_per_token_s
    assert b.prefill.time_s * TOL >= a.prefill.time_s
    rows = min(TOPOS[c["topology"]].device.gemm_tile)
    if math.ceil(c["batch"] / rows) == math.ceil((c["batch"] + more) / rows):
        assert b.decode.tokens_per_s * TOL >= a.decode.tokens_per_s
    assert b.memory.total_bytes > a.memory.total_bytes


@FAST
@given(configs, st.integers(1, 500))
def test_longer_generation_never_lowers_the_mean_step(c, more):
    a, b = run(c), run(c, gen=c["gen"] + more)
    assert b.decode.time_per_token_s * TOL >= a.decode.time_per_token_s
    assert b.total.time_s > a.total.time_s
    assert a.decode.first_step_s <= a.decode.time_per_token_s * TOL
    assert a.decode.time_per_token_s <= a.decode.last_step_s * TOL


@FAST
@given(configs, st.floats(1.01, 4.0))
def test_more_memory_bandwidth_never_slower(c, factor):
    topo = TOPOS[c["topology"]]
    fast = dataclasses.replace(topo, device=dataclasses.replace(
        topo.device, memory_bandwidth_Bps=topo.device.memory_bandwidth_Bps * factor))
    a = run(c)
    b = infer(MODELS[c["model"]], fast, tp=c["tp"], batch=c["batch"], prompt=c["prompt"],
              gen=c["gen"], allreduce=c["allreduce"], eager=c["eager"])
    assert b.decode.time_per_token_s <= a.decode.time_per_token_s * TOL
    assert b.prefill.time_s <= a.prefill.time_s * TOL


@FAST
@given(configs.filter(lambda c: c["topology"] == "dgx-h100"))
def test_fp8_never_slower_than_bf16(c):
    m, t = MODELS[c["model"]], TOPOS["dgx-h100"]
    kw = dict(tp=c["tp"], batch=c["batch"], prompt=c["prompt"], gen=c["gen"],
              allreduce=c["allreduce"], eager=c["eager"])
    bf16, fp8 = infer(m, t, **kw), infer(m, t, dtype="fp8", **kw)
    kv8 = infer(m, t, kv_dtype="fp8", **kw)
    assert fp8.decode.time_per_token_s <= bf16.decode.time_per_token_s * TOL
    assert fp8.prefill.time_s <= bf16.prefill.time_s * TOL
    assert kv8.decode.time_per_token_s <= bf16.decode.time_per_token_s * TOL
    assert fp8.memory.weights_bytes < bf16.memory.weights_bytes


@FAST
@given(configs)
def test_one_rank_has_no_collectives_and_the_breakdown_adds_up(c):
    p = run(c, tp=1)
    assert p.decode.cost.comm_bytes == 0 == p.prefill.cost.comm_bytes
    for cost in (p.prefill.cost, p.decode.cost):
        parts = cost.hbm_s + cost.flops_s + cost.launch_s + cost.comm_s + cost.host_s
        assert abs(parts - cost.time_s) <= 1e-9 * cost.time_s
