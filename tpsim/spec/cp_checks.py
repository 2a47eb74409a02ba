"""What the context-parallel settings of a :class:`~tpsim.spec.layout.Layout` allow of one
another: the sequence each rank splits, the exchange that only a CP group runs."""
from __future__ import annotations

from ..base.errors import ConfigError


def check_cp_settings(lay) -> None:
    """One ConfigError naming the flag: ``--seq`` a multiple of 2 x cp (each rank holds two
    chunks, for the causal mask's balance); ``--cp-comm`` other than p2p only with cp above 1
    (at cp 1 there is no exchange, so a chosen one would be silently ignored; no
    ``--framework`` preset sets it)."""
    if lay.cp > 1 and lay.seq_len is not None and lay.seq_len % (2 * lay.cp):
        raise ConfigError("--seq", "", f"a multiple of 2 x --cp ({2 * lay.cp}: each rank "
                          "holds two chunks, for the causal mask's balance)", lay.seq_len)
    if lay.cp == 1 and lay.cp_comm != "p2p":
        raise ConfigError("--cp-comm", "", "p2p (the default) unless --cp > 1 (at cp 1 there "
                          "is no context-parallel exchange)", lay.cp_comm)


__all__ = ["check_cp_settings"]
