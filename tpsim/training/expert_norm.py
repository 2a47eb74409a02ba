"""The gradient norm's reduction of the routed experts' own optimizer.

Megatron-core builds one optimizer for the dense parameters and, where the routed experts use
their own groups (``use_expert_pgs``: ep > 1 or an expert TP other than tp, tpsim's
:attr:`~tpsim.spec.folding.Folded.apart`; ``megatron/core/extensions/transformer_engine.py``
marks their parameters ``allreduce=False``), a second one for them, chained
(``megatron/core/optimizer/__init__.py``, ``get_megatron_optimizer``). Each all-reduces the
squared norm of its gradients (one fp32, ``clip_grads.get_grad_norm_fp32``) on its
``grad_stats_parallel_group``:

    distributed optimizer   both: the distributed-optimizer instance's group (the whole job:
                            every expert tp-ep-pp group of every expert-DP rank), shared, so
                            ``ChainedOptimizer.get_grad_norm`` reduces once over it; with
                            dp = 1 the expert-DP ranks lie inside the tp x cp ranks the dense
                            reduction already spans (:func:`tpsim.training.terms.grad_norm_group`)
    otherwise               dense: the model-parallel group (tp x pp); experts: the expert
                            tp-ep-pp group (etp x ep x pp): two groups, not shared, so
                            ``ChainedOptimizer.get_grad_norm`` reduces on each, one after the
                            other (``optimizer.get_grad_norm()`` per chained optimizer)

so only the second row adds a reduction: :func:`expert_norm_group`.
"""
from __future__ import annotations

from ..spec.parallel import Group


def expert_norm_group(experts, distributed_optimizer: bool) -> Group | None:
    """The routed experts' own gradient-norm all-reduce (module docstring): without the
    distributed optimizer and with ``experts`` folded apart (a
    :class:`~tpsim.spec.folding.Folded`), Megatron-core's expert tp-ep-pp group, priced as
    :func:`tpsim.training.terms.grad_norm_group` prices the dense one, on the outermost of
    its etp, ep and pp groups of more than one rank; None: no such reduction."""
    if distributed_optimizer or experts is None or not experts.apart:
        return None
    groups = [experts.group(n) for n in ("etp", "ep", "pp") if experts.group(n).size > 1]
    return max(groups, key=lambda g: g.stride) if groups else None
