"""Fuzz: mutated topology and model YAML files (keys deleted, values replaced by other types,
extreme numbers, strings) either predict finite, positive times with MFU in (0, 1], or raise one
TpsimError with a one-line message of bounded length; nothing else (no TypeError, OverflowError,
ZeroDivisionError, RecursionError, hang or NaN)."""
from __future__ import annotations

import json
import math

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tpsim.cli.common import dump_json
from tpsim.errors import TpsimError
from tpsim.model import shipped_models
from tpsim.predict import predict
from tpsim.render import prediction_json
from tpsim.topology import shipped_topologies

TOPOLOGY = yaml.safe_load(shipped_topologies()["dgx-h100-ndr-cluster"].read_text())
MODEL = yaml.safe_load(shipped_models()["gpt3-350m"].read_text())

EXTREMES = [0, -1, 1, 2**31, 2**63, 10**20, 10**400, -10**400, 1e-300, 1e-9, 0.5, 1e300, 1e15,
            float("inf"), float("-inf"), float("nan"), "", "x", "1e400", "fast", True, None,
            [], {}, [1, 2], {"a": 1}]
VALUES = st.one_of(st.sampled_from(EXTREMES), st.integers(), st.floats(),
                   st.text(max_size=12), st.booleans())


def _paths(node, prefix=()):
    """Every key path (dict keys, list indices) inside a parsed YAML document."""
    items = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else ()
    for k, v in items:
        yield (*prefix, k)
        yield from _paths(v, (*prefix, k))


def _mutate(doc, path, action, value):
    """A deep copy of ``doc`` with ``path`` deleted or its value replaced."""
    out = json.loads(json.dumps(doc))
    parent = out
    for k in path[:-1]:
        parent = parent[k]
    if action == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return out


def mutations(doc):
    paths = list(_paths(doc))
    one = st.tuples(st.sampled_from(paths), st.sampled_from(["delete", "replace"]), VALUES)
    return st.lists(one, min_size=0, max_size=3)


def _apply(doc, changes):
    for path, action, value in changes:
        try:
            doc = _mutate(doc, path, action, value)
        except (KeyError, IndexError, TypeError):     # an earlier change removed the path
            pass
    return doc


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topo_changes=mutations(TOPOLOGY), model_changes=mutations(MODEL),
       tp=st.sampled_from([1, 2, 8, 16]), micro_batch=st.sampled_from([1, 4]))
def test_mutated_files_predict_or_raise_one_tpsim_error(tmp_path_factory, topo_changes,
                                                        model_changes, tp, micro_batch):
    d = tmp_path_factory.mktemp("fuzz")
    topo, model = d / "topo.yaml", d / "model.yaml"
    topo.write_text(yaml.safe_dump(_apply(TOPOLOGY, topo_changes), allow_unicode=True))
    model.write_text(yaml.safe_dump(_apply(MODEL, model_changes), allow_unicode=True))
    try:
        p = predict(str(model), str(topo), tp=tp, micro_batch=micro_batch)
    except TpsimError as e:
        text = str(e)
        assert "\n" not in text and len(text) < 1500, text
        return
    layer, whole = p.layer, p.model
    for name in ("forward_s", "backward_s", "total_s", "compute_s"):
        assert math.isfinite(getattr(layer, name)) and getattr(layer, name) > 0, name
    assert math.isfinite(whole.step_s) and whole.step_s > 0
    assert 0 < whole.mfu <= 1, whole.mfu
    json.loads(dump_json(prediction_json(p)))            # strict JSON: no NaN or Infinity
