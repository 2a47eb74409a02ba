"""The MoE router's dtype: two settings a training run's layout inherits
(:class:`~tpsim.spec.layout.Layout`), as :class:`~tpsim.spec.release.Released` gives it the
NCCL release.

``moe_router_dtype`` is Megatron-core's ``--moe-router-dtype`` (``transformer_config.py``
``moe_router_dtype``; Megatron-LM dab77238, 2025-03-06, "Promote routing precision to
FP32/FP64"): fp32 or fp64 runs the gating GEMM's arithmetic in that dtype, none (Megatron-core's
None, its default) in the activations'. ``moe_router_gating_linear`` picks the release's
implementation: Megatron-core 0.13's ``RouterGatingLinearFunction`` (Megatron-LM 0f058666,
2025-06-14; the default), or before it ``F.linear`` on the input and weight cast to the
router's dtype (Megatron-core 0.12). What each prices: :mod:`tpsim.layer.router_dtype`.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..base.errors import ConfigError
from .settings import setting

ROUTER_DTYPES = ("none", "fp32", "fp64")
DTYPE_DOC = (
    "the MoE router's gating GEMM in fp32 (TF32 on the tensor cores) or fp64, its input and "
    "gradients cast to and from it (Megatron-core's --moe-router-dtype, which DeepSeek-V3's "
    "Megatron-Bridge provider sets; none: the activations' dtype; tpsim.layer.router_dtype)")
GATING_DOC = (
    "with --moe-router-dtype, the router's GEMM as Megatron-core 0.13's "
    "RouterGatingLinearFunction (fp32: a 16-bit forward with fp32 logits, the backward's casts "
    "in Python; False: Megatron-core 0.12's F.linear on the cast input and weight, the forward "
    "in the router's dtype, autograd's backward)")
GATING_HELP = (
    "with --moe-router-dtype, the router's GEMM as Megatron-core 0.12's F.linear on the input "
    "and weight cast to it (Megatron-LM dab77238 to 0f058666, March to June 2025; default: "
    "0.13's RouterGatingLinearFunction)")


@dataclass(frozen=True, kw_only=True)
class RouterDtype:
    """The router's dtype settings a layout inherits (module docstring)."""
    moe_router_dtype: str = setting("none", DTYPE_DOC, flag="--moe-router-dtype",
                                    kind="choice", choices=ROUTER_DTYPES)
    moe_router_gating_linear: bool = setting(True, GATING_DOC, flag="--moe-router-gating-linear",
                                             kind="flag", help=GATING_HELP)


def check_router_dtype(lay) -> None:
    """--no-moe-router-gating-linear only beside a router dtype (it changes nothing else)."""
    if not lay.moe_router_gating_linear and lay.moe_router_dtype == "none":
        raise ConfigError("--no-moe-router-gating-linear", "", "--moe-router-dtype fp32 or "
                          "fp64 beside it (without one both releases run the same 16-bit GEMM)", False)


__all__ = ["RouterDtype", "ROUTER_DTYPES", "check_router_dtype"]
