"""The chunked pipeline of NCCL's NVLS (NVLink SHARP) all-reduce: why its bus bandwidth climbs
with message size.

NVLS splits the buffer over ``ops = channels x heads`` concurrent pipelines (``nvls_channels``
CTAs, one head per GPU of the node) and moves each in chunks of ``c`` bytes. A chunk goes
through ``STAGES = 2`` stages: the switch reduces it (``multimem.ld_reduce``) and multicasts
the result (``multimem.st``). Every pipeline step costs a fixed ``step`` (flag wait and switch
round trip, ``nvls_step_us``) plus the step's bytes at the link rate, and the pipeline takes
``m + STAGES - 1`` steps for ``m = S / (ops c)`` chunks per pipeline::

    transfer + pipeline = (m + 1) * (step + w c ops / B)
                        = w S / B  +  m step  +  (step + w c ops / B)

with ``w = 1 + 1/n`` the bytes per direction per byte of ``S`` (:func:`nvls_wire_factor`) and
``B`` the link bandwidth times ``efficiency.nvls``. The per-step cost ``m step`` is what keeps
small and mid-size NVLS below its plateau: it shrinks relative to ``w S / B`` only as the chunk
grows, and NCCL grows the chunk with the message (:func:`nvls_chunk_bytes`, enqueue.cc
``calcCollChunking``): 16 KiB below 8 MiB, 32 KiB to 64 MiB, 64 KiB to 1 GiB, then
``nvls_chunk_bytes`` (128 KiB) on 8 GPUs. Below ``ops x 16 KiB`` a pipeline carries one chunk of
``S / ops`` bytes: the time is then ``2 (step + w S / B)``.
"""
from __future__ import annotations

STAGES = 2                                   # multimem.ld_reduce, then multimem.st
_STEPS_DOWN = ((64, 65536), (8, 32768), (2, 16384))   # (chunks per op, chunk) in NCCL's rule


def nvls_wire_factor(ranks: int) -> float:
    """Bytes per direction through one GPU's links per byte of the all-reduce buffer.

    Each GPU sends its whole buffer to the switch for reduction and receives its 1/n share of
    the reduced result, then sends that share back and receives the whole multicast result:
    ``S + S/n`` each way.
    """
    return 1 + 1 / ranks


def nvls_chunk_bytes(nbytes: float, ops: int, max_chunk: int) -> int:
    """NCCL's NVLS chunk size (enqueue.cc calcCollChunking, NCCL 2.21-2.30; computeColl in 2.18,
    computeCollChunkInfo in 2.20, the same rule on NCCL_NVLS_NCHANNELS channels).

    Start from ``max_chunk`` (NCCL_NVLS_CHUNKSIZE); halve to 64 KiB if S < 64 ops chunk, to
    32 KiB if S < 8 ops chunk, to 16 KiB if S < 2 ops chunk.
    """
    chunk = max_chunk
    for per_op, smaller in _STEPS_DOWN:
        if nbytes < per_op * ops * chunk and chunk > smaller:
            chunk = smaller
    return chunk


def _pipeline(nbytes: float, chunk: int, ops: int, wire: float, step_s: float,
              bandwidth_Bps: float, heads: int = 0) -> float:
    """(m + STAGES - 1)(step + w c ops / B) with c = min(chunk, S/ops), m = S / (ops c); on
    the fixed grid (``heads`` > 0, :func:`nvls_terms`) c = min(chunk, S/heads) and
    m = max(1, S / (ops c)): the busiest channel's loops."""
    c = min(chunk, nbytes / (heads or ops))
    m = max(1.0, nbytes / (ops * c)) if heads else nbytes / (ops * c)
    return (m + STAGES - 1) * (step_s + wire * c * ops / bandwidth_Bps)


def nvls_terms(nbytes: float, ranks: int, bandwidth_Bps: float, step_s: float, channels: int,
               max_chunk: int, fixed_grid: bool = False) -> tuple[float, float]:
    """(transfer, pipeline) seconds of an NVLS all-reduce of ``nbytes`` on ``ranks`` GPUs.

    transfer = w S / B; pipeline = the rest of ``(m + 1)(step + w c ops / B)``. Where NCCL's
    rule switches to a larger chunk, a message just above the switch would cost less than one
    just below it; the time taken is the monotone envelope (never less than the time at the
    switch with the smaller chunk), so a larger message never finishes sooner.

    How a message smaller than one loop (``ops`` chunks) is laid out depends on the NCCL:

    * 2.20 and later (``fixed_grid`` false) split it evenly over the channels (enqueue.cc's
      per-channel ``workCount``, the kernel's ``oneNode`` path in device/all_reduce.h, v2.20.5-1)
      and over the heads (``lastChunkCount``): each of the ``ops`` pipelines carries S / ops,
      c = S / ops, one step of ``step + w S / B`` each way.
    * 2.18 and 2.19 (``fixed_grid``) walk a fixed grid (collectives/device/all_reduce.h,
      v2.18.5-1: channel ``bid`` takes the ``nHeads`` chunks at ``bid nHeads chunkSize``, every
      chunk ``chunkSize`` long): a message fills channel 0's heads before channel 1's, so below
      ``heads x chunk`` one channel carries all of it. A channel (one CTA) moves ``1/channels``
      of the GPU's NVLS bandwidth (the plateau is reached with all ``channels`` CTAs busy:
      enqueue.cc's "NVLS should not need more than 16 channels to get peak BW"), so the
      busiest channel's step costs ``step + w c heads / (B / channels) = step + w c ops / B``
      with c = min(chunk, S / heads), for max(1, S / (ops c)) loops.
    """
    ops = channels * ranks
    wire = nvls_wire_factor(ranks)
    heads = ranks if fixed_grid else 0
    total = _pipeline(nbytes, nvls_chunk_bytes(nbytes, ops, max_chunk), ops, wire, step_s,
                      bandwidth_Bps, heads)
    larger = max_chunk
    for per_op, smaller in _STEPS_DOWN:
        switch = per_op * ops * larger               # the chunk is `smaller` just below here
        if larger > smaller and switch <= nbytes:
            total = max(total, _pipeline(switch, smaller, ops, wire, step_s, bandwidth_Bps,
                                         heads))
        larger = min(larger, smaller)
    transfer = wire * nbytes / bandwidth_Bps
    return transfer, total - transfer


# --------------------------------------------------------------------------- NVLS tree
_TREE_STEPS_DOWN = ((32, 262144), (16, 131072), (4, 65536), (1, 32768))   # enqueue.cc NVLS_TREE


def nvls_tree_chunk_bytes(nbytes: float, ops: int, max_chunk: int, nodes: int) -> int:
    """NCCL's NVLS-tree chunk (enqueue.cc calcCollChunking, NCCL 2.19-2.30): ``max_chunk``
    (NCCL_NVLS_CHUNKSIZE), at most 64 KiB from 4 nodes (NCCL_NVLSTREE_MAX_CHUNKSIZE's default);
    then 256 KiB if S < 32 ops chunk, 128 KiB if S < 16 ops chunk, 64 KiB if S < 4 ops chunk,
    32 KiB if S < ops chunk."""
    chunk = min(max_chunk, 65536) if nodes >= 4 else max_chunk
    for per_op, smaller in _TREE_STEPS_DOWN:
        if nbytes < per_op * ops * chunk and chunk > smaller:
            chunk = smaller
    return chunk


def nvls_tree_terms(nbytes: float, ranks: int, bandwidth_Bps: float, step_s: float,
                    channels: int, max_chunk: int, nodes: int, net_Bps: float,
                    net_stages: int) -> tuple[float, float]:
    """(transfer, pipeline) seconds of NCCL's NVLS-tree all-reduce on ``nodes`` nodes of
    ``ranks`` GPUs: the NVLS pipeline above with the network inside it.

    A chunk goes through the switch's reduction, ``net_stages`` network hops (up the tree of
    nodes and down again: 2 ceil(log2 nodes)), then the switch's multicast. Each step moves
    ``ops c`` bytes of the node (ops = channels x ranks): a switch stage takes
    ``a = step + w c ops / B``, a network stage ``b = c ops / net_Bps`` (``net_Bps``: the node's
    NICs, already divided by the bytes an inner node forwards per byte). The slowest stage paces
    the m chunks; the first chunk also crosses every other stage:

        transfer + pipeline = (m - 1) max(a, b) + STAGES a + net_stages b
        transfer = max(w S / B, S / net_Bps)

    with c :func:`nvls_tree_chunk_bytes` (at most S / ops) and m = S / (ops c). On one node
    (net_stages 0, a >= b) this is the NVLS pipeline's (m + 1) a."""
    ops = channels * ranks
    wire = nvls_wire_factor(ranks)
    c = min(nvls_tree_chunk_bytes(nbytes, ops, max_chunk, nodes), nbytes / ops)
    a, b = step_s + wire * c * ops / bandwidth_Bps, c * ops / net_Bps
    total = (nbytes / (ops * c) - 1) * max(a, b) + STAGES * a + net_stages * b
    transfer = max(wire * nbytes / bandwidth_Bps, nbytes / net_Bps)
    return transfer, total - transfer
