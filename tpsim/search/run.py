"""What every layout of one search shares (:class:`Run`): the model, the topology, the run's
resolved settings and the settings it holds fixed (:mod:`tpsim.search.fixed`)."""
from __future__ import annotations

from dataclasses import dataclass

from ..base.memo import value_hash
from ..spec.fake_gate import fake_gate
from ..spec.folding import Folded
from ..spec.layout import Layout
from ..spec.optimizer_state import ADAM_DTYPE_FIELDS
from ..spec.precision import precision_key
from ..spec.settings import defaults


@dataclass(frozen=True)
class Run:
    """What every layout of one search shares: the model, topology and resolved settings.
    Compared and hashed by value (once per run): a second search of the same job, by names
    or by objects, finds the first one's memos."""
    model: object
    topo: object
    seq_len: int
    dtype: str
    dropout: float
    attention: str
    global_batch: int
    fixed: tuple = ()    # (field, value) of the settings held fixed away from their defaults

    __hash__ = value_hash

    def setting(self, name: str):
        """A fixed setting's value (:mod:`tpsim.search.fixed`), else its default."""
        return dict(self.fixed).get(name, defaults(Layout)[name])

    def layout(self, **dims) -> Layout:
        """The layout predict prices for ``dims`` (the enumerated fields) under this run: its
        sequence length, dtype, dropout, attention, global batch (unless ``dims`` set it) and
        fixed settings."""
        return Layout.unchecked(**{**dict(self.fixed), "seq_len": self.seq_len,
                                   "dtype": self.dtype, "dropout": self.dropout,
                                   "attention": self.attention,
                                   "global_batch": self.global_batch, **dims})

    def precision(self) -> str:
        """The weights', gradients' and optimizer state's precision key, as the step's
        (:func:`tpsim.spec.precision.precision_key` of the dtype and the fixed settings)."""
        get = self.setting
        return precision_key(self.dtype, get("grad_reduce_in_bf16"), get("fp8_param_gather"),
                             self.topo.device.fp8_any_layout, get("fp8_recipe"),
                             tuple(map(get, ADAM_DTYPE_FIELDS)))

    def folded(self, par, ep: int, expert_tp: int | None) -> Folded:
        """The MoE layers' groups of ``par`` at ``ep`` x ``expert_tp`` (None: tp), as predict's
        (:func:`tpsim.training.predict.experts_of`): their routers without a gating weight
        under AutoModel's fake gate (:mod:`tpsim.spec.fake_gate`)."""
        return Folded(par, ep, expert_tp or par.tp, not fake_gate(self.setting("moe_routing")))
