"""The search's work, in this process or spread over ``jobs`` processes (``--jobs``): pipelines
to bound, finalists to simulate. Each worker keeps its own memo of simulated layers."""
from __future__ import annotations

import dataclasses
import gc

from .price import price_pipelines

_RUN = []


def _init(run) -> None:
    _RUN[:] = [run]


def _init_worker(run) -> None:
    gc.disable()
    _init(run)


def _bound(groups):
    return price_pipelines(_RUN[0], groups)


def _predict(layout):
    from ..training.predict import predict
    run = _RUN[0]
    p = predict(run.model, run.topo, layout=run_layout(run, layout))
    return p.step, p.memory


def run_layout(run, layout):
    """``layout`` (a search's: the run's settings left None) with the run's sequence length,
    dtype and global batch: the layout :func:`tpsim.training.predict.predict` prices."""
    return dataclasses.replace(layout, seq_len=run.seq_len, dtype=run.dtype,
                               global_batch=run.global_batch)


class Workers:
    """``with Workers(run, jobs) as w``: ``w.bound(groups)`` returns each group's
    (bound, bytes) list, ``w.predict(layouts)`` returns (StepTimes, Memory) per layout."""

    def __init__(self, run, jobs: int = 1):
        self.run, self.jobs, self.pool = run, jobs, None

    def __enter__(self):
        _init(self.run)
        if self.jobs > 1:     # the pool's modules load only for it (~13 ms of a search's start)
            from concurrent.futures import ProcessPoolExecutor
            self.pool = ProcessPoolExecutor(self.jobs, initializer=_init_worker,
                                            initargs=(self.run,))
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
        return False

    def bound(self, groups):
        """Each group's (bound, bytes, bytes needed) list, in order: in this process all at once, else in
        chunks spread over the workers."""
        if self.pool is None:
            return _bound(groups)
        size = max(1, len(groups) // (8 * self.jobs))
        chunks = [groups[i:i + size] for i in range(0, len(groups), size)]
        return [rows for part in self.pool.map(_bound, chunks) for rows in part]

    def tight(self, layout) -> float:
        """The layout's tighter step bound (the compute slowed beside the reductions,
        :func:`tpsim.search.price.price_pipelines`), in this process."""
        return price_pipelines(self.run, [[layout]], slowed=True)[0][0][0]

    def predict(self, layouts) -> list:
        if self.pool is None or len(layouts) == 1:
            return [_predict(lay) for lay in layouts]
        return list(self.pool.map(_predict, layouts))
