"""What a layout could change, offered only where the change would run: the remedies of a
layout that does not fit (the does-not-fit notice and ``tpsim predict``'s advice both read
:func:`memory_remedies`) and the check the advice's other suggestions pass (:func:`runs`).

A change runs when predict would take it: the layout's own checks
(:class:`~tpsim.spec.layout.Layout`: the global batch a multiple of micro-batch x dp,
interleaving's micro-batches a multiple of pp, ...), Megatron's layer split
(:func:`tpsim.training.pipeline.split_layers`), sequence parallelism's sequence a multiple of tp,
TP overlap's rows, and, where the model and topology are given, the model's tp
(:meth:`~tpsim.spec.model.ModelConfig.check_tp`; an MoE model's tp > 1 with sequence
parallelism) and the topology's GPUs.
"""
from __future__ import annotations

from ..base.errors import ConfigError
from ..layer.linears import RS_SPLITS
from ..spec.layout import Layout
from .nodes import nodes_needed, sizable
from .pipeline import layout_layers, mtp_of

ACTIVATION_SHARE = 0.1      # activations above this share of the memory: worth cutting


def runs(layers: int, lay: Layout, model=None, topo=None, **changes) -> bool:
    """Whether predict runs ``lay`` with ``changes`` (module docstring)."""
    try:
        new = lay.replace(**changes)
        layout_layers(layers, None if model is None else mtp_of(new, model), new)
        if model is not None:
            model.check_tp(new.tp, new.seq_len, new.sequence_parallel, training=True)
    except (ConfigError, ValueError):
        return False
    if model is not None and model.moe and new.tp > 1 and not new.sequence_parallel:
        return False    # Megatron-core's MoE layers need SP beside TP (tpsim.layer.moe)
    if new.sequence_parallel and new.seq_len is not None and new.seq_len % new.tp:
        return False
    if new.tp_comm_overlap and new.seq_len is not None and \
            new.micro_batch * new.seq_len < RS_SPLITS:
        return False
    return topo is None or nodes_needed(topo, new.tp * new.cp * new.pp * new.dp) is not None


# what --recompute full of every layer clears, None each (tpsim.layer.recompute_modules,
# tpsim.training.partial_recompute)
RECOMPUTE_DETAIL = ("recompute_modules", "recompute_method", "recompute_num_layers")


def memory_remedies(model, topo, lay: Layout, mem) -> tuple[dict, ...]:
    """Changes that cut the fullest stage's memory and run, each the layout fields it sets
    (the first names it): the distributed optimizer (dp > 1, off); ZeRO-3 (FSDP: dp > 1, no
    pipeline); more pipeline stages (pp,
    dp, and nodes where the topology's network must be sized: :func:`_more_stages`); full
    recomputation of every layer and sequence parallelism (activations over a tenth of the memory); more TP
    (tp, dp: the next tp the model and a node take, on the same GPUs; an MoE model's with
    sequence parallelism, which its layers need beside TP)."""
    out: list[dict] = []
    if lay.dp > 1 and not lay.distributed_optimizer and lay.zero == 0:
        out.append({"distributed_optimizer": True})
    if lay.dp > 1 and not lay.distributed_optimizer and lay.zero < 3 and lay.pp == 1 \
            and runs(model.layers, lay, model, topo, zero=3):
        out.append({"zero": 3})
    pp = _more_stages(model, topo, lay, mem)
    if pp:
        out.append(pp)
    heavy = mem.activations_bytes > ACTIVATION_SHARE * mem.total_bytes
    if heavy and (lay.recompute != "full" or lay.recompute_method is not None) and \
            runs(model.layers, lay, model, topo, recompute="full",
                 **dict.fromkeys(RECOMPUTE_DETAIL)):
        out.append({"recompute": "full", **dict.fromkeys(RECOMPUTE_DETAIL)})
    if heavy and lay.tp > 1 and not lay.sequence_parallel and \
            runs(model.layers, lay, model, topo, sequence_parallel=True):
        out.append({"sequence_parallel": True})
    sp = {"sequence_parallel": True} if model.moe and not lay.sequence_parallel else {}
    tp = next(({"tp": t, "dp": lay.dp * lay.tp // t, **sp}
               for t in range(lay.tp + 1, topo.devices_per_node + 1)
               if (lay.dp * lay.tp) % t == 0 and
               runs(model.layers, lay, model, topo, tp=t, dp=lay.dp * lay.tp // t, **sp)), None)
    if tp:
        out.append(tp)
    return tuple(out)


def _more_stages(model, topo, lay: Layout, mem) -> dict | None:
    """{pp, dp[, nodes]}: more pipeline stages divide the weights, gradients and optimizer state per
    GPU while 1F1B keeps about the same activations in flight (p micro-batches of L/p layers
    on the first stage), so at least state / (room the activations leave) times the stages;
    the fewest such that run, on the same GPUs (dp divided) where dp allows, else more GPUs."""
    state = mem.state_bytes
    room = mem.capacity_bytes - mem.reserved_bytes - mem.activations_bytes
    if room <= 0 or state <= 0:
        return None
    need, same = state / room, lay.dp * lay.pp
    most = model.layers if sizable(topo) else min(model.layers, topo.max_ranks // (lay.tp * lay.cp))
    for pp in range(lay.pp + 1, most + 1):
        if pp < need * lay.pp:
            continue
        for dp in ((same // pp,) if same % pp == 0 else ()) + (lay.dp,):
            nodes = nodes_needed(topo, lay.tp * lay.cp * pp * dp)
            if nodes is None:           # the topology cannot hold them: nothing to check
                continue
            fixed = {"first_stage_layers": None, "last_stage_layers": None,
                     "pipeline_layout": None}
            if runs(model.layers, lay, model, topo, pp=pp, dp=dp, **fixed):
                return {"pp": pp, "dp": dp, **({"nodes": nodes} if nodes else {})}
    return None
