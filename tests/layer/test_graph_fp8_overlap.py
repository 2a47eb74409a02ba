"""FP8 training (Transformer Engine's fp8 linears) and TP communication overlap (userbuffers)
in the layer's op graph: what runs in which dtype, which ops appear, and what they cost."""
from __future__ import annotations

import dataclasses

import pytest

from tpsim.base.errors import ConfigError
from tpsim.layer.graph import layer_graph
from tpsim.layer.linears import RS_SPLITS
from tpsim.layer.ops import CastTranspose, MemoryBound, StochasticCast
from tpsim.spec.model import load_model
from tpsim.spec.model_params import plain_params
from tpsim.training.predict import predict, predict_layer


def _ops(g):
    return {n: a["op"] for n, a in g.nodes(data=True)}


def test_fp8_runs_the_linears_in_fp8_and_the_rest_in_bf16():
    """The four linears' GEMMs (forward, dgrad, wgrad) in fp8; attention, norms and collectives
    in bf16 (SP's gathered inputs in fp8); a cast-transpose before fwd.proj and fwd.mlp_out and
    before every linear's backward: read 2, write 1 + 1 bytes per element, a CastTranspose
    (MXFP8's block-scaled casts transpose nothing: plain memory-bound kernels)."""
    m = load_model("llama3-8b")
    g = layer_graph(m, 4, 1, 1024, "fp8", sequence_parallel=True)
    ops = _ops(g)
    for lin in ("qkv", "proj", "mlp_in", "mlp_out"):
        assert ops[f"fwd.{lin}"].dtype == ops[f"bwd.{lin}.dgrad"].dtype == "fp8"
        assert ops[f"bwd.{lin}.wgrad"].dtype == "fp8"
        assert f"bwd.{lin}.cast" in ops
    assert ops["fwd.attn"].dtype == "bf16" and ops["fwd.proj.reduce-scatter"].dtype == "bf16"
    assert ops["fwd.qkv.all-gather"].dtype == "fp8"
    assert ops["fwd.qkv.all-gather"].nbytes == 1024 * 4096          # b*s*h, one byte each
    assert ops["fwd.proj.cast"].nbytes == 1024 * 1024 * (2 + 2)     # (T x q), q = 32*128/4
    assert all(type(op) is CastTranspose for n, op in ops.items() if n.endswith(".cast"))
    mx = _ops(layer_graph(m, 4, 1, 1024, "mxfp8", sequence_parallel=True))
    assert all(type(op) is MemoryBound for n, op in mx.items() if n.endswith(".cast"))
    plain = _ops(layer_graph(m, 4, 1, 1024, "bf16", sequence_parallel=True))
    assert not [n for n in plain if n.endswith(".cast")]


def test_sp_row_parallel_backward_gathers_the_quantized_gradient():
    """With SP, a row-parallel linear's output gradient is cast on the rank's Tn x h shard and
    all-gathered quantized, one byte an element under fp8 (Transformer Engine's
    grad_output_preprocess); the linear's own backward casts nothing more. In bf16 the gather
    carries 2 bytes an element."""
    m = load_model("llama3-8b")
    g = layer_graph(m, 4, 1, 1024, "fp8", sequence_parallel=True)
    ops = _ops(g)
    for lin in ("proj", "mlp_out"):
        assert ops[f"bwd.{lin}.cast"].nbytes == 1024 // 4 * 4096 * (2 + 2)
        assert ops[f"bwd.{lin}.all-gather"].nbytes == 1024 * 4096
        assert ops[f"bwd.{lin}.all-gather"].dtype == "fp8"
        assert g.has_edge(f"bwd.{lin}.cast", f"bwd.{lin}.all-gather")
        assert g.has_edge(f"bwd.{lin}.all-gather", f"bwd.{lin}.dgrad")
    plain = _ops(layer_graph(m, 4, 1, 1024, "bf16", sequence_parallel=True))
    assert plain["bwd.proj.all-gather"].nbytes == 1024 * 4096 * 2


def test_fp8_is_faster_on_hopper_and_needs_an_fp8_peak():
    """H100 lists fp8 (1979 TFLOP/s): the layer is faster than bf16; A100 has no fp8 peak: the
    error names --dtype. FP8 keeps the bf16 weights plus the fp8 copy and its transpose of the
    linears' weights."""
    bf16 = predict("llama3-8b", "dgx-h100", tp=4, seq_len=4096, dtype="bf16")
    fp8 = predict("llama3-8b", "dgx-h100", tp=4, seq_len=4096, dtype="fp8")
    assert fp8.layer.total_s < bf16.layer.total_s
    m = load_model("llama3-8b")     # the copies are the linears': not the ends' nor the norms'
    plain = plain_params(m, 4, m.layers, True, True)
    assert fp8.memory.weights_bytes == 2 * bf16.memory.weights_bytes - 2 * plain
    with pytest.raises(ConfigError, match="--dtype"):
        predict("llama3-8b", "dgx-a100", tp=4, dtype="fp8")


def test_tp_overlap_chunks_the_gemms():
    """With TP 8: each column-parallel forward GEMM in 8 row chunks fed by 7 shard copies on the
    copy engines; each row-parallel GEMM in 4 chunks, each followed by its reduce-scatter; the
    row-parallel dgrads as ring exchanges too. The chunks add no host-dispatched op."""
    m = load_model("gpt3")
    on = layer_graph(m, 8, 1, 2048, "bf16", sequence_parallel=True)
    g = _ops_graph(m, overlap=True)
    chunks = [n for n in g if n.startswith("fwd.qkv.chunk")]
    copies = [n for n in g if n.startswith("fwd.qkv.p2p")]
    assert len(chunks) == 7 and len(copies) == 7
    assert {g.nodes[n]["stream"] for n in copies} == {"copy"}
    assert len([n for n in g if n.startswith("fwd.proj.reduce-scatter")]) == RS_SPLITS
    assert "fwd.qkv.all-gather" not in g and "fwd.qkv.all-gather" in on
    assert "bwd.proj.dgrad.p2p7" in g


def _ops_graph(m, overlap):
    from tpsim.layer.dims import layer_dims
    from tpsim.layer.graph import layer_template
    tpl = layer_template(True, True, dropout=True, bias=True, tp_overlap=8 if overlap else 0)
    return tpl.digraph(layer_dims(m, 8, 1, 2048, "bf16", True))


def test_tp_overlap_hides_the_sequence_parallel_collectives():
    """GPT-3 175B, TP 8, SP on H100: overlap cuts the exposed communication; the host issues
    fewer ops (the sequence-parallel collectives run inside Transformer Engine's GEMM calls:
    forward 14 -> 10, the 2 all-gathers and 2 reduce-scatters; backward 26 -> 24, the row
    linears' gathers); overlap needs SP."""
    off = predict_layer("gpt3", "dgx-h100", tp=8, sequence_parallel=True)
    on = predict_layer("gpt3", "dgx-h100", tp=8, sequence_parallel=True, tp_comm_overlap=True)
    assert on.exposed_comm_s < off.exposed_comm_s / 3
    assert on.total_s < off.total_s
    from tpsim.layer.graph import layer_template
    a = layer_template(True, True, dropout=True, bias=True)
    b = layer_template(True, True, dropout=True, bias=True, tp_overlap=8)
    assert a.host_ops == (14, 26) and b.host_ops == (10, 24)
    with pytest.raises(ConfigError, match="--tp-comm-overlap"):
        predict_layer("gpt3", "dgx-h100", tp=8, tp_comm_overlap=True)


@pytest.mark.parametrize("seq", [2048, 2056, 2050, 2058])
def test_tp_overlap_chunks_keep_every_row(seq):
    """Rows not a multiple of the chunk count (b*s = 2050: 2050 mod 4 = 2) go one each to the
    first chunks (513, 513, 512, 512): the row-parallel GEMM's chunks, their reduce-scatters
    and the ring exchange's chunks sum to the unchunked GEMM's m and collective's bytes."""
    from tpsim.layer.dims import layer_dims
    from tpsim.layer.graph import layer_template
    m = load_model("gpt3")
    dims = layer_dims(m, 2, 1, seq, "bf16", True)
    on = {n: a["op"] for n, a in layer_template(True, True, dropout=True, bias=True,
                                                tp_overlap=2).digraph(dims).nodes(data=True)}
    off = {n: a["op"] for n, a in layer_template(True, True, dropout=True, bias=True
                                                 ).digraph(dims).nodes(data=True)}
    for name in ("fwd.proj", "fwd.mlp_out", "fwd.qkv"):
        rows = [op.m for n, op in on.items() if n == name or n.startswith(f"{name}.chunk")]
        assert sum(rows) == off[name].m == seq and max(rows) - min(rows) <= 1
    rs = [op.nbytes for n, op in on.items() if n.startswith("fwd.proj.reduce-scatter")]
    assert len(rs) == RS_SPLITS and sum(rs) == off["fwd.proj.reduce-scatter"].nbytes


def test_fp8_keeps_the_linears_inputs_as_fp8_casts():
    """Transformer Engine's FP8 linears keep their inputs for the weight gradient as fp8 casts,
    one byte: the QKV and fc1 inputs (the norms' fp8 outputs, Tn x h each, SP shards) and the
    fc2 input (T x f) each cost 1 byte instead of 2; the attention output (T x q) stays kept
    in bf16 by the fused kernel, and the projection keeps its fp8 cast besides (+1 byte).
    Llama 3 8B at TP 4, SP, seq 1024: Tn = 256, h = 4096, f = 14336 / 4, q = 1024."""
    m = load_model("llama3-8b")
    T, h, f, q = 1024, 4096, 14336 // 4, 4096 // 4

    def saved(g):
        return sum(a["saved_bytes"] for _, a in g.nodes(data=True))
    bf16 = saved(layer_graph(m, 4, 1, T, "bf16", sequence_parallel=True))
    fp8 = saved(layer_graph(m, 4, 1, T, "fp8", sequence_parallel=True))
    assert bf16 - fp8 == 2 * (T // 4) * h + T * f - T * q


@pytest.mark.parametrize("sp", [False, True])
def test_current_scaling_reads_each_cast_input_twice_and_casts_the_norms_apart(sp):
    """FP8 current scaling (--fp8-recipe tensorwise): every cast that finds its own amax reads
    the 16-bit input once more (2 bytes an element) in an amax kernel of its own, memory-bound
    (``.amax``); the fused norm writes 16 bits and its amax,
    and a cast of its Tn x h output follows before the gather (read 2, write 1 + 1: no amax
    pass). Delayed scaling's fused norm writes fp8 itself: no such cast. Blockwise scaling finds
    its block scales in the cast (no amax pass) but casts the norms apart too."""
    m = load_model("llama3-8b")
    tn = 1024 // 4 if sp else 1024
    delayed, current, blockwise = (_ops(layer_graph(m, 4, 1, 1024, "fp8", sequence_parallel=sp,
                                                    fp8_recipe=r))
                                   for r in ("delayed", "tensorwise", "blockwise"))
    assert "fwd.qkv.cast" not in delayed and "fwd.mlp_in.cast" not in delayed
    for ops in (current, blockwise):
        assert ops["fwd.qkv.cast"].nbytes == ops["fwd.mlp_in.cast"].nbytes == tn * 4096 * (2 + 2)
        assert type(ops["fwd.qkv.cast"]) is CastTranspose
    amax = set()
    for name, op in delayed.items():
        if name.endswith(".cast"):
            assert current[name].nbytes == blockwise[name].nbytes == op.nbytes
            assert current[f"{name}.amax"].nbytes == op.nbytes * 2 / (2 + 2)
            assert type(current[f"{name}.amax"]) is MemoryBound
            amax.add(f"{name}.amax")
    reduced = {f"{c}.amax-all-reduce" for c in REDUCED_CASTS} if sp else set()
    assert set(current) - set(delayed) == {"fwd.qkv.cast", "fwd.mlp_in.cast"} | amax | reduced
    assert set(blockwise) - set(delayed) == {"fwd.qkv.cast", "fwd.mlp_in.cast"}


# the casts of sequence-parallel shards the TP group gathers: the column-parallel inputs and
# the row-parallel output gradients
REDUCED_CASTS = ("fwd.qkv.cast", "fwd.mlp_in.cast", "bwd.proj.cast", "bwd.mlp_out.cast")


@pytest.mark.parametrize("overlap", [False, True])
def test_sp_casts_all_reduce_their_amax_over_tp_before_the_cast(overlap):
    """Under SP, current scaling and NVFP4 all-reduce (MAX) the amax of each of the four
    gathered operands over the TP group, between the amax (the norm's, or its own pass) and the
    cast: 4 bytes (NVFP4: its row-wise and column-wise amaxes, 8); with TP overlap too. Delayed
    scaling, MXFP8 and blockwise scaling reduce nothing per tensor, nor does any recipe
    without SP."""
    from tpsim.layer.dims import layer_dims
    from tpsim.layer.graph import layer_template
    m = load_model("llama3-8b")
    for dtype, quantizer, nbytes in (("fp8", "fp8:tensorwise", 4), ("nvfp4", "nvfp4", 8)):
        tpl = layer_template(True, True, fp8=quantizer, tp_overlap=4 if overlap else 0)
        dims = layer_dims(m, 4, 1, 1024, dtype, True)
        g = tpl.digraph(dataclasses.replace(dims, fp8_recipe=quantizer.split(":")[-1])
                        if dtype == "fp8" else dims)
        reductions = sorted(n for n in g if n.endswith(".amax-all-reduce"))
        assert reductions == sorted(f"{c}.amax-all-reduce" for c in REDUCED_CASTS)
        for c in REDUCED_CASTS:
            op = g.nodes[f"{c}.amax-all-reduce"]["op"]
            assert (op.op, op.nbytes, op.group) == ("all-reduce", nbytes, "tp")
            assert g.has_edge(f"{c}.amax-all-reduce", c)
        assert g.has_edge("fwd.mlp_in.cast.amax-all-reduce", "fwd.mlp_in.cast")
        first = "fwd.qkv.chunk0" if overlap else "fwd.qkv.all-gather"
        assert g.has_edge("fwd.qkv.cast", first)
    for dtype, recipe in (("fp8", "delayed"), ("fp8", "blockwise"), ("mxfp8", "delayed")):
        ops = _ops(layer_graph(m, 4, 1, 1024, dtype, sequence_parallel=True, fp8_recipe=recipe))
        assert not [n for n in ops if n.endswith(".amax-all-reduce")]
    ops = _ops(layer_graph(m, 4, 1, 1024, "nvfp4", sequence_parallel=False))
    assert not [n for n in ops if n.endswith(".amax-all-reduce")]


def test_current_scaling_slows_the_step_and_delayed_stays_the_default():
    kw = dict(tp=4, sequence_parallel=True, dtype="fp8")
    base = predict_layer("llama3-8b", "dgx-h100", **kw).total_s
    assert predict_layer("llama3-8b", "dgx-h100", fp8_recipe="delayed", **kw).total_s == base
    assert predict_layer("llama3-8b", "dgx-h100", fp8_recipe="tensorwise", **kw).total_s > \
        predict_layer("llama3-8b", "dgx-h100", fp8_recipe="blockwise", **kw).total_s > base
    # the recipe is fp8's: bf16 ignores it
    assert predict_layer("llama3-8b", "dgx-h100", tp=4, fp8_recipe="tensorwise").total_s == \
        predict_layer("llama3-8b", "dgx-h100", tp=4).total_s


@pytest.mark.parametrize("sp", [False, True])
def test_nvfp4_reads_every_amax_after_its_norm_and_rounds_the_gradients_stochastically(sp):
    """NVFP4 (Transformer Engine's NVFP4BlockScaling): its Hadamard-transformed copy's amax is
    found in a pass of its own, so the norms' outputs are cast with one too (``.amax``, read 2
    bytes an element), where current scaling's norm finds it; each cast writes both block-scaled
    copies (2 x (1/2 + 1/16) bytes); the output gradients' casts round stochastically
    (StochasticCast), the inputs' round to nearest; MXFP8 rounds none stochastically."""
    m = load_model("llama3-8b")
    tn = 1024 // 4 if sp else 1024
    nv, current, mx = (_ops(layer_graph(m, 4, 1, 1024, dtype, sequence_parallel=sp,
                                        fp8_recipe=r))
                       for dtype, r in (("nvfp4", "delayed"), ("fp8", "tensorwise"),
                                        ("mxfp8", "delayed")))
    for lin in ("qkv", "mlp_in"):
        assert nv[f"fwd.{lin}.cast.amax"].nbytes == tn * 4096 * 2
        assert f"fwd.{lin}.cast.amax" not in current
        assert nv[f"fwd.{lin}.cast"].nbytes == tn * 4096 * (2 + 2 * (1 / 2 + 1 / 16))
    casts = [n for n in nv if n.endswith(".cast")]
    assert all(f"{n}.amax" in nv for n in casts)
    for n in casts:
        assert type(nv[n]) is (StochasticCast if n.startswith("bwd.") else MemoryBound)
    assert all(type(op) is MemoryBound for n, op in mx.items() if n.endswith(".cast"))
