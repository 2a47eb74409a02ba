"""What the mixture-of-experts settings of a :class:`~tpsim.spec.layout.Layout` allow of one
another: the flex dispatcher's backend and its fusions, the fused permutation, the imbalance,
the router's dtype and the router settings the fake gate has no use for."""
from __future__ import annotations

import math

from ..base.errors import ConfigError
from .fake_gate import check_fake_gate
from .router_dtype import check_router_dtype


def check_moe(lay) -> None:
    """One ConfigError naming the flag for MoE settings that contradict one another."""
    flex_set = lay.moe_flex_backend != "deepep" or lay.moe_routing != "uniform"
    if flex_set and lay.moe_dispatcher != "flex":    # the flex dispatcher's settings alone
        for flag, value, default in (("--moe-flex-backend", lay.moe_flex_backend, "deepep"),
                                     ("--moe-routing", lay.moe_routing, "uniform")):
            if value != default:
                raise ConfigError(flag, "", f"{default} unless --moe-dispatcher is flex", value)
    if not lay.moe_permute_fusion and lay.moe_dispatcher != "alltoall":
        raise ConfigError("--no-moe-permute-fusion", "", "--moe-dispatcher alltoall (the "
                          "unfused permutation is priced for it)", lay.moe_dispatcher)
    if lay.moe_permute_fusion_into_hybridep and lay.moe_flex_backend != "hybridep":
        raise ConfigError("--moe-permute-fusion-into-hybridep", "", "--moe-flex-backend "
                          "hybridep beside it", lay.moe_flex_backend)
    if not 1 <= lay.moe_imbalance < math.inf:
        raise ConfigError("--moe-imbalance", "", "a finite number >= 1", lay.moe_imbalance)
    check_router_dtype(lay)
    check_fake_gate(lay)


def check_dense(lay, model: str) -> None:
    """A dense model's layout leaves the MoE layers' settings at their defaults: one set is
    refused, naming its flag, rather than ignored (``--ep`` and ``--expert-tp``:
    :func:`tpsim.spec.folding.fold`)."""
    for flag, value, default, said in (
            ("--moe-dispatcher", lay.moe_dispatcher, "alltoall", "alltoall (the default)"),
            ("--moe-imbalance", lay.moe_imbalance, 1.0, "1 (the default)"),
            ("--moe-capacity-factor", lay.moe_capacity_factor, None, "no --moe-capacity-factor"),
            ("--no-moe-permute-fusion", lay.moe_permute_fusion, True, "the fused permutation"),
            ("--no-moe-router-fusion", lay.moe_router_fusion, True, "the fused router"),
            ("--moe-router-dtype", lay.moe_router_dtype, "none", "none (the default)")):
        if value != default:
            raise ConfigError(flag, "", f"{said} for a dense model ({model} has no experts)",
                              value)


__all__ = ["check_moe", "check_dense"]
