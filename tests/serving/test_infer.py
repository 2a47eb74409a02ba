"""tpsim infer: closed forms, physical bounds and the custom all-reduce, each derived by hand."""
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpsim import infer
from tpsim.cost.collectives import (custom_all_reduce_time, custom_all_reduce_unsupported,
                               custom_kernel_time)
from tpsim.cost.custom_staging import staged_custom_all_reduce
from tpsim.base.errors import ConfigError, TpsimError
from tpsim.layer.graph import layer_template
from tpsim.serving.infer import mean_over_lengths
from tpsim.layer.infer_graph import (decode_attention_bytes, decode_attention_core, infer_dims,
                               serving_layer_template)
from tpsim.layer.graph import layer_dims
from tpsim.serving.memory import kv_bytes_per_token, weights_per_gpu
from tpsim.spec.model import load_model, with_overrides
from tpsim.spec.parallel import Group
from tpsim.cluster.topology import load_topology

H100 = load_topology("dgx-h100")
L70 = load_model("llama2-70b")


# --------------------------------------------------------------------------- custom all-reduce

def test_custom_all_reduce_one_shot_closed_form():
    """8 H100s, 16 KiB: one-shot. launch 3 us + 2 x 2.49 us + 7 x 16384 B / (450 GB/s x 0.82)
    = 3 + 4.98 + 0.3108 = 8.2908 us."""
    c = custom_all_reduce_time(16384, H100.place(8), H100)
    assert c.protocol == "one-shot" and c.algorithm == "custom"
    assert c.time_s == pytest.approx(3e-6 + 4.98e-6 + 7 * 16384 / 369e9, rel=1e-12)
    assert c.time_s * 1e6 == pytest.approx(8.2908, abs=1e-4)


def test_custom_all_reduce_two_shot_and_thresholds():
    """8 ranks, 1 MiB: two-shot, 2 x 7/8 x 1048576 / (369e9 x 0.734) = 6.775 us of transfer and
    2 x 2.49 + 3.67 us of barriers; 4 ranks switch at 512 KiB, 8 ranks at 256 KiB, 2 never."""
    c = custom_all_reduce_time(2**20, H100.place(8), H100)
    assert c.protocol == "two-shot"
    assert c.transfer_s == pytest.approx(2 * 7 / 8 * 2**20 / (369e9 * 0.734), rel=1e-12)
    assert c.latency_s == pytest.approx(2 * 2.49e-6 + 3.67e-6, rel=1e-12)
    assert custom_all_reduce_time(256 * 2**10 - 16, H100.place(8), H100).protocol == "one-shot"
    assert custom_all_reduce_time(256 * 2**10, H100.place(8), H100).protocol == "two-shot"
    assert custom_all_reduce_time(512 * 2**10 - 16, H100.place(4), H100).protocol == "one-shot"
    assert custom_all_reduce_time(512 * 2**10, H100.place(4), H100).protocol == "two-shot"
    assert custom_all_reduce_time(4 * 2**20, H100.place(2), H100).protocol == "one-shot"


def test_custom_all_reduce_only_where_vllm_runs_it():
    cluster, pcie = load_topology("dgx-h100-ndr-cluster"), load_topology("pcie-l40s")
    assert "ranks" in custom_all_reduce_unsupported(1024, H100.place(3))
    across = cluster.place(Group("tp", 2, stride=8))      # ranks 0 and 8: two nodes
    assert "node" in custom_all_reduce_unsupported(1024, across)
    assert "NVLink" in custom_all_reduce_unsupported(1024, pcie.place(4))
    assert custom_all_reduce_unsupported(1024, pcie.place(2)) == ""
    assert "bytes" in custom_all_reduce_unsupported(8 * 2**20, H100.place(8))
    with pytest.raises(ConfigError):
        custom_all_reduce_time(8 * 2**20, H100.place(8), H100)


def test_custom_all_reduce_staging_copy_outside_graphs():
    """Without CUDA graphs vLLM copies the input into its IPC buffer before the kernel
    (csrc/custom_all_reduce.cu all_reduce): 4 MiB on H100, 3 us + 2 x 4194304 B /
    (3.35 TB/s x 0.8) = 6.1301 us on top of the graph path's time; with graphs, none."""
    graph = custom_all_reduce_time(4 * 2**20, H100.place(2), H100)
    eager = staged_custom_all_reduce(graph, H100.device)
    assert eager.copy_s == pytest.approx(3e-6 + 2 * 4 * 2**20 / (3.35e12 * 0.8), rel=1e-12)
    assert eager.copy_s * 1e6 == pytest.approx(6.1301, abs=1e-4)
    assert eager.time_s == pytest.approx(graph.time_s + eager.copy_s, rel=1e-12)
    rows = {e: infer("llama3-8b", H100, tp=2, batch=1, prompt=512, gen=2, allreduce="custom",
                     eager=e).prefill_collectives[0] for e in (True, False)}
    assert rows[True].bytes == 4 * 2**20
    assert rows[True].time_s - rows[False].time_s == pytest.approx(eager.copy_s, rel=1e-9)


@pytest.mark.parametrize("ranks,nbytes,measured_us", [
    # vLLM PR #24532 (H100, 4 ranks, ca_1stage) and PR #24111 (H100, 6 ranks, ca_1stage): used
    # in no fit; the model has no parameter of its own.
    # bf16 tensors of 32..256 tokens x hidden 8192: 0.5..4 MiB
    (4, 2**19, 10), (4, 2**20, 14), (4, 2**21, 23), (4, 2**22, 38),
    (6, 2**19, 13), (6, 2**20, 21), (6, 2**21, 38), (6, 2**22, 70)])
def test_custom_all_reduce_one_shot_against_vllm_measurements(ranks, nbytes, measured_us):
    t = sum(custom_kernel_time("one-shot", nbytes, ranks, H100.levels[0], H100.device))
    assert t * 1e6 == pytest.approx(measured_us, rel=0.25)


@pytest.mark.parametrize("nbytes,measured_us", [(2**19, 17), (2**20, 18), (2**21, 26), (2**22, 42)])
def test_custom_all_reduce_two_shot_against_the_runs_it_was_not_fitted_on(nbytes, measured_us):
    """vLLM PR #24532 (H100, 4 ranks, ca_2stage): the two-shot terms were fitted on PR #24111's
    6-rank runs only (bench/infer_peers.py --fit-custom)."""
    t = sum(custom_kernel_time("two-shot", nbytes, 4, H100.levels[0], H100.device))
    assert t * 1e6 == pytest.approx(measured_us, rel=0.2)


# --------------------------------------------------------------------------- graph and memory

def test_decode_attention_bytes_are_the_attention_core_bytes():
    """With one dtype the decode kernel's bytes are ops.Attention's with seq_q = 1:
    b (2 q + 2 L kv) bpe; llama2-70b TP8, b=4, L=1000: 4 (2 1024 + 2000 128) 2 = 2,064,384."""
    d = infer_dims(layer_dims(L70, 8, 4, 1, "bf16"), "bf16", "bf16", 1000)
    assert decode_attention_bytes(d) == decode_attention_core(d).bytes == 2_064_384
    fp8 = infer_dims(layer_dims(L70, 8, 4, 1, "fp8"), "bf16", "fp8", 1000)
    assert decode_attention_bytes(fp8) == 4 * (2 * 1024 * 2 + 2 * 1000 * 128 * 1)


def test_serving_layer_is_the_training_forward_plus_the_cache_write():
    """Op for op, the serving layer runs training's forward (same names, same order) and writes
    the new keys and values into the cache."""
    train = layer_template(True, dropout=False, swiglu=True)
    forward = [train.names[i] for i in train.forward]
    for phase in ("prefill", "decode"):
        names = list(serving_layer_template(phase, True, True).names)
        names.remove("fwd.kv_cache_write")
        assert names == forward


def test_decode_collectives_are_two_small_all_reduces_per_layer():
    p = infer("llama2-70b", "dgx-h100", tp=8, batch=4, prompt=128, gen=8)
    (row,) = p.decode_collectives
    assert (row.op, row.count, row.bytes) == ("all-reduce", 2, 4 * 8192 * 2)
    one = infer("llama2-70b", "dgx-h200", tp=1, batch=4, prompt=128, gen=8)
    assert not one.decode_collectives and all(o.kind != "collective" for o in one.decode_ops)


def test_kv_cache_closed_form():
    """2 layers kv_heads/tp head_dim bpe per token: llama2-70b (80 layers, 8 kv heads, d 128)
    bf16 at TP8: 2 80 1 128 2 = 40,960 B; at TP2: 163,840 B. Cache = batch (prompt + gen - 1)
    x that: batch 16, 2048 + 256 - 1 tokens at TP8 = 1,509,294,080 B."""
    assert kv_bytes_per_token(L70, 8, 1, "bf16") == 40_960
    assert kv_bytes_per_token(L70, 2, 1, "bf16") == 163_840
    assert kv_bytes_per_token(L70, 8, 2, "fp8") == 2 * 40 * 1 * 128 * 1
    p = infer(L70, H100, tp=8, batch=16, prompt=2048, gen=256)
    assert p.memory.kv_cache_bytes == 16 * 2303 * 40_960 == 1_509_294_080


def test_kv_heads_replicate_when_tp_exceeds_them():
    """2 kv heads at TP8: each rank keeps one head's cache (replicated 4 times)."""
    m = with_overrides(L70, kv_heads=2)
    assert kv_bytes_per_token(m, 8, 1, "bf16") == 2 * 80 * 1 * 128 * 2


def test_weights_closed_form():
    """bf16: every parameter of one rank in 2 bytes (ModelConfig.params_per_rank); fp8 takes
    one byte off each linear weight."""
    assert weights_per_gpu(L70, 8, 1, "bf16", "bf16") == 2 * L70.params_per_rank(8)
    linear = L70.layers * (L70.layer_params(8) - 2 * L70.norm_params)
    assert weights_per_gpu(L70, 8, 1, "fp8", "bf16") == 2 * L70.params_per_rank(8) - linear


def test_largest_batch_that_fits():
    p = infer(L70, H100, tp=2, batch=1, prompt=2048, gen=256)
    most = p.memory.max_batch
    assert most >= 1
    assert infer(L70, H100, tp=2, batch=most, prompt=2048, gen=256).memory.fits
    assert not infer(L70, H100, tp=2, batch=most + 1, prompt=2048, gen=256).memory.fits
    none = infer(L70, load_topology("pcie-l40s"), tp=2, batch=1, prompt=128, gen=2)
    assert none.memory.max_batch == 0 and not none.memory.fits
    assert any(w.code == "serving_memory_does_not_fit" for w in none.warnings)


# --------------------------------------------------------------------------- physical bounds

CASES = [("llama2-70b", "dgx-h100", 8, 1), ("llama2-70b", "dgx-h100", 4, 64),
         ("llama3-70b", "dgx-h200", 2, 16), ("llama3-8b", "dgx-a100", 1, 32),
         ("gpt3-13b", "dgx-a100", 4, 256)]


@pytest.mark.parametrize("model,topo,tp,batch", CASES)
def test_decode_never_beats_reading_weights_and_cache(model, topo, tp, batch):
    """A decode step reads every weight it multiplies by (the layers' linears and the output
    layer) and the whole cache: per token >= those bytes / peak HBM bandwidth."""
    m, t = load_model(model), load_topology(topo)
    p = infer(m, t, tp=tp, batch=batch, prompt=512, gen=64)
    linear = m.layers * (m.layer_params(tp) - 2 * m.norm_params) * 2
    head = m.padded_vocab(tp) // tp * m.hidden * 2
    cache = batch * (512 + 1) * kv_bytes_per_token(m, tp, 1, "bf16")   # the first step's
    floor = (linear + head + cache) / t.device.memory_bandwidth_Bps
    assert p.decode.first_step_s >= floor
    assert p.decode.time_per_token_s >= floor


@pytest.mark.parametrize("model,topo,tp,batch", CASES)
def test_prefill_never_beats_its_flops_at_peak(model, topo, tp, batch):
    """Prefill's FLOPs per GPU (2 params x tokens + attention) over the dtype's peak: a floor."""
    m, t = load_model(model), load_topology(topo)
    p = infer(m, t, tp=tp, batch=batch, prompt=512, gen=2)
    linear = m.layers * (m.layer_params(tp) - 2 * m.norm_params)
    assert p.prefill.cost.flops >= 2 * linear * batch * 512
    assert p.prefill.time_s >= p.prefill.cost.flops / t.device.peak("bf16")


def test_tokens_per_second_grow_with_batch_until_compute_bound():
    """At small batch a step reads the weights whatever the batch (HBM-bound: doubling the
    batch nearly doubles tokens/s); past the roofline's knee the GEMMs are FLOP-bound and
    tokens/s saturates. Never does a larger batch give fewer tokens/s. (The step's all-reduces,
    8-32 MiB at batch 512-2048, run below NVLS's plateau, so the saturation shows at 2048.)"""
    tps, bounds = [], []
    for b in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048):
        p = infer(L70, H100, tp=8, batch=b, prompt=128, gen=16)
        tps.append(p.decode.tokens_per_s)
        bounds.append(p.decode.cost.bound)
    assert all(b >= a for a, b in zip(tps, tps[1:]))
    assert tps[1] / tps[0] > 1.9 and bounds[0] in ("HBM", "kernel launches")
    assert tps[-1] / tps[-2] < 1.25 and bounds[-1] == "FLOPs"


# --------------------------------------------------------------------------- the mean per token

def test_mean_over_lengths_is_exact_on_convex_piecewise_linear():
    """f(L) = max(2L + 1, 5L - 300, 100) has kinks at L = 49.5 and 100.33: the exact mean over
    1..400 (by summing every term) in a few evaluations."""
    f = lambda n: max(2 * n + 1, 5 * n - 300, 100)   # noqa: E731
    exact = sum(f(n) for n in range(1, 401)) / 400
    mean, calls = mean_over_lengths(f, 1, 400)
    assert mean == pytest.approx(exact, rel=1e-12) and calls < 40
    assert mean_over_lengths(lambda n: 3.0 * n, 7, 7) == (21.0, 1)
    assert mean_over_lengths(lambda n: 3.0 * n + 1, 1, 1000)[1] == 3


@pytest.mark.parametrize("eager", [False, True])
def test_decode_mean_equals_simulating_every_step(eager):
    """The mean of the simulated step over every kv_len = prompt+1 .. prompt+gen-1."""
    from tpsim.serving.infer import _Server
    p = infer(L70, H100, tp=4, batch=8, prompt=100, gen=40, eager=eager)
    srv = _Server(L70, H100, 4, 1, "bf16", "bf16", "bf16", "nccl", eager)
    fixed = srv.ends(8, 1).time_s
    steps = [L70.layers * srv.decode_layer(8, n).time_s + fixed for n in range(101, 140)]
    assert p.decode.time_per_token_s == pytest.approx(sum(steps) / len(steps), rel=1e-9)
    assert p.total.time_s == pytest.approx(p.prefill.time_s + sum(steps), rel=1e-9)


def test_eager_pays_host_dispatch_per_op():
    graphs = infer(L70, H100, tp=8, batch=1, prompt=128, gen=8)
    eager = infer(L70, H100, tp=8, batch=1, prompt=128, gen=8, eager=True)
    c = eager.decode.cost
    assert c.time_s >= c.ops * H100.device.host_dispatch_s * (1 - 1e-12)
    assert eager.decode.time_per_token_s > graphs.decode.time_per_token_s
    assert graphs.decode.cost.host_s == 0 and eager.decode.cost.bound == "host dispatch"


def test_breakdown_adds_up():
    for p in (infer(L70, H100, tp=8, batch=32, prompt=1024, gen=16),
              infer(L70, H100, tp=4, batch=2, prompt=64, gen=16, eager=True, allreduce="custom")):
        for c in (p.prefill.cost, p.decode.cost):
            parts = c.hbm_s + c.flops_s + c.launch_s + c.comm_s + c.host_s
            assert parts == pytest.approx(c.time_s, rel=1e-9)


def test_custom_all_reduce_in_decode_and_nccl_for_large_prefill():
    p = infer(L70, H100, tp=8, batch=8, prompt=2048, gen=8, allreduce="custom")
    assert p.decode_collectives[0].formula.endswith("custom_all_reduce_time")
    assert p.prefill_collectives[0].algorithm.startswith("nvls")
    (w,) = [w for w in p.warnings if w.code == "custom_all_reduce_fallback"]
    assert w.values["phase"] == "prefill"


def test_pipeline_halves_the_weights_and_pays_the_stage_transfer():
    cluster = load_topology("dgx-h100-ndr-cluster")
    one = infer(L70, cluster, tp=8, pp=1, batch=8, prompt=256, gen=8)
    two = infer(L70, cluster, tp=8, pp=2, batch=8, prompt=256, gen=8)
    assert two.memory.weights_bytes < 0.55 * one.memory.weights_bytes
    assert two.memory.kv_bytes_per_token == one.memory.kv_bytes_per_token / 2
    assert two.decode.cost.comm_bytes > one.decode.cost.comm_bytes / 2


# --------------------------------------------------------------------------- input and output

@pytest.mark.parametrize("kwargs,flag", [
    ({"tp": 3}, "--tp"), ({"gen": 1}, "--gen"), ({"batch": 0}, "--batch"),
    ({"allreduce": "mpi"}, "--allreduce"), ({"dtype": "fp32"}, "--dtype"),
    ({"kv_dtype": "int4"}, "--kv-dtype"), ({"tp": 4, "pp": 2, "batch": 3}, "--batch"),
    ({"tp": 8, "pp": 2}, "--tp"), ({"eager": "yes"}, "--eager")])
def test_bad_settings_name_their_flag(kwargs, flag):
    with pytest.raises(TpsimError, match=flag):
        infer(L70, H100, **{"batch": 1, "prompt": 16, "gen": 4, **kwargs})


def test_fp8_needs_a_device_that_lists_it():
    with pytest.raises(ConfigError, match="--dtype"):
        infer(L70, "dgx-a100", tp=8, dtype="fp8")


def test_cli_text_json_and_errors(capsys):
    from tpsim.cli import main
    assert main(["infer", "--tp", "4", "--batch", "2", "--prompt", "64", "--gen", "8",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("time_s", "tokens_per_s", "mfu"):
        assert out["prefill"][key] > 0
    assert out["decode"]["time_per_token_s"] > 0 and out["total"]["time_s"] > 0
    assert out["memory"]["fits"] is True and out["decode"]["cost"]["bound"] in (
        "HBM", "FLOPs", "collectives", "kernel launches", "host dispatch")
    assert math.isclose(out["decode"]["tokens_per_s"], 2 / out["decode"]["time_per_token_s"])
    assert main(["infer", "--tp", "8", "--batch", "1", "--prompt", "64", "--gen", "4"]) == 0
    text = capsys.readouterr().out
    assert "time per output token" in text and "bound by" in text
    assert main(["infer", "--tp", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--tp" in err


def test_plot_infer_table_and_figure(tmp_path):
    """The figure's table is infer()'s numbers; a degree the model cannot split is skipped."""
    from tpsim.figures import plot
    from tpsim.figures.data import infer_sweep
    table = infer_sweep("llama2-70b", [H100], degrees=(3, 4, 8), batches=(1, 8),
                        prompt=256, gen=16)
    skipped, *rows = table.rows
    assert skipped["tp"] == 3 and skipped["status"].startswith("skipped")
    p = infer(L70, H100, tp=4, batch=8, prompt=256, gen=16)
    (row,) = [r for r in rows if (r["tp"], r["batch"]) == (4, 8)]
    assert row["time_per_token_s"] == p.decode.time_per_token_s
    assert row["tokens_per_s_per_gpu"] == p.decode.tokens_per_s / 4
    image, csv = plot.save(plot.infer_figure(table), table, tmp_path / "infer.png")
    assert image.stat().st_size > 10_000 and "time_per_token_s" in csv.read_text()


@pytest.mark.parametrize("argv, expected", [
    (["--batch", "2000"], "--batch: expected at most 328, the largest batch whose KV cache fits"),
    (["--batch", "1", "--prompt", "3000000"], "not even one sequence of --prompt 3000000"),
    # so large a batch that the allocator's waste on its activations exceeds the memory: the
    # weights still fit beside a smaller one, so refused as well, not warned about
    (["--batch", "200000"], "--batch: expected at most 328, the largest batch whose KV cache"),
])
def test_infer_refuses_a_batch_that_cannot_fit(capsys, argv, expected):
    """A batch whose KV cache cannot fit beside weights that do: one line, exit 2, naming the
    largest batch that fits; that batch itself runs and fits."""
    from tpsim.cli import main
    base = ["infer", "--model", "llama2-70b", "--topology", "dgx-h100", "--tp", "8"]
    assert main(base + argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and expected in err, err
    if "328" in expected:
        assert main(base + ["--batch", "328", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["memory"]["fits"] is True


def test_infer_does_not_fit_warning_on_stderr(capsys):
    """Weights that do not fit (the layout, not the batch): the run is priced, its warning on
    stderr in every format, and in the text report's WARNING line."""
    from tpsim.cli import main
    argv = ["infer", "--model", "llama3-405b", "--topology", "dgx-h100", "--tp", "8"]
    for fmt in ([], ["--json"], ["--csv"]):
        assert main(argv + fmt) == 0
        out, err = capsys.readouterr()
        assert err.startswith("tpsim: warning: does not fit:") and err.count("\n") == 1
        assert ("WARNING: does not fit" in out) == (fmt == [])


@settings(max_examples=25, deadline=None)
@given(prompt=st.integers(1, 3000), more=st.integers(1, 200), tp=st.sampled_from([1, 2]),
       batch=st.sampled_from([1, 3]))
def test_ttft_grows_with_the_prompt_without_an_attention_kernel(prompt, more, tp, batch):
    """pcie-l40s lists no fused attention kernel: its attention is priced as the per-head GEMMs,
    which compute every (query, key) pair; counting only the causal pairs against the whole
    square's efficiency made a 2-token prompt's prefill faster than a 1-token one's."""
    def ttft(p):
        return infer("llama2-7b", "pcie-l40s", tp=tp, batch=batch, prompt=p, gen=2).prefill.time_s
    assert ttft(prompt + more) >= ttft(prompt)
    assert ttft(2) >= ttft(1)


def test_decode_attentions_fixed_time_counts_with_the_launches():
    """The decode attention's fixed part (decode_fixed_us) is neither roofline's: a batch-1
    decode step on H100 stays 0% FLOPs-bound, and its launch term grows by exactly the layers'
    fixed parts over the same step with the fixed part removed."""
    import dataclasses
    topo = load_topology("dgx-h100")
    kernels = dict(topo.device.attention_kernels)
    name = topo.device.attention_kernel
    fixed = kernels[name].decode_fixed_s
    kernels[name] = dataclasses.replace(kernels[name], decode_fixed_s=0.0)
    bare = dataclasses.replace(topo, device=dataclasses.replace(topo.device,
                                                                attention_kernels=kernels))
    run = dict(tp=8, batch=1, prompt=2048, gen=2)
    with_fixed, without = infer("llama2-70b", topo, **run), infer("llama2-70b", bare, **run)
    assert with_fixed.decode.cost.flops_s == 0 == without.decode.cost.flops_s
    layers = load_model("llama2-70b").layers
    assert with_fixed.decode.cost.launch_s - without.decode.cost.launch_s == pytest.approx(
        layers * fixed, rel=1e-9)


def test_flashinfer_01_decodes_on_cuda_cores_where_it_compiled_the_group():
    """--decode-attention flashinfer-0.1: Llama 3 70B (8 query heads per KV head at any TP)
    decodes on FlashInfer's CUDA-core kernel, each layer's attention slower by exactly
    decode_attention_time's cores term over its memory term, the prefill untouched; Llama 3.1
    405B at TP 8 (16 query heads on its one KV head) runs the tensor-core kernel: no change."""
    from tpsim.cost.compute import decode_attention_time
    from tpsim.layer.infer_graph import serving_dims
    h200 = load_topology("dgx-h200")
    run = dict(tp=4, batch=64, prompt=4095, gen=2, allreduce="custom")
    tc, cc = (infer("llama3-70b", h200, decode_attention=k, **run)
              for k in ("tensor-cores", "flashinfer-0.1"))
    m = load_model("llama3-70b")
    nbytes = decode_attention_bytes(serving_dims(m, 4, 1, 64, 1, "bf16", "bf16", "bf16", 4096))
    per_layer = (decode_attention_time(nbytes, h200.device, 8)
                 - decode_attention_time(nbytes, h200.device))
    assert per_layer > 0
    assert cc.decode.time_per_token_s - tc.decode.time_per_token_s == pytest.approx(
        m.layers * per_layer, rel=1e-6)
    assert cc.prefill.time_s == tc.prefill.time_s
    big = dict(tp=8, batch=16, prompt=1024, gen=2)
    assert infer("llama3-405b", h200, decode_attention="flashinfer-0.1", **big).decode \
        .time_per_token_s == infer("llama3-405b", h200, **big).decode.time_per_token_s
