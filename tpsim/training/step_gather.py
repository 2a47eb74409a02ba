"""The distributed optimizer's weight all-gather overlapped with the next step's first
forwards (Megatron-core's --overlap-param-gather), for :mod:`tpsim.training.step`."""
from __future__ import annotations

from . import terms
from .grad_buckets import reduce_ranks, split_buckets


def gathering(setup) -> bool:
    """The weight all-gather runs beside the first forwards (:func:`terms.overlapped_gather`)."""
    return terms.overlapped_gather(setup.overlap_param_gather, setup.distributed_optimizer,
                                   reduce_ranks(setup.parallelism, setup.experts))


def gathers(g, setup, topo) -> list[dict] | None:
    """Megatron-core's overlapped weight all-gather (--overlap-param-gather, steady state):
    the gather of the weights the last step's optimizer updated runs at this step's start on
    each stage's DP stream, chunk by chunk and, in a chunk, bucket by bucket in forward order
    (the gradient buckets, :func:`tpsim.training.step._buckets`, reversed: param_and_grad_buffer's bucket groups,
    all-gathered in reverse); each bucket's layers wait for it in their first forward
    (:func:`tpsim.training.terms.gather_release`). Adds the all-gathers to ``g``; returns per
    stage {forward code 2 chunk: release time} (None: the gather follows the optimizer)."""
    if not gathering(setup):
        return None
    par, dtype, p = setup.parallelism, setup.precision, setup.parallelism.pp
    price, out = terms.collective_price(topo), []
    for r in range(p):
        group, start, releases = terms.dp_group(par, r), 0.0, {}
        egroup = terms.expert_dp_group(setup.experts, r) if setup.experts else None
        for c in range(setup.v):
            buckets = []
            for k, (forward, params, expert) in enumerate(_forward_buckets(setup, r, c)):
                t = terms.dp_and_expert_s(
                    lambda n, grp: terms.param_gather_s(n, dtype, True, grp, price), params,
                    expert, group, egroup)
                g.add(f"s{r}.chunk{c}.bucket{k}.param-all-gather", f"stage{r}.dp", t, (),
                      "step", f"stage{r}", "dp")
                buckets.append((t, forward))
            release, start = terms.gather_release(start, buckets)
            # what the chunk runs ahead of its layers needs no weights: it may start earlier
            releases[2 * c] = release - setup.chunks[c * p + r].received[0]
        out.append(releases)
    return out


def _forward_buckets(setup, stage: int, chunk: int) -> list[tuple[float, int, int]]:
    """(forward seconds, parameters, of them routed experts') of each of a chunk's buckets in
    forward order (the gradient buckets' cuts of
    :func:`tpsim.training.grad_buckets.split_buckets`, reversed)."""
    g = chunk * setup.parallelism.pp + stage
    c = setup.chunks[g]
    size = terms.bucket_size(terms.grad_ranks(setup.parallelism), g)
    return [(sum(c.forwards[i] * k for i, k in pieces), params, expert)
            for pieces, params, expert in reversed(split_buckets(c.units, c.experts, size))]
