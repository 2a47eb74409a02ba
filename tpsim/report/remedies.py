"""The remedies of a layout that does not fit, in words: the does-not-fit notice and
``tpsim predict``'s advice both word :func:`tpsim.training.remedies.memory_remedies`."""
from __future__ import annotations

REMEDY_NAMES = {"--distributed-optimizer": "a distributed optimizer",
                "--pp": "more pipeline stages", "--recompute": "full recomputation",
                "--sequence-parallel": "sequence parallelism", "--tp": "more TP"}


def remedies_text(values: dict) -> str:
    """' (add ... or ...)': the does-not-fit notice's remedies that run
    (:func:`tpsim.training.remedies.memory_remedies`), each with its flag."""
    fixes = [f"{REMEDY_NAMES[flag]} ({remedy_flags(flag, value)})"
             for flag, value in values.get("remedies", {}).items()]
    if not fixes:
        return " (no change of layout that cuts it runs on this topology: a larger one)"
    return f" (add {', '.join(fixes[:-1])}{' or ' if len(fixes) > 1 else ''}{fixes[-1]})"


def remedy_flags(flag: str, value) -> str:
    """A remedy as the flags that ask for it: --pp 16 --dp 4, --pp 4 --dp 1 --nodes 4,
    --recompute full, --tp 8 --dp 2."""
    if value is True:
        return flag
    if isinstance(value, tuple):
        degree, dp, nodes = value
        return f"{flag} {degree} --dp {dp}" + (f" --nodes {nodes}" if nodes else "")
    return f"{flag} {value}"
