"""The remedies of a layout that does not fit, in words: the does-not-fit notice and
``tpsim predict``'s advice both word :func:`tpsim.training.remedies.memory_remedies`."""
from __future__ import annotations

from ..spec.layout import Layout

REMEDY_NAMES = {"distributed_optimizer": "a distributed optimizer", "zero": "ZeRO-3 (FSDP)",
                "pp": "more pipeline stages", "recompute": "full recomputation",
                "sequence_parallel": "sequence parallelism", "tp": "more TP"}


def remedies_text(values: dict) -> str:
    """' (add ... or ...)': the does-not-fit notice's remedies, each with its flags."""
    fixes = [f"{REMEDY_NAMES[next(iter(change))]} ({remedy_flags(change)})"
             for change in values.get("remedies", ())]
    if not fixes:
        return " (no change of layout that cuts it runs on this topology: a larger one)"
    return f" (add {', '.join(fixes[:-1])}{' or ' if len(fixes) > 1 else ''}{fixes[-1]})"


def remedy_flags(change: dict) -> str:
    """A remedy as the flags that ask for it: --pp 16 --dp 4, --pp 4 --dp 1 --nodes 4,
    --recompute full, --distributed-optimizer (a setting the change clears, None, unsaid)."""
    flags = Layout.flags()
    return " ".join(flags[k] if v is True else f"{flags[k]} {v}" for k, v in change.items()
                    if v is not None)


def pin_text(name: str, values: tuple) -> str:
    """``--tp 8`` or ``--pp 4,8``; a switch ``--sequence-parallel`` or ``--no-...``."""
    flag = Layout.flags()[name]
    if isinstance(values[0], bool):
        return " or ".join(flag if v else f"--no-{flag[2:]}" for v in values)
    return f"{flag} {','.join(map(str, values))}"


def setting_flags(settings: dict) -> list[str]:
    """Layout settings (field -> value, a tuple value one list) as the flags that ask for them:
    ``--moe-dispatcher flex``, ``--no-overlap-grad-reduce``, ``--recompute-modules core_attn,mlp``."""
    return [pin_text(n, v if isinstance(v, tuple) else (v,)) for n, v in settings.items()]
