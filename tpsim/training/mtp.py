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

from dataclasses import dataclass

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


@dataclass(frozen=True)
class LastStage:
    """What ``depths`` multi-token-prediction layers add to the last stage, parameters on one
    TP rank: the embedding ``copy`` it holds (pp > 1, untied: ``GPTModel``'s ``pre_process or
    mtp_process``; all-reduced with the first stage's, ``finalize_model_grads``), the depths'
    ``own`` (:func:`~tpsim.spec.model_params.mtp_module_params`), of them the norms (``plain``:
    no quantized copy; ``sp_norms``: left partial by sequence parallelism)."""
    depths: int = 0
    copy: int = 0
    own: int = 0
    plain: int = 0
    sp_norms: int = 0

    @property
    def output_unit(self) -> int:
        """Parameters joined to the output layer's gradient unit: the copy and their own."""
        return self.copy + self.own


def last_stage(model, tp: int, pp: int, layers, sp: bool) -> LastStage:
    """:class:`LastStage` of a model split into ``layers`` per virtual stage, where the layers
    past the model's are its multi-token-prediction layers (module docstring)."""
    d = max(0, sum(layers) - model.layers)
    if not d:
        return LastStage()
    copy = model.embedding_params(tp) if pp > 1 and not model.tie_embeddings else 0
    norms = 3 * d * model.norm_params
    return LastStage(d, copy, d * mtp_module_params(model, tp), norms, norms if sp else 0)


def plus_last(values: tuple, extra: int) -> tuple:
    """Per-stage ``values`` with ``extra`` added to the last stage's."""
    return values[:-1] + (values[-1] + extra,) if extra else values
