"""Derive ``engine_dispatch_us``, a serving engine's host time per op of its eager forward,
from SGLang's published decode latency with and without CUDA graphs.

Source: sgl-project/sglang PR #1401 (September 2024, the SGLang v0.3 series), its description:
``python3 -m sglang.bench_latency --model meta-llama/Meta-Llama-3-8B --batch-size 1 --input 128
--output 8`` median decode step, FlashInfer attention (SGLang's default backend): 7.35 ms with
CUDA graphs, 8.23 ms with ``--disable-cuda-graph``; Triton attention: 7.06 and 9.28 ms. The GPU is
not named; the graph step reads the 16.06 GB of bf16 weights at 2.2 TB/s, more than an A100's
2.04 TB/s peak, and matches tpsim's H100 decode step (printed below), so: an H100.

The model (:func:`tpsim.sim.schedule.issue_bound`): a step lasts its fixed work f (the sampling
and the step's bookkeeping, the same with or without graphs) plus the forward, which with graphs
is its GPU time g and without them max(g, N c), the host issuing its N ops at c each. So

    f = t_graph - g,    c = (t_eager - f) / N

with g tpsim's own decode step (Llama 3 8B, dgx-h100, batch 1, cache 132 tokens, the steps' mean)
and N the host ops of tpsim's serving templates for that forward (32 layers of 11, the embedding's
1, the output's 3): the count the model multiplies c by, so the product reproduces the measured
host time. The engine's own code issues one op fewer a layer (vllm/model_executor/models/llama.py,
which SGLang's llama.py copies: the residual adds fused into the RMSNorms, the rotary embedding
an op of its own). The bounds use only the measurements: f >= 0 gives c <= t_eager / N, g >=
weights / peak bandwidth gives the lower one. The Triton pair (its attention launched from
Python, more host work per layer) is printed beside it. Used in no fit of the serving rows.

    python bench/engine_dispatch.py
"""
from __future__ import annotations

from tpsim.cluster.topology import load_topology
from tpsim.layer.infer_graph import embedding_template, output_template
from tpsim.serving.infer import _Server
from tpsim.serving.memory import weights_per_gpu
from tpsim.spec.model import load_model

PAIRS = {"flashinfer": (7.35e-3, 8.23e-3), "triton": (7.06e-3, 9.28e-3)}   # (graph, eager), s
KV = 132                   # --input 128, --output 8: the decode steps' mean cache length


def main() -> None:
    m, topo = load_model("llama3-8b"), load_topology("dgx-h100")
    srv = _Server(m, topo, 1, 1, "bf16", "bf16", "bf16", "nccl", False)
    gpu = m.layers * srv.decode_layer(1, KV).time_s + srv.ends(1, 1).time_s
    ops = (m.layers * srv.decode_tpl.host_ops[0] + embedding_template(False).host_ops[0]
           + output_template(False).host_ops[0])
    floor = weights_per_gpu(m, 1, 1, "bf16", "bf16") / topo.device.memory_bandwidth_Bps
    print(f"tpsim's GPU decode step (Llama 3 8B, dgx-h100, batch 1, cache {KV}): "
          f"{gpu * 1e3:.2f} ms; host ops of the forward: {ops}")
    for name, (graph, eager) in PAIRS.items():
        fixed = graph - gpu
        c = (eager - fixed) / ops
        print(f"{name:10s} graph {graph * 1e3:.2f} ms, eager {eager * 1e3:.2f} ms: fixed "
              f"{fixed * 1e3:.2f} ms, host {(eager - fixed) * 1e3:.2f} ms, c = {c * 1e6:.1f} us "
              f"per op (at most {eager / ops * 1e6:.1f}"
              f", at least {(eager - graph + floor) / ops * 1e6:.1f})")


if __name__ == "__main__":
    main()
