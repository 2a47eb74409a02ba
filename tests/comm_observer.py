"""Watch the collectives torch actually runs, independently of the code under test.

``tpsim.tp.record_collectives`` is filled by ``tpsim.tp.mappings._issue`` itself, so a test that
reads it can only confirm what the layers say they did: a collective issued any other way (a
direct ``torch.distributed.all_reduce``, a functional collective, a method of the process group)
would never appear in it. This observer sits in torch instead.

What it hooks: a :class:`~torch.utils._python_dispatch.TorchDispatchMode`, the mechanism of
torch's own ``torch.distributed.tensor.debug.CommDebugMode``. Every ``torch.distributed``
collective, whichever Python entry point issued it (``dist.all_reduce``,
``dist.all_gather_single`` / ``all_gather_into_tensor``, ``dist.reduce_scatter_single`` /
``reduce_scatter_tensor``, ``dist.all_gather``, ``ProcessGroup.allreduce(...)`` called directly,
``torch.distributed._functional_collectives``), reaches the backend through a dispatcher op in
the ``c10d`` namespace (``c10d.allreduce_``, ``c10d._allgather_base_``,
``c10d._reduce_scatter_base_``, ``c10d.allgather_``, the ``*_coalesced_`` forms ...) or, for
functional collectives, in ``_c10d_functional`` / ``_c10d_functional_autograd``. A dispatch mode
sees each such call with its tensor arguments, on gloo as on NCCL (checked on torch 2.13 CPU with
gloo). Ops a collective runs inside its own kernel are not seen again (the mode is off while
its handler runs), so nothing is counted twice.

What it records: one :class:`ObservedCall` per collective call, ``(phase, op, nbytes,
overload)``, where ``op`` is ``all-reduce`` / ``all-gather`` / ``reduce-scatter`` and
``nbytes`` is nccl-tests' size (the all-reduce buffer, the full gathered all-gather output, the
full reduce-scatter input), read from the op's tensor arguments; a coalesced call is one record
of the summed size. Any other op in those namespaces (broadcast, all-to-all, send, barrier ...)
is recorded too, with ``op`` its schema name and ``nbytes`` the size of all its tensors, so an
unexpected kind of communication shows up rather than passing silently. ``phase`` is the label
of the region the call ran in: the caller opens one region around the forward pass and one
around ``y.backward()`` (the autograd engine runs CPU backward on the calling thread and carries
the mode to its device threads otherwise).

The mode adds Python overhead to every op it sees, so it is for counting, not timing (the
validate harness times collectives with ``record_collectives(timed=True)``).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

NAMESPACES = ("c10d", "_c10d_functional", "_c10d_functional_autograd", "c10d_functional")
# in those namespaces but not communication: waits, autograd wrappers, NaN checks
NOT_COLLECTIVES = {"_c10d_functional::wait_tensor", "_c10d_functional::_wrap_tensor_autograd",
                   "c10d::check_for_nan"}

# schema name -> (op, argument whose tensors make nccl-tests' size, times the group size?)
RULES = {
    "c10d::allreduce_": ("all-reduce", "tensors", False),
    "c10d::allreduce_coalesced_": ("all-reduce", "tensors", False),
    "_c10d_functional::all_reduce": ("all-reduce", "input", False),
    "_c10d_functional::all_reduce_": ("all-reduce", "input", False),
    "_c10d_functional::all_reduce_coalesced": ("all-reduce", "inputs", False),
    "_c10d_functional::all_reduce_coalesced_": ("all-reduce", "inputs", False),
    "c10d::_allgather_base_": ("all-gather", "output_tensor", False),
    "c10d::allgather_": ("all-gather", "output_tensors", False),
    "c10d::allgather_coalesced_": ("all-gather", "output_lists", False),
    "c10d::allgather_into_tensor_coalesced_": ("all-gather", "outputs", False),
    "_c10d_functional::all_gather_into_tensor": ("all-gather", "input", True),
    "_c10d_functional::all_gather_into_tensor_coalesced": ("all-gather", "inputs", True),
    "_c10d_functional::all_gather_into_tensor_out": ("all-gather", "out", False),
    "_c10d_functional_autograd::all_gather_into_tensor": ("all-gather", "input", True),
    "c10d::_reduce_scatter_base_": ("reduce-scatter", "input_tensor", False),
    "c10d::reduce_scatter_": ("reduce-scatter", "input_tensors", False),
    "c10d::reduce_scatter_tensor_coalesced_": ("reduce-scatter", "inputs", False),
    "_c10d_functional::reduce_scatter_tensor": ("reduce-scatter", "input", False),
    "_c10d_functional::reduce_scatter_tensor_coalesced": ("reduce-scatter", "inputs", False),
    "_c10d_functional::reduce_scatter_tensor_out": ("reduce-scatter", "input", False),
    "_c10d_functional_autograd::reduce_scatter_tensor": ("reduce-scatter", "input", False),
}


@dataclass(frozen=True)
class ObservedCall:
    """One collective torch ran: region label, op, nccl-tests bytes, dispatcher overload."""
    phase: str
    op: str
    nbytes: int
    overload: str


def _tensor_bytes(value) -> int:
    return sum(t.numel() * t.element_size() for t in tree_leaves(value)
               if isinstance(t, torch.Tensor))


def describe(func, args, kwargs) -> tuple[str, int] | None:
    """``(op, nccl-tests bytes)`` of a dispatcher call, or None if it is not communication."""
    name = func._schema.name
    if name.split("::")[0] not in NAMESPACES or name in NOT_COLLECTIVES:
        return None
    named = {a.name: v for a, v in zip(func._schema.arguments, args)}
    named.update(kwargs)
    if name not in RULES:
        return name, _tensor_bytes(named)
    op, arg, times_group = RULES[name]
    return op, _tensor_bytes(named[arg]) * (int(named["group_size"]) if times_group else 1)


class CollectiveObserver(TorchDispatchMode):
    """Dispatch mode appending an :class:`ObservedCall` to ``calls`` for every collective run
    while it is active, labelled ``phase``."""

    def __init__(self, phase: str, calls: list | None = None):
        super().__init__()
        self.phase = phase
        self.calls = [] if calls is None else calls

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if isinstance(func, torch._ops.OpOverload):      # higher-order ops: not collectives
            seen = describe(func, args, kwargs)          # recorded at issue, before it runs
            if seen is not None:
                self.calls.append(ObservedCall(self.phase, seen[0], seen[1], str(func)))
        return func(*args, **kwargs)


@contextlib.contextmanager
def observe_collectives(phase: str):
    """Yield the list of :class:`ObservedCall` torch runs inside the block, labelled ``phase``
    (``"forward"`` around the forward pass, ``"backward"`` around ``y.backward()``)."""
    observer = CollectiveObserver(phase)
    with observer:
        yield observer.calls
