"""The search's work, in this process or spread over ``jobs`` processes (``--jobs``): schedule
shapes to bound, finalists to simulate. Each worker keeps its own memo of simulated layers."""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

from .search_price import price_shape

_RUN = []


def _init(run) -> None:
    _RUN[:] = [run]


def _bound(layouts):
    return price_shape(_RUN[0], layouts)


def _predict(layout):
    from .predict import predict
    run = _RUN[0]
    p = predict(run.model, run.topo, seq_len=run.seq_len, dtype=run.dtype,
                global_batch=run.global_batch, **layout.predict_kwargs())
    return p.step, p.memory


class Workers:
    """``with Workers(run, jobs) as w``: ``w.bound(batches)`` yields each batch's
    (bound, Memory) list, ``w.predict(layouts)`` returns (StepTimes, Memory) per layout."""

    def __init__(self, run, jobs: int = 1):
        self.run, self.jobs, self.pool = run, jobs, None

    def __enter__(self):
        _init(self.run)
        if self.jobs > 1:
            self.pool = ProcessPoolExecutor(self.jobs, initializer=_init, initargs=(self.run,))
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
        return False

    def bound(self, batches):
        if self.pool is None:
            return map(_bound, batches)
        return self.pool.map(_bound, batches, chunksize=max(1, len(batches) // (8 * self.jobs)))

    def predict(self, layouts) -> list:
        if self.pool is None or len(layouts) == 1:
            return [_predict(lay) for lay in layouts]
        return list(self.pool.map(_predict, layouts))
