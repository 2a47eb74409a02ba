"""Megatron-core's MoE parallel folding: the expert layers' groups, separate from attention's.

Megatron-core (``megatron/core/parallel_state.py``, ``expert_tensor_parallel_size``,
``expert_model_parallel_size``; "MoE Parallel Folding", Liu et al. 2025, arXiv 2504.14960)
numbers the ranks of one pipeline stage twice. The dense layers (attention, dense MLPs) split
them tp x cp x dp, tp fastest; the MoE layers split the same tp x cp x dp ranks as
etp x ep x edp, etp fastest (its expert RankGenerator's order ``tp-ep-dp-pp``):

    expert DP  edp = tp cp dp / (etp ep)         the ranks that hold the same experts
    ETP group  etp consecutive ranks             each expert's width split over them
    EP group   ep ranks, stride etp              the experts split over them (E / ep each)
    EDP group  edp ranks, stride etp ep          their gradients reduced over them

so an MoE layer may use other groups than the attention before it: tp 2 with ep 8 on 16 GPUs of
a stage is legal. :func:`fold` checks what Megatron-core checks (etp ep divides the stage's
ranks; the experts divide over ep) and returns the groups as a :class:`Folded` parallelism,
which :class:`~tpsim.sim.price.Pricing` asks for ``ep``, ``etp`` and ``edp`` groups.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..base.errors import ConfigError
from .parallel import Group, Parallelism


@dataclass(frozen=True)
class Folded:
    """The job's dense ``parallelism`` and its MoE layers' ``ep`` x ``etp`` (x ``edp``);
    ``gate_weight``: whether each MoE layer's router holds its h x E gating weight (False:
    NeMo AutoModel's parameterless FakeBalancedGate, :mod:`tpsim.spec.fake_gate`)."""
    parallelism: Parallelism
    ep: int = 1
    etp: int = 1
    gate_weight: bool = True

    @property
    def stage_ranks(self) -> int:
        """Ranks of one pipeline stage: tp x cp x dp."""
        p = self.parallelism
        return p.tp * p.cp * p.dp

    @property
    def edp(self) -> int:
        """Expert data parallelism: tp cp dp / (etp ep)."""
        return self.stage_ranks // (self.etp * self.ep)

    @property
    def apart(self) -> bool:
        """The MoE layers' groups differ from the dense layers': ep > 1 or an expert TP other
        than tp (Megatron-core's separate expert groups and gradient buffers)."""
        return self.ep > 1 or self.etp != self.parallelism.tp

    @property
    def world(self) -> int:
        return self.parallelism.world

    def stride(self, name: str) -> int:
        return {"etp": 1, "ep": self.etp, "edp": self.etp * self.ep}.get(name) or \
            self.parallelism.stride(name)

    def group(self, name: str, first: int = 0) -> Group:
        """The ``name`` group from rank ``first``: etp, ep, edp (module docstring), or the
        dense parallelism's."""
        size = {"etp": self.etp, "ep": self.ep, "edp": self.edp}.get(name)
        if size is None:
            return self.parallelism.group(name, first)
        return Group(name, size, self.stride(name), first, self.world)


def fold(par: Parallelism, ep: int, etp: int, experts: int, model: str = "the model",
         expert_width: int = 0, gate_weight: bool = True) -> Folded:
    """The MoE layers' groups of ``par``'s stages (their routers with a ``gate_weight`` or
    not), or a ConfigError naming the flag: etp x ep must divide tp x cp x dp (every stage's
    ranks fold into whole expert groups), ep the ``experts`` of ``model``, etp its experts'
    width."""
    folded = Folded(par, ep, etp, gate_weight)
    if not experts and folded.apart:
        flag, value = ("--ep", ep) if ep > 1 else ("--expert-tp", etp)
        raise ConfigError(flag, "", f"{1 if ep > 1 else par.tp} (the default) for a dense model "
                          f"({model} has no experts)", value)
    for flag, value, n in (("--ep", ep, ep), ("--expert-tp", etp, ep * etp)):
        if folded.stage_ranks % n:
            raise ConfigError(flag, "", f"ep x expert-tp ({ep} x {etp}) a divisor of one "
                              f"stage's tp x cp x dp ranks ({folded.stage_ranks})", value)
    if experts and experts % ep:
        raise ConfigError("--ep", "", f"a divisor of {model}'s {experts} experts", ep)
    if expert_width and expert_width % etp:
        raise ConfigError("--expert-tp", "", f"a divisor of {model}'s expert_ffn_hidden "
                          f"({expert_width})", etp)
    return folded
