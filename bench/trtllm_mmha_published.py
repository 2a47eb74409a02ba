"""TensorRT-LLM v0.5.0's own static-batch tables beside tpsim's two ways of pricing its decode
attention, on the rows that tell a GQA kernel's cost from the rest of the step.

    python bench/trtllm_mmha_published.py

v0.5.0's docs/source/performance.md (release/0.5.0, 2023-10) lists Llama 70B (GQA: 64 query,
8 KV heads) at batch 64, TP 4, on H100 in FP8 (FP8 KV cache) and on A100 in FP16, and Llama 7B
(multi-head: one query head per KV head) on both, every input/output pair of 128 and 2048. v0.5
decodes both with masked multi-head attention (one CTA per query head, no XQA until v0.8), so:

* Llama 7B is the control: ``--decode-attention trtllm-mmha`` reads its cache once, as the
  default does; an error here is not the GQA kernel's.
* Llama 70B is the test: the default reads the cache once, ``trtllm-mmha`` once from HBM and
  8 times through the L2, and converts and multiply-adds every element once per query head
  on the CUDA cores, priced per pipe: the slowest of the FMA, FP16, ALU, conversion and
  load/store pipes and the issue slots (``tpsim.cost.compute.decode_attention_time``,
  ``tpsim.cost.mmha``; the presets' ``cuda_core_pipes``). The
  bound where no repeat hits the L2 (every query head's read from HBM) is printed beside it,
  as a bracket; ``binds``: which of the kernel's three terms (HBM, L2, cores) sets its time
  at the mean KV length of the decode (prompt + gen / 2), with the three in ms a step.

The last block prints, for the 70B rows, a KV element's counted thread instructions, the
FP32-lane slots the per-pipe cores term gives them (H100: the issue slots bind, 128 a clock an
SM, its FP32 rate, so the two agree; A100: the issue slots too, twice its 64 FP32 lanes, so
half), and the slots that would close the row's step-time gap.

Used in no fit. The H100 70B rows are bench/infer_peers.py's ``trt-tput-*`` cases.
"""
from __future__ import annotations

import dataclasses
import statistics

from tpsim.cluster.topology import load_topology
from tpsim.cost.compute import elementwise_time
from tpsim.cost.mmha import cuda_core_s, mmha_instructions, token_instructions
from tpsim.layer.infer_graph import decode_attention_bytes, mmha_l2_bytes, serving_dims
from tpsim.serving.infer import infer
from tpsim.spec.model import load_model

# (model, topology, tp, batch, prompt, gen, dtype, measured output tokens/s)
ROWS = [
    ("llama2-70b", "dgx-h100", 4, 64, 128, 128, "fp8", 3317),
    ("llama2-70b", "dgx-h100", 4, 64, 128, 2048, "fp8", 2616),
    ("llama2-70b", "dgx-h100", 4, 64, 2048, 128, "fp8", 843),
    ("llama2-70b", "dgx-h100", 4, 64, 2048, 2048, "fp8", 1583),
    ("llama2-70b", "dgx-a100", 4, 64, 128, 128, "fp16", 1237),
    ("llama2-70b", "dgx-a100", 4, 64, 128, 2048, "fp16", 1181),
    ("llama2-70b", "dgx-a100", 4, 64, 2048, 128, "fp16", 272),
    ("llama2-70b", "dgx-a100", 4, 64, 2048, 2048, "fp16", 738),
    ("llama2-7b", "dgx-h100", 1, 64, 128, 128, "fp8", 9193),
    ("llama2-7b", "dgx-h100", 1, 64, 128, 2048, "fp8", 5367),
    ("llama2-7b", "dgx-h100", 1, 64, 2048, 128, "fp8", 2058),
    ("llama2-7b", "dgx-h100", 1, 32, 2048, 2048, "fp8", 2230),
    ("llama2-7b", "dgx-a100", 1, 64, 128, 128, "fp16", 3486),
    ("llama2-7b", "dgx-a100", 1, 32, 128, 2048, "fp16", 1459),
    ("llama2-7b", "dgx-a100", 1, 32, 2048, 128, "fp16", 529),
    ("llama2-7b", "dgx-a100", 1, 16, 2048, 2048, "fp16", 592),
]


def no_l2_reuse(topology):
    """The topology with its L2 serving at the HBM's rate: every query head's read from HBM."""
    dev = topology.device
    return dataclasses.replace(topology, device=dataclasses.replace(
        dev, l2_bandwidth_Bps=dev.memory_bandwidth_Bps * dev.memory_efficiency))


def mmha_terms(model, topology, tp, batch, kv_len, dtype) -> dict[str, float]:
    """MMHA's three terms for one decode step (all layers), s: HBM (the cache once, at the
    elementwise rate), L2 (once per query head, at l2_bandwidth_GBps), cores (the counted
    instructions by pipe, tpsim.cost.mmha.cuda_core_s)."""
    m, dev = load_model(model), topology.device
    act = "fp16" if dtype == "fp16" else "bf16"
    d = serving_dims(m, tp, 1, batch, 1, dtype, act, dtype, kv_len)
    l2 = mmha_l2_bytes(d) if d.heads > d.kv_heads else 0.0
    return {k: m.layers * v for k, v in (
        ("HBM", elementwise_time(decode_attention_bytes(d), dev) - dev.kernel_launch_s),
        ("L2", l2 / dev.l2_bandwidth_Bps),
        ("cores", cuda_core_s(mmha_instructions(batch, d.heads, kv_len, d.d, d.kv_bpe), dev)))}


def implied_per_element(model, topo, tp, batch, prompt, gen, dtype, measured) -> tuple:
    """(counted, priced, implied), FP32-lane slots a KV element: the thread instructions the
    count gives (tpsim.cost.mmha.token_instructions / 2 Dh), the slots the per-pipe cores term
    takes (the count x t_cores with the device's cuda_core_pipes / t_cores at one FP32 lane
    an instruction), and the slots at which the cores term would bind and take the whole
    step-time gap to the measured throughput (the decode's mean KV length)."""
    p = infer(model, topo, tp=tp, batch=batch, prompt=prompt, gen=gen, dtype=dtype,
              kv_dtype=dtype, decode_attention="trtllm-mmha", memory_headroom=0.0)
    need = (batch * gen / measured - p.prefill.time_s) / (gen - 1)
    terms = mmha_terms(model, topo, tp, batch, prompt + gen // 2, dtype)
    cores, binding = terms["cores"], max(terms.values())
    lanes = dataclasses.replace(topo, device=dataclasses.replace(topo.device, cuda_core_pipes=None))
    one_lane = mmha_terms(model, lanes, tp, batch, prompt + gen // 2, dtype)["cores"]
    d = serving_dims(load_model(model), tp, 1, batch, 1, dtype, "bf16", dtype)
    counted = token_instructions(d.d, d.kv_bpe) / (2 * d.d)
    return counted, counted * cores / one_lane, counted * (binding + need - p.decode.time_per_token_s) / one_lane


def throughput(model, topology, tp, batch, prompt, gen, dtype, kernel) -> float:
    p = infer(model, topology, tp=tp, batch=batch, prompt=prompt, gen=gen, dtype=dtype,
              kv_dtype=dtype, decode_attention=kernel, memory_headroom=0.0)
    return batch * gen / (p.prefill.time_s + (gen - 1) * p.decode.time_per_token_s)


def main() -> None:
    print(f"{'model':11s} {'GPU':5s} {'in/out':>9s} {'measured':>9s} {'tensor-cores':>13s} "
          f"{'trtllm-mmha':>12s} {'no L2 reuse':>12s}  binds (HBM / L2 / cores, ms a step)")
    errors = {}
    for model, topo_name, tp, batch, prompt, gen, dtype, measured in ROWS:
        topo = load_topology(topo_name)
        cells = []
        for key, t, kernel in (("tensor-cores", topo, "tensor-cores"),
                               ("trtllm-mmha", topo, "trtllm-mmha"),
                               ("no L2 reuse", no_l2_reuse(topo), "trtllm-mmha")):
            err = throughput(model, t, tp, batch, prompt, gen, dtype, kernel) / measured - 1
            errors.setdefault((model, topo_name, key), []).append(abs(err))
            cells.append(f"{100 * err:+12.1f}%")
        terms = mmha_terms(model, topo, tp, batch, prompt + gen // 2, dtype)
        print(f"{model:11s} {topo_name[4:]:5s} {f'{prompt}/{gen}':>9s} {measured:9,d} "
              + " ".join(cells) + f"  {max(terms, key=terms.get):5s} ("
              + " / ".join(f"{1e3 * t:.1f}" for t in terms.values()) + ")")
    print("\nmedian |error| by model and GPU:")
    for model, topo_name in dict.fromkeys((r[0], r[1]) for r in ROWS):
        print(f"  {model:11s} {topo_name[4:]:5s} " + "  ".join(
            f"{k} {100 * statistics.median(errors[(model, topo_name, k)]):5.1f}%"
            for k in ("tensor-cores", "trtllm-mmha", "no L2 reuse")))
    print("\nLlama 70B: a KV element's thread instructions counted, and its FP32-lane slots priced "
          "(per pipe) / implied by the measured step time:")
    for row in ROWS[:8]:
        counted, priced, implied = implied_per_element(row[0], load_topology(row[1]), *row[2:])
        print(f"  {row[1][4:]:5s} {row[4]:>5d}/{row[5]:<5d} {counted:.2f}  {priced:.2f} / {implied:5.1f}")


if __name__ == "__main__":
    main()
