"""The remedies of a layout that does not fit, in words: the does-not-fit notice and
``tpsim predict``'s advice both word :func:`tpsim.training.remedies.memory_remedies`, each
offering only what the run's ``--framework`` can run (:func:`offered`)."""
from __future__ import annotations

from ..spec.frameworks import runs_under
from ..spec.layout import Layout

REMEDY_NAMES = {"distributed_optimizer": "a distributed optimizer", "zero": "ZeRO-3 (FSDP)",
                "pp": "more pipeline stages", "recompute": "full recomputation",
                "sequence_parallel": "sequence parallelism", "tp": "more TP"}


def offered(values: dict, framework: str | None = None) -> tuple[dict, ...]:
    """The does-not-fit notice's remedies (its ``remedies`` value) that ``framework`` (None:
    any) can run (:func:`tpsim.spec.frameworks.runs_under`)."""
    return tuple(c for c in values.get("remedies", ()) if runs_under(framework, c))


def notice_values(n, framework: str | None = None) -> dict:
    """A notice's values, a does-not-fit one's remedies only those ``framework`` runs."""
    if n.code != "memory_does_not_fit":
        return n.values
    return {**n.values, "remedies": offered(n.values, framework)}


def notice_text(n, framework: str | None = None) -> str:
    """A :class:`~tpsim.sim.result.Notice` in words; a does-not-fit one's remedies only those
    ``framework`` can run."""
    v = n.values
    if n.code == "memory_does_not_fit":
        return does_not_fit_text(v) + remedies_text(v, framework)
    if n.code == "tp_spans_nodes":
        return (f"the TP group of {v['tp']} spans {v['nodes']} nodes: its collectives cross "
                f"{v['level']}")
    return f"{n.code}: {v}"


def does_not_fit_text(v: dict) -> str:
    """'does not fit: N GiB per GPU needed, DEVICE leaves U GiB of its C GiB to tensors': a
    does-not-fit notice's values (training's or serving's) in words."""
    return (f"does not fit: {v['needed_bytes'] / 2**30:.1f} GiB per GPU needed, "
            f"{v['device']} leaves {v['usable_bytes'] / 2**30:.1f} GiB of its "
            f"{v['capacity_bytes'] / 2**30:.2f} GiB to tensors")


def remedies_text(values: dict, framework: str | None = None) -> str:
    """' (add ... or ...)': the does-not-fit notice's remedies that ``framework`` runs, each
    with its flags."""
    fixes = [f"{REMEDY_NAMES[next(iter(change))]} ({remedy_flags(change)})"
             for change in offered(values, framework)]
    if not fixes:
        under = f" under --framework {framework}" if framework else ""
        return (f" (no change of layout that cuts it runs on this topology{under}: a larger "
                "one)")
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
