"""Real context-parallel (ring) attention against the single-rank result, on 2 and 4 gloo ranks.

Every rank makes the whole sequence's q, k, v from one seed, runs torch's causal attention on
it, and compares its own tokens (chunks r and 2p - 1 - r) of the output and of the q, k and v
gradients with what the ring computes from its tokens alone; it counts the ring's transfers
against the op graph tpsim prices (p - 1 K/V send-recvs forward).
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tests.dist_helpers import run_ranks  # noqa: E402


def _ring_vs_reference(heads=4, kv_heads=2, seq=16, batch=2, d=8):
    import torch.distributed as dist
    from tpsim.tp.context_parallel import chunk_pair, reference_attention, ring_attention
    from tpsim.tp.mappings import record_collectives
    p, r = dist.get_world_size(), dist.get_rank()
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, n, seq, d, generator=gen, dtype=torch.float64)
               for n in (heads, kv_heads, kv_heads))
    dy = torch.randn(batch, heads, seq, d, generator=gen, dtype=torch.float64)
    full = [t.clone().requires_grad_() for t in (q, k, v)]
    reference_attention(*full).backward(dy)
    local = [chunk_pair(t, p, r).detach().requires_grad_() for t in (q, k, v)]
    with record_collectives() as calls:
        out = ring_attention(*local)
        out.backward(chunk_pair(dy, p, r))
    want = chunk_pair(reference_attention(q, k, v), p, r)
    errors = [float((out - want).abs().max())]
    errors += [float((a.grad - chunk_pair(b.grad, p, r)).abs().max()) for a, b in zip(local, full)]
    kv_bytes = 2 * batch * kv_heads * (seq // p) * d * 8
    return errors, [(c.phase, c.op, c.nbytes) for c in calls], kv_bytes


@pytest.mark.parametrize("world", [2, 4])
def test_ring_attention_matches_one_rank(tmp_path, world):
    for errors, calls, kv_bytes in run_ranks(world, _ring_vs_reference, tmpdir=tmp_path):
        assert max(errors) < 1e-10, errors        # output, dq, dk, dv
        assert calls.count(("forward", "send-recv", kv_bytes)) == world - 1
        assert calls.count(("backward", "send-recv", kv_bytes)) == world - 1
        assert len(calls) == 2 * (world - 1)


def test_forward_transfers_match_the_op_graph():
    """tpsim's p2p ring issues the same cp - 1 K/V send-recvs forward as the real layer, of
    the same bytes (2 b s/cp kv_heads d x bytes per element)."""
    from tpsim.layer.graph import layer_graph
    from tpsim.spec.model import load_model
    m = load_model("llama2-7b")
    for cp in (2, 4):
        g = layer_graph(m, 1, 2, 1024, "bf16", cp=cp)
        fwd = [a["op"] for _, a in g.nodes(data=True)
               if a["kind"] == "p2p" and a["phase"] == "forward"]
        assert len(fwd) == cp - 1
        assert {op.nbytes for op in fwd} == {2 * 2 * (1024 // cp) * m.kv_heads * m.head_dim * 2}
