"""Whether a tensor-parallel degree splits a model: each rank holds heads/tp attention heads and
ffn_hidden/tp of the MLP (Megatron's column- and row-parallel linears, Shoeybi et al. 2019), and
kv_heads/tp key/value heads, or one replicated when tp exceeds them (Megatron-core's grouped-query
attention); with sequence parallelism, seq_len/tp tokens of each norm and dropout."""
from __future__ import annotations

from ..base.errors import ConfigError

MAX_LISTED = 128        # the largest TP degree an error lists among those that split a model


def splits(m, tp: int) -> bool:
    """TP ``tp`` divides ``m``'s heads and MLP, and divides or is a multiple of its kv_heads."""
    kv = m.kv_heads % tp if tp <= m.kv_heads else tp % m.kv_heads
    return not (m.heads % tp or m.ffn_hidden % tp or kv)


def _degrees(m) -> str:
    fits = ", ".join(str(t) for t in range(1, MAX_LISTED + 1) if splits(m, t))
    return f"--tp {fits} split {m.name} (--tp defaults to 8)"


def check_tp(m, tp: int, seq_len: int | None = None, sequence_parallel: bool = False) -> None:
    """A ConfigError naming ``--tp`` unless ``tp`` splits the model ``m`` (:func:`splits`) and,
    with ``sequence_parallel``, its ``seq_len``; the error lists the degrees that split it."""
    if isinstance(tp, bool) or not isinstance(tp, int) or tp < 1:
        raise ConfigError("--tp", "", "a positive integer", tp)
    for key, value in (("heads", m.heads), ("ffn_hidden", m.ffn_hidden)):
        if value % tp:
            raise ConfigError("--tp", "", f"a divisor of {m.name}'s {key} ({value}), since "
                              f"each rank holds {key}/tp", tp, _degrees(m))
    if not splits(m, tp):
        raise ConfigError("--tp", "", f"a divisor or a multiple of {m.name}'s kv_heads "
                          f"({m.kv_heads}): each rank holds kv_heads/tp key/value heads, "
                          "or one replicated", tp, _degrees(m))
    if sequence_parallel and seq_len is not None and seq_len % tp:
        raise ConfigError("--tp", "", f"a divisor of the sequence length ({seq_len}) with "
                          "--sequence-parallel", tp)
