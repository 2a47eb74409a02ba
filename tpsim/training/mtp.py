"""Multi-token prediction in the training step: what its D depths add to the last virtual stage,
where Megatron-core runs them (:func:`tpsim.training.pipeline.layout_layers`).

Each depth is one more transformer layer of the model's last layer's kind (counted in the
stage's layers), the module's own ops (:mod:`tpsim.layer.mtp`: the shifted tokens, enorm,
hnorm, the concatenation, eh_proj and its TP gather), one more embedding lookup of the shifted
tokens and one more pass of the shared output layer, its final norm and its loss
(:func:`tpsim.training.step.make_setup`). Its own parameters
(:func:`tpsim.spec.model_params.mtp_module_params`: eh_proj and three norms) join the output
layer's gradient unit (Megatron-core builds the block after the decoder: its gradients are
final with the output layer's); its norms hold no quantized copy and, under sequence
parallelism, their partial gradients are all-reduced over TP as the layers' norms are
(``_allreduce_layernorm_grads``).
"""
from __future__ import annotations

from ..layer.mtp import mtp_template
from ..sim.simulate import simulate
from ..spec.model_params import mtp_module_params


def mtp_simulation(sim, pricing, tp: int, sp: bool):
    """One depth's own ops (:func:`tpsim.layer.mtp.mtp_template`) simulated at the layer
    ``sim``'s sizes and ``pricing``, its linears in the layer's quantizer."""
    return simulate(mtp_template(tp > 1, sp, sim.dims.quantizer), sim.dims, pricing)


def with_output_params(units: list, params: int) -> list:
    """A chunk's gradient ``units`` with ``params`` more joined to its output layer's unit
    (their gradients final together, at the end of the block's backward)."""
    return [(name, n_params + params if name == "output" else n_params, n)
            for name, n_params, n in units] if params else units


def last_stage_params(model, tp: int, mtp: int, sp: bool) -> tuple[int, int, int]:
    """What ``mtp`` depths add to the last stage's parameters on one of ``tp`` ranks: (all of
    their own, those no Transformer Engine linear holds: the norms, those sequence
    parallelism leaves partial: the norms with ``sp``) (module docstring)."""
    norms = 3 * mtp * model.norm_params
    return mtp * mtp_module_params(model, tp), norms, norms if sp else 0


def plus_last(values: tuple, extra: int) -> tuple:
    """Per-stage ``values`` with ``extra`` added to the last stage's."""
    return values[:-1] + (values[-1] + extra,) if extra else values
