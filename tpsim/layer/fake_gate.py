"""The MoE slot's router as NeMo AutoModel's ``FakeBalancedGate`` runs it (``--moe-routing
round-robin``: :mod:`tpsim.spec.fake_gate`), in place of the gating GEMM, its top-k, the
auxiliary loss and their backward (:func:`tpsim.layer.moe.router_fwd`, ``router_bwd``).

Its forward (NVIDIA-NeMo/Automodel ``nemo_automodel/components/moe/layers.py``
``FakeBalancedGate.forward`` at 89e3a9fdd, the DeepSeek-V3 rows' commit), on the rank's T_n
tokens with top-k k and activations of B bytes::

    weights = torch.ones(T_n, k) / k            fill, T_n k 4 written; divide, 4 read, 4 written
    indices = torch.arange(T_n k).view(-1, k) % E
                                                arange, T_n k 8 written; view (no kernel);
                                                remainder, 8 read, 8 written
    return weights.type_as(x), indices, None    cast, T_n k 4 read, T_n k B written

6 Python-level ops, 5 kernels, T_n k (40 + B) bytes: one memory-bound op ``fwd.router.fake``
of ``kernels`` 5 (each small kernel about its launch, :class:`tpsim.layer.ops.MemoryBound`),
``host_ops`` 6. It reads nothing of the tokens (only their count): its input edge is the
norm's output for issue order. Nothing it makes requires a gradient (no parameter, constant
weights): no backward op, and the slot's input gradient is the experts' alone (no
``bwd.router.add``); it keeps nothing for the backward. Left out: 8d9bfb90e's (the Qwen3 row's)
``+ skip_first_n_experts`` after the remainder (0 there: one more op and kernel, T_n k 16
bytes).
"""
from __future__ import annotations

from .template import Builder

FAKE_GATE_OPS = 6       # ones, /, arange, view, %, type_as
FAKE_GATE_KERNELS = 5   # the view runs none
FAKE_GATE_BYTES = 40    # a routed pair's bytes but the B-byte weight written: 4 + 8 + 8 + 16 + 4


def fake_gate_bytes(d) -> int:
    """T_n k (40 + B): the gate's five kernels' bytes (module docstring)."""
    return d.Tn * d.topk * (FAKE_GATE_BYTES + d.bpe)


def fake_gate_fwd(B: Builder, x: str) -> str:
    """``fwd.router.fake`` after the norm's output ``x``: the weights and indices the
    dispatch reads (module docstring)."""
    return B.eltwise("fwd.router.fake", lambda d: (d.Tn, d.topk, fake_gate_bytes(d)), (x,),
                     host_ops=FAKE_GATE_OPS, kernels=lambda d: FAKE_GATE_KERNELS)


__all__ = ["fake_gate_bytes", "fake_gate_fwd"]
