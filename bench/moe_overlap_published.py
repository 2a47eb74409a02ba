"""What Megatron-core's EP overlap across micro-batches (``--overlap-moe-comm``,
:mod:`tpsim.training.moe_overlap`) saves, tpsim against published runs timed with and without
it on one layout: each pair's step seconds, and the seconds the overlap saves beside its
relative speed-up. The HybridEP pair's profile is the fit of the H100's ``ep_comm_slowdown``
(its communication kernels 8.25 s a step without the overlap, 10.83 s with it: ``--fit``
finds the k at which tpsim's dispatches and combines of that pair grow as much), so that pair
is no check; the other two are used in no fit.

Megatron-Bridge's skill ``skills/nemo-mbridge-perf-expert-parallel-overlap/SKILL.md``
(NVIDIA-NeMo/Megatron-Bridge, 2026-05/07), Qwen3-30B-A3B on 16 H100 (2 nodes), BF16, sequence
4096, TP 1 PP 1 EP 16, micro-batch 1, global batch 1024, each overlap alone
(``overlap_moe_expert_parallel_comm``, ``delay_wgrad_compute`` off, the shared-expert overlap
off):

* "Correctness-First alltoall Benchmark": the all-to-all dispatcher, CUDA graphs off,
  ``moe_permute_fusion`` off, iterations 3-8: 41.25 s without, 31.31 s with (1.317x; with
  ``delay_wgrad_compute`` too, 31.20 s);
* "HybridEP Production-Shape Benchmark" (2026-07-25): the flex dispatcher with HybridEP, the
  router force-balanced, Transformer Engine's CUDA graphs of ``moe_router`` and
  ``moe_preprocess``: 24.71 s without (iterations 5-20), 20.99 s with (iterations 41-50;
  21.07 s in its search run). Its Nsight comparison (rank 0, the same 463,348 kernels):
  3,959 ms of communication ran beside a GEMM or the attention with the overlap, 36.55% of
  it, and 9.079 ms (0.11%) without: the communication kernels ran 10.83 s and 8.25 s a step,
  and the GPU was busy 21.22 s and 22.82 s (so about 14.4-14.6 s of other kernels either way).
  tpsim's MoE layers put 6.70 s a step on the communication stream (the distributed
  optimizer's exchange of the ~1.5 billion dense parameters adds ~0.1-0.2 s), 8.79 s with the
  overlap, its dispatches and combines slowed beside the compute (``ep_comm_slowdown``, fitted
  here), 8.54 s of it beside the compute, every merged slot's exchange beside the other
  micro-batch's compute (:func:`profile_rows`). The kernels run at HybridEP's
  measured H100 rates (``bench/hybridep_published.py``: 0.51-0.54 ms each here, NVLink-bound; 5.04 s
  a step at NCCL's ring efficiencies before): the overlap now hides more than the profile's
  3.96 s, whose communication kernels themselves ran 2.6 s longer with the overlap (8.25 to
  10.83 s; :mod:`tpsim.training.moe_overlap` prices that slowdown in the merged pair). The
  rest is time
  inside the kernels no transfer
  accounts for: each HybridEP call is five kernels (``csrc/hybrid_ep/backend/
  hybrid_ep_backend.cuh``: a flag update, a barrier of the node's ranks before and after the
  transfer kernel, an RDMA barrier of the nodes), and at each barrier a rank waits for the
  slowest. Megatron-core's ``HybridEPDispatch`` calls HybridEP's ``dispatch_with_permute``
  (its permutation unfused by default): if the profile counts those permutation kernels as
  communication, 1.27 s a step of tpsim's compute (its sort and unsort) moves across.

NVIDIA's Megatron-MoE-ModelZoo (``best_practice/qwen3/readme.md``, H100 table, Megatron-LM
moe_dev f3e6c5): Qwen3-235B-A22B on 256 H100, BF16, DeepEP across 4 nodes, TP 2 PP 8 VP 4
EP 32, 19.7 s without and 17.6 s "+1f1b overlap" (the rows of ``bench/moe_published.py``; its
``sbatch_benchmarking.sh`` runs the overlap with ``--delay-wgrad-compute``,
``CUDA_DEVICE_MAX_CONNECTIONS=32`` and Transformer Engine's norms leaving 24 SMs, the run without
it with one connection).

tpsim prices no CUDA graphs; the all-to-all pair's permutation unfused, as it ran
(``--no-moe-permute-fusion``, :mod:`tpsim.layer.moe_permute`), the others' fused, HybridEP's
in a kernel of its own (``moe_permute_fusion_into_hybridep`` off, the recipe's until PR #5123:
``FUSED_HYBRIDEP`` below is the recipe with it on, its saving beside the pair's run).
Where tpsim's step without the overlap is short, the relative speed-up overstates the
overlap: the seconds saved are compared beside it.

    python bench/moe_overlap_published.py
    python bench/moe_overlap_published.py --fit    # the H100's ep_comm_slowdown
"""
from __future__ import annotations

import dataclasses
import sys

from moe_published import BRIDGE_BF16, TOPOLOGY, ZOO_COMMON, ZOO_ROWS
from tpsim.cluster.topology import load_topology
from tpsim.spec.model import load_model
from tpsim.training.moe_overlap import exchange_s, merged_share
from tpsim.training.predict import predict

_, _QWEN30B, _NODES, _BF16_EP16, _ = BRIDGE_BF16
# label, model, nodes, layout, published step seconds without and with the overlap
PAIRS = (
    ("Qwen3-30B-A3B BF16 EP16, all-to-all (Bridge skill)", _QWEN30B, _NODES,
     dict(_BF16_EP16, moe_dispatcher="alltoall"), 41.25, 31.31),
    ("Qwen3-30B-A3B BF16 EP16, HybridEP (Bridge skill)", _QWEN30B, _NODES,
     dict(_BF16_EP16, moe_dispatcher="flex", moe_flex_backend="hybridep",
          moe_permute_fusion=True), 24.71, 20.99),
    ("Qwen3-235B-A22B BF16 EP32, DeepEP (ModelZoo f3e6c5)", "qwen3-235b-a22b", 32,
     {**ZOO_COMMON, **ZOO_ROWS[0][1]}, ZOO_ROWS[0][2], ZOO_ROWS[1][2]),
)


def pair_rows():
    """(label, tpsim's step without and with the overlap, the published pair), seconds."""
    out = []
    for label, model, nodes, layout, off, on in PAIRS:
        steps = [predict(model, TOPOLOGY, nodes=nodes,
                         **{**layout, "overlap_moe_comm": ov}).step.time_s
                 for ov in (False, True)]
        out.append((label, *steps, off, on))
    return out


def profile_rows(device=None):
    """(overlap, tpsim's communication-stream seconds a step in the MoE layers and the part of
    them beside the compute, the profile's) of the HybridEP pair: the layer's comm busy time
    times its layers and micro-batches, with the overlap the merged share of its dispatches and
    combines slowed beside the compute (:func:`tpsim.training.moe_overlap.exchange_s` on
    ``device``, default the topology's); beside the compute: without the overlap, that less
    the step's exposed EP time; with it, the merged share of the pair's slots' communication
    beside the other micro-batch's compute (the third of ``exchange_s``) and the rest's
    share of the time beside without it."""
    label, model, nodes, layout, _, _ = PAIRS[1]
    published = {False: (8.25, 0.009), True: (10.83, 3.959)}
    out = []
    for ov in (False, True):
        p = predict(model, TOPOLOGY, nodes=nodes, **{**layout, "overlap_moe_comm": ov})
        runs = load_model(model).layers * p.inputs.micro_batches   # PP 1: every layer
        comm = p.layer.comm_s
        if not ov:
            beside_one = comm - p.step.ep_comm_exposed_s / runs
            out.append((ov, comm * runs, beside_one * runs, *published[ov]))
            continue
        a = merged_share(p.inputs.micro_batches, 1, 1)
        alone, slowed, beside = exchange_s(p.run, device or load_topology(TOPOLOGY).device)
        comm += a * (slowed - alone)
        out.append((ov, comm * runs, (a * beside + (1 - a) * beside_one) * runs, *published[ov]))
    return out


# the HybridEP pair's Nsight profile (rank 0, a step): the GPU-active interval union, and the
# steps of the unprofiled runs (the profiled runs' own steps are not given: without the
# overlap the idle time is the unprofiled step less the busy union, a lower bound if profiling
# slowed the run; with it the unprofiled 20.99 s is under the busy 21.22 s, so no idle figure)
PROFILE_BUSY = {False: 22.821, True: 21.221}


def gpu_rows():
    """(overlap, tpsim's and the profile's seconds a step of the HybridEP pair on rank 0: the
    GPU busy, its kernels other than the MoE layers' communication, its idle time) and
    tpsim's HybridEP permutation kernels (sort and unsort) a step. The profile's other
    kernels are its busy union less its communication kernels plus their part beside a GEMM
    or the attention (:func:`profile_rows`): a lower bound where communication also ran
    beside other kernels (norms, permutations: with the overlap); tpsim's busy time is its
    step less the host wait and the pipeline bubble, its other kernels its compute and
    optimizer (None with the overlap: the merged pair's slowed compute is priced inside the
    pair's time, not apart), its idle its host wait."""
    _, model, nodes, layout, _, _ = PAIRS[1]
    out = []
    for (ov, _, _, pub, pub_beside), off_on in zip(profile_rows(), PAIRS[1][4:]):
        p = predict(model, TOPOLOGY, nodes=nodes, **{**layout, "overlap_moe_comm": ov})
        s = p.step
        runs = load_model(model).layers * p.inputs.micro_batches
        permute = runs * sum(o.time_s for o in p.ops
                             if o.name.endswith(("moe.sort", "moe.unsort")))
        busy = PROFILE_BUSY[ov]
        idle = None if off_on < busy else off_on - busy
        other = None if ov else s.compute_s + s.optimizer_s
        out.append((ov, s.time_s - s.host_wait_s - s.bubble_s, other, s.host_wait_s, busy,
                    busy - pub + pub_beside, idle, permute))
    return out


# Megatron-Bridge PR #5123 (2026-07-31, examples/model_verification_cards/qwen3-30b-a3b/
# card.yaml, H100): the HybridEP pair's recipe with the overlap, re-run with HybridEP's
# permutation inside its kernels (moe_permute_fusion_into_hybridep), 64-token combine chunks
# (128 before) and Transformer Engine's norms leaving 10 SMs (20 before): 20.147 s a step
# (steps 41-50) against the 20.992 s of the pair's run; used in no fit
FUSED_HYBRIDEP = ("HybridEP, permuting in its kernels (Bridge #5123)", 20.147)


def fused_hybridep_row():
    """(label, tpsim's step with the overlap and HybridEP's permutation in its kernels, and
    the pair's, the published step)."""
    _, model, nodes, layout, _, on = PAIRS[1]
    steps = [predict(model, TOPOLOGY, nodes=nodes, **{**layout, "overlap_moe_comm": True,
                                                        "moe_permute_fusion_into_hybridep": f})
             .step.time_s for f in (True, False)]
    return FUSED_HYBRIDEP[0], *steps, FUSED_HYBRIDEP[1], on


def fit_slowdown() -> float:
    """The ep_comm_slowdown k at which tpsim's communication seconds of the HybridEP pair
    grow with the overlap as the profile's do (10.83 / 8.25), by bisection; the layer's
    schedule does not depend on k, only the merged pair does."""
    device = load_topology(TOPOLOGY).device
    want = 10.83 / 8.25
    lo, hi = 0.0, 0.99
    for _ in range(50):
        k = (lo + hi) / 2
        (_, off, *_), (_, on, *_) = profile_rows(dataclasses.replace(device, ep_comm_slowdown=k))
        lo, hi = (k, hi) if on / off < want else (lo, k)
    return (lo + hi) / 2


def main() -> None:
    if "--fit" in sys.argv:
        print(f"ep_comm_slowdown fitted on the HybridEP profile pair: {fit_slowdown():.3f}")
        return
    print(f"{'EP overlap, step seconds':52s} {'without':>15s} {'with':>15s} "
          f"{'saved s':>13s} {'speed-up':>15s}")
    print(f"{'':52s} {'tpsim':>7s} {'publ.':>7s} {'tpsim':>7s} {'publ.':>7s} "
          f"{'tpsim':>6s} {'publ.':>6s} {'tpsim':>7s} {'publ.':>7s}")
    for label, t_off, t_on, off, on in pair_rows():
        print(f"{label:52s} {t_off:7.2f} {off:7.2f} {t_on:7.2f} {on:7.2f} "
              f"{t_off - t_on:6.2f} {off - on:6.2f} {t_off / t_on - 1:+7.1%} {off / on - 1:+7.1%}")
    label, t_in, t_apart, pub_in, pub_apart = fused_hybridep_row()
    print(f"{label:52s} {'':15s} {t_in:7.2f} {pub_in:7.2f} {t_apart - t_in:6.2f} "
          f"{pub_apart - pub_in:6.2f}  (saved: beside the pair's with)")
    print(f"\n{'HybridEP pair, rank 0, a step':52s} {'communication s':>15s} "
          f"{'beside compute':>15s}")
    for ov, comm, hidden, pub, pub_hidden in profile_rows():
        print(f"{'  with the overlap' if ov else '  without':52s} {comm:7.2f} {pub:7.2f} "
              f"{hidden:7.2f} {pub_hidden:7.2f}")
    print(f"\n{'HybridEP pair, rank 0, a step':52s} {'GPU busy s':>15s} "
          f"{'other kernels':>15s} {'idle s':>15s}")
    for ov, busy, other, idle, pub_busy, pub_other, pub_idle, permute in gpu_rows():
        pub_idle = f"{pub_idle:7.2f}" if pub_idle is not None else f"{'-':>7s}"
        pub_other = f"{'>' if ov else ''}{pub_other:.2f}"
        other = f"{other:7.2f}" if other is not None else f"{'-':>7s}"
        print(f"{'  with the overlap' if ov else '  without':52s} {busy:7.2f} {pub_busy:7.2f} "
              f"{other} {pub_other:>7s} {idle:7.2f} {pub_idle}")
    print(f"(tpsim's other kernels include HybridEP's permutation, {permute:.2f} s a step, "
          "which the profile may count as communication; the profile's idle: the unprofiled "
          "step less its busy time)")

if __name__ == "__main__":
    main()
