"""tpsim.search.driver against a brute-force loop over tpsim.predict on small spaces: the same optimum,
the candidates' numbers are predict's, every bound is below its layout's simulated step, every
memory is predict's, and every dropped layout really cannot run for the reason given."""
import itertools
import math

import pytest

from tpsim.base.errors import ConfigError
from tpsim.spec.model import load_model, with_overrides
from tpsim.training.predict import predict
from tpsim.layer.recompute import RECOMPUTE
from tpsim.search.driver import (REASONS, Space, bound_layouts, divisors, enumerate_layouts,
                          equivalent, search, _run)
from tpsim.search.jobs import Workers

SPACES = [  # (model, layers, topology, gpus, global batch)
    ("gpt3-125m", 4, "dgx-a100", 8, 16),          # tied embeddings, tp 8 does not divide 12 heads
    ("llama3-8b", 4, "dgx-h100-ndr-cluster", 16, 8),   # GQA, two nodes: tp 16 spans them
]


@pytest.fixture(scope="module", params=SPACES, ids=lambda s: f"{s[0]}-{s[3]}gpus")
def space(request):
    name, layers, topo, gpus, gb = request.param
    model = with_overrides(load_model(name), layers=layers)
    run = _run(model, topo, None, None, None, gb)
    layouts, dropped = enumerate_layouts(run.model, run.topo, Space(gpus, gb), run.seq_len)
    with Workers(run) as w:
        priced = bound_layouts(w, layouts)
    sims = [predict(run.model, run.topo, seq_len=run.seq_len, dtype=run.dtype, global_batch=gb,
                    **lay.predict_kwargs()) for lay in layouts]
    return run, gpus, gb, layouts, dropped, priced, sims


def test_bounds_below_the_simulation_and_memory_exact(space):
    """Every layout: bound <= predict's step time; the fullest stage's bytes and fit are
    predict's."""
    run, gpus, gb, layouts, dropped, priced, sims = space
    for lay, (bound, nbytes, fits), p in zip(layouts, priced, sims):
        assert bound <= p.step.time_s * (1 + 1e-9), lay
        assert math.isclose(nbytes, p.memory.total_bytes, rel_tol=1e-12), lay
        assert fits == p.memory.fits, lay


def test_search_finds_the_brute_force_optimum(space):
    """The search's best k are the k fastest fitting layouts of the brute-force loop, with
    predict's numbers exactly; fewer layouts were simulated than exist."""
    run, gpus, gb, layouts, dropped, priced, sims = space
    result = search(run.model, run.topo, gpus, gb, top=5)
    distinct = {equivalent(run, lay): p for lay, p in zip(layouts, sims)}   # selective = none
    truth = sorted((p.step.time_s, str(lay)) for lay, p in distinct.items() if p.memory.fits)
    assert [c.step_s for c in result.candidates] == [t for t, _ in truth[:5]]
    for cand in result.candidates:
        p = predict(run.model, run.topo, seq_len=run.seq_len, dtype=run.dtype, global_batch=gb,
                    **cand.layout.predict_kwargs())
        assert cand.step == p.step and cand.memory == p.memory
    assert result.evaluated == len(layouts)
    assert result.fitting == sum(1 for p in sims if p.memory.fits)
    assert result.repriced < result.fitting


def test_dropped_layouts_cannot_run(space):
    """Every combination of the enumerated space that the search left out fails predict with a
    ConfigError (or puts TP across nodes); every layout dropped for memory does not fit; the
    counts add up."""
    run, gpus, gb, layouts, dropped, priced, sims = space
    kept = {(x.tp, x.pp, x.dp, x.virtual_stages, x.micro_batch, x.sequence_parallel,
             x.recompute, x.distributed_optimizer, x.tp_comm_overlap) for x in layouts}
    node, raw = run.topo.devices_per_node, 0
    for tp, pp in ((t, p) for t in divisors(gpus) for p in divisors(gpus // t)):
        dp = gpus // (tp * pp)
        vs = [1] + list(range(2, run.model.layers // pp + 1)) * (pp > 1)
        mbs = divisors(gb // dp) if gb % dp == 0 else [1]
        for v, mb, sp, rc, do in itertools.product(vs, mbs, (False, True), RECOMPUTE,
                                                   (False, True)):
            for ov in ((False, True) if sp else (False,)):
                if (sp and tp == 1) or (do and dp == 1):
                    continue                  # not enumerated: the knob does nothing there
                raw += 1
                if (tp, pp, dp, v, mb, sp, rc, do, ov) in kept or tp > node:
                    continue
                with pytest.raises(ConfigError):
                    predict(run.model, run.topo, tp=tp, pp=pp, dp=dp, virtual_stages=v,
                            micro_batch=mb, sequence_parallel=sp, recompute=rc,
                            distributed_optimizer=do, tp_comm_overlap=ov, global_batch=gb)
    assert raw == len(kept) + sum(n for k, n in dropped.items() if k != "memory")
    assert set(dropped) <= set(REASONS)
    unfit = sum(1 for p in sims if not p.memory.fits)
    assert unfit == sum(1 for _, _, fits in priced if not fits)


def test_bad_arguments_name_the_flag():
    for kwargs, flag in (({"gpus": 0}, "--gpus"), ({"global_batch": 2.5}, "--global-batch"),
                         ({"top": 0}, "--top"), ({"jobs": -1}, "--jobs"),
                         ({"gpus": 4096}, "--topology")):
        args = {"gpus": 8, "global_batch": 16, **kwargs}
        gpus, gb = args.pop("gpus"), args.pop("global_batch")
        with pytest.raises(ConfigError, match=flag):
            search("gpt3-125m", "dgx-a100", gpus, gb, **args)
