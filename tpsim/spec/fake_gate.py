"""NeMo AutoModel's ``FakeBalancedGate``: the router that ``--moe-routing round-robin`` names.

AutoModel's MoE layer takes ``FakeBalancedGate`` in place of its ``Gate`` when the backend sets
``fake_balanced_gate`` (NVIDIA-NeMo/Automodel ``nemo_automodel/components/moe/layers.py``,
``MoE.__init__`` and ``class FakeBalancedGate``, at 89e3a9fdd and 8d9bfb90e, the performance
summary's commits; every ``examples/benchmark/configs/*.yaml`` there sets it). Its forward
builds token t's experts as ``arange(T k).view(-1, k) % E`` (kt..kt+k-1 mod E) and its weights
as ``ones(T, k) / k``: no weight, no gating GEMM, no scores, no top-k, no auxiliary loss (it
returns None), and nothing autograd differentiates. Round-robin routing is that gate's and no
trained router's, so the setting names both: the assignment's fan-out
(:func:`tpsim.cost.all_to_all.round_robin_fanout`), the gate's few kernels in place of the
router's (:mod:`tpsim.layer.fake_gate`), and no router weight in the MoE layers' parameters
(:attr:`tpsim.spec.folding.Folded.gate_weight`: not in the weights, gradients, optimizer
state or FSDP units; the model's ``params`` and ``active_params`` stay the real model's).
"""
from __future__ import annotations

from ..base.errors import ConfigError

ROUND_ROBIN = "round-robin"      # the moe_routing value that is AutoModel's FakeBalancedGate


def fake_gate(routing: str) -> bool:
    """Whether ``--moe-routing`` ``routing`` is AutoModel's parameterless gate."""
    return routing == ROUND_ROBIN


def check_fake_gate(lay) -> None:
    """A ConfigError naming the flag of a router setting given beside the fake gate, which
    has no gating GEMM (``--moe-router-dtype``) and no top-k (``--no-moe-router-fusion``)."""
    if not fake_gate(lay.moe_routing):
        return
    for flag, value, default in (("--moe-router-dtype", lay.moe_router_dtype, "none"),
                                 ("--no-moe-router-fusion", lay.moe_router_fusion, True)):
        if value != default:
            raise ConfigError(flag, "", f"unset with --moe-routing {ROUND_ROBIN} (AutoModel's "
                              "FakeBalancedGate has no gating GEMM and no top-k)", value)


__all__ = ["ROUND_ROBIN", "fake_gate", "check_fake_gate"]
