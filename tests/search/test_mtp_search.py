"""The search prices the model's multi-token prediction as predict does by default (in the last
virtual stage): each layout's bound at most predict's step, its memory predict's, with the
embedding's copy (pp > 1), eh_proj and the norms on the last stage."""
from __future__ import annotations

import dataclasses

from tpsim.spec.model import load_model, with_overrides

from .test_combos_search import _check_against_predict, _priced


def test_mtp_bounds_below_and_memory_is_predicts():
    model = dataclasses.replace(with_overrides(load_model("llama3-8b"), layers=4), mtp_layers=1)
    run, layouts, _, priced = _priced(model, "dgx-h100", 4096, 8, 8,
                                      {"pp": (1, 2), "micro_batch": 1, "recompute": "none",
                                       "tp": (2, 4), "zero": (0, 1)})
    assert {lay.pp for lay in layouts} == {1, 2}
    _check_against_predict(run, layouts, priced, 8)
