"""The search prices the model's multi-token prediction as predict does by default (in the last
virtual stage): each layout's bound at most predict's step, its memory predict's, with the
embedding's copy (pp > 1), eh_proj and the norms on the last stage."""
from __future__ import annotations

import dataclasses

from tpsim.spec.model import load_model, with_overrides

from .bounds import check_bounds
from .test_combos_search import _priced


def test_mtp_bounds_below_and_memory_is_predicts():
    model = dataclasses.replace(with_overrides(load_model("llama3-8b"), layers=4), mtp_layers=1)
    run, layouts, _, priced = _priced(model, "dgx-h100", 4096, 8, 8,
                                      {"pp": (1, 2), "micro_batch": 1, "recompute": "none",
                                       "tp": (2, 4), "zero": (0, 1)})
    assert {lay.pp for lay in layouts} == {1, 2}
    check_bounds(run, layouts, priced, 8)


def test_a_fixed_mtp_setting_is_the_runs_as_predicts():
    """--mtp-layers held fixed sets what every layout trains: 0 prices the model without its
    MTP (the search's best equals the same model's with mtp_layers 0), and each candidate is
    predict's with the same setting."""
    from tpsim.search.driver import search
    from tpsim.training.predict import predict
    model = dataclasses.replace(with_overrides(load_model("llama3-8b"), layers=4), mtp_layers=1)
    kw = dict(seq_len=1024, pins={"pp": (1, 2), "tp": (2,), "micro_batch": (1,)})
    off = search(model, "dgx-h100", 8, 8, top=1, fixed={"mtp_layers": 0}, **kw)
    bare = search(dataclasses.replace(model, mtp_layers=0), "dgx-h100", 8, 8, top=1, **kw)
    on = search(model, "dgx-h100", 8, 8, top=1, **kw)
    assert off.candidates[0].step_s == bare.candidates[0].step_s < on.candidates[0].step_s
    best = off.candidates[0].layout
    p = predict(model, "dgx-h100", seq_len=1024, global_batch=8, **best.predict_kwargs())
    assert p.step.time_s == off.candidates[0].step_s
