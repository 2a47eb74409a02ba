"""The simulated layer, embedding and output layer of a search's layouts
(:class:`Parts`): a layout's depend on (tp, micro-batch, sequence parallelism, recomputation,
TP overlap, CP, the experts' folding; the micro-batches per step and the pipeline only where
:func:`layer_parts` says) only, each simulated once as predict simulates it under
the run's fixed settings (:func:`tpsim.training.predict.layout_layer`) and shared by every
pipeline and data-parallel layout that runs it; the step bound reads their times
(:mod:`tpsim.search.step`)."""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..base.memo import Memo
from ..layer.recompute import DEFAULT_MODULES
from ..spec.model_params import moe_layers
from ..spec.parallel import Parallelism
from ..training import terms
from ..training.moe_overlap import moe_part
from ..training.offload import offloaded_parts
from ..training.predict import layout_layer
from ..training.mtp import mtp_simulation
from ..training.data_mask import mask_copy_s, with_mask
from ..training.step import Part, mtp_ends
from .run import Run


@dataclass(frozen=True)
class Parts:
    """The simulated layer, embedding and output layer of one layer configuration."""
    layer: Part
    embedding: Part
    output: Part
    dense_ratio: float = 1.0   # a dense layer's time as a share of the layer's (moe_parts)

    @property
    def saved(self) -> tuple[float, ...]:
        """Activations one micro-batch keeps: layer, embedding, output layer, bytes."""
        return (self.layer.saved_bytes, self.embedding.saved_bytes, self.output.saved_bytes)

    @property
    def times(self) -> tuple[float, ...]:
        """The bound's first variables (:data:`tpsim.training.step_bound.FIXED`)."""
        return (self.layer.forward_s, self.layer.backward_s, self.embedding.forward_s,
                self.embedding.backward_s, self.output.forward_s, self.output.backward_s)


_PARTS = Memo("search layer parts", 8192)


def layer_parts(run: Run, tp: int, micro_batch: int, sp: bool, recompute: str,
                overlap: bool, cp: int = 1, ep: int = 1, expert_tp: int | None = None,
                world: int = 0, cp_comm: str = "p2p", m: int = 1,
                chunks: tuple[int, int] = (1, 1)) -> Parts:
    """The layer, embedding and output layer as predict simulates them under the run's fixed
    settings, memoised: the ends per (tp, micro-batch, SP, CP), which is all they depend on;
    selective recomputation of the default modules with fused attention is the layer without
    recomputation (:mod:`tpsim.layer.recompute`); ``cp``: context parallelism by ``cp_comm``;
    with experts, folded ``ep`` x ``expert_tp`` on ``world`` GPUs (:func:`moe_parts`); ``m``:
    micro-batches per step and ``chunks`` (pp, virtual stages), which the layers depend on only
    without the gradient accumulation fusion (m) and with --overlap-moe-comm (the MoE layer's
    merged share: :func:`tpsim.training.moe_overlap.moe_part`), else 1."""
    return _PARTS.get((run, "parts", tp, micro_batch, sp, recompute, overlap, cp, ep, expert_tp,
                       world, cp_comm, m, chunks), _layer_parts, run, tp, micro_batch, sp,
                      recompute, overlap, cp, ep, expert_tp, world, cp_comm, m, chunks)


def same_recompute(run: Run, recompute: str) -> tuple[str, tuple | None]:
    """(recompute, modules) the layer runs as: selective recomputation of the default modules
    with fused attention recomputes nothing (:mod:`tpsim.layer.recompute`)."""
    modules = run.setting("recompute_modules")
    if recompute == "selective" and run.attention != "unfused" and \
            modules in (None, DEFAULT_MODULES):
        return "none", None
    return recompute, modules


def _layer_parts(run: Run, tp: int, micro_batch: int, sp: bool, recompute: str,
                 overlap: bool, cp: int, ep: int, expert_tp: int | None, world: int,
                 cp_comm: str, m: int, chunks: tuple[int, int]) -> Parts:
    recompute, modules = same_recompute(run, recompute)
    lay = run.layout(tp=tp, micro_batch=micro_batch, sequence_parallel=sp, recompute=recompute,
                     recompute_modules=modules, tp_comm_overlap=overlap, cp=cp, cp_comm=cp_comm,
                     ep=ep, expert_tp=expert_tp, global_batch=m * micro_batch, pp=chunks[0],
                     virtual_stages=chunks[1])
    adds = 1 if lay.gradient_accumulation_fusion else m     # what the layers depend on
    sim, pricing = _PARTS.get((run, "layer", tp, micro_batch, sp, recompute, overlap, cp,
                               cp_comm, adds), layout_layer, run.model, run.topo, lay)

    def ends():     # the output layer's stage with the model's multi-token prediction
        emb, out = map(Part.of, terms.model_ends(sim, pricing, tp, sp, run.dropout,
                                                 run.setting("cross_entropy"),
                                                 run.setting("train_metrics")))
        d = run.model.mtp_layers
        mtp = Part.of(mtp_simulation(sim, pricing, tp, sp)) if d else None
        return emb, mtp_ends(emb, out, mtp, d)
    emb, out = _PARTS.get((run, "ends", tp, micro_batch, sp, cp), ends)
    moe = None
    if run.model.moe:
        experts = run.folded(Parallelism(tp=tp, cp=cp, dp=world // (tp * cp)), ep, expert_tp)
        moe = moe_part(_PARTS.get((run, "moe", tp, micro_batch, sp, recompute, cp, cp_comm, ep,
                                   expert_tp, world, adds), layout_layer, run.model, run.topo,
                                  lay, True, experts)[0], lay, ep, run.topo.device)
    dense, offloaded = Part.of(sim), lay.cpu_offload_layers
    if offloaded:                   # the layers' parts as the step's (tpsim.training.offload)
        (dense, emb, out, moe), _ = offloaded_parts((dense, emb, out, moe), offloaded,
                                                    run.model.layers, run.topo.device)
    return moe_parts(run.model, dense, moe, emb, out) if moe else Parts(dense, emb, out)


def moe_parts(model, dense: Part, moe: Part, emb: Part, out: Part) -> Parts:
    """The bound's parts for a model with experts: its MoE layer; a dense layer counted as
    ``dense_ratio`` of one (its smaller time ratio: :func:`bound_layers`); the larger
    activations (exact when every layer carries experts; the candidates' are predict's)."""
    if moe_layers(model) == model.layers:
        return Parts(moe, emb, out)
    ratio = min(dense.forward_s / moe.forward_s, dense.backward_s / moe.backward_s)
    return Parts(replace(moe, saved_bytes=max(dense.saved_bytes, moe.saved_bytes)), emb, out,
                 ratio)


def bound_layers(model, layers: tuple[int, ...], ratio: float) -> tuple[float, ...]:
    """Layers per virtual stage as the bound counts them, in MoE layers: each dense one as
    ``ratio`` (at most its time over the MoE layer's in every layout): never too long."""
    if ratio == 1.0 or not model.moe:
        return layers
    moe = terms.moe_counts(model, layers)
    return tuple(n - (n - k) * (1.0 - ratio) for n, k in zip(layers, moe))


def masked(parts: Parts, run: Run, tp: int, micro_batch: int, cp: int, pp: int,
           world: int) -> Parts:
    """``parts`` with the data loader's attention mask (--create-attention-mask) copied ahead of
    the embedding's and, pp > 1, the output layer's forward, as predict's step charges it
    (:func:`tpsim.training.data_mask.with_mask`, on the layout's TP group)."""
    if not run.setting("create_attention_mask"):
        return parts
    par = Parallelism(tp=tp, pp=pp, dp=world // (tp * cp * pp), cp=cp)
    copy = mask_copy_s(micro_batch, run.seq_len, par.group("tp"), run.topo)
    emb, out = with_mask(parts.embedding, parts.output, copy, pp)
    return replace(parts, embedding=emb, output=out)
