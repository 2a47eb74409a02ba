"""The caching allocator's waste in published Megatron memory reports against tpsim's.

Megatron prints, once per run (``report_memory`` in megatron/training/utils.py), torch.cuda's
``memory_allocated``, ``max_memory_allocated``, ``memory_reserved`` and ``max_memory_reserved``
after a step, MiB. After the step nothing but the long-lived tensors is allocated (weights,
gradient buffers, optimizer state), so

    churned  = max allocated - allocated        (the step's activations and temporaries)
    waste    = max reserved  - max allocated    (held by the allocator, handed to no tensor)

and tpsim holds back ``memory_fragmentation`` x churned (:meth:`tpsim.cluster.topology.Device.
usable_bytes`; 0.047, the first report's). Each row prints the measured share and the waste
tpsim's share puts on the same churned bytes. The first row is the default's source; the
others are used in no fit.

    python bench/allocator_waste_published.py
"""
from __future__ import annotations

from tpsim.cluster.topology import load_topology

# (source, run, allocated, max allocated, max reserved), MiB
REPORTS = [
    ("liguodongiot/llm-action llm-train/megatron/gpt2/README.md (the default's source)",
     "Megatron-LM GPT 345M, fp16, DP 4, micro-batch 1, seq 1024, rank 0",
     6816.88818359375, 8696.8515625, 8786.0),
    *[("NVIDIA/Megatron-LM megatron/core/transformer/README.md @7d867ab, no offloading",
       f"DeepSeek-V3 proxy (14 layers), H100, TP1 PP4 EP16, bf16, DeepEP, rank {rank}",
       alloc, peak, reserved)
      for rank, alloc, peak, reserved in ((0, 24761.02978515625, 65203.93359375, 74306.0),
                                          (16, 18907.728515625, 52228.1533203125, 58770.0),
                                          (32, 18907.7529296875, 45200.8349609375, 51772.0),
                                          (48, 29006.82275390625, 48166.263671875, 56328.0))],
]


def rows():
    """(run, churned MiB, measured waste MiB, measured share, tpsim's waste MiB) per report."""
    share = load_topology("dgx-h100").device.memory_fragmentation
    out = []
    for _, run, alloc, peak, reserved in REPORTS:
        churned, waste = peak - alloc, reserved - peak
        out.append((run, churned, waste, waste / churned, share * churned))
    return out


def main() -> None:
    print(f"{'run':72s} {'churned':>9s} {'waste':>8s} {'share':>6s} {'tpsim':>8s}  (MiB)")
    for run, churned, waste, share, predicted in rows():
        print(f"{run:72s} {churned:9,.0f} {waste:8,.0f} {share:6.3f} {predicted:8,.0f}")


if __name__ == "__main__":
    main()
