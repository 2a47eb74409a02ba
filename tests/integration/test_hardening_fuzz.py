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
from tpsim.base.errors import TpsimError
from tpsim.spec.model import shipped_models
from tpsim.training.predict import predict
from tpsim.report.render import prediction_json
from tpsim.cluster.topology import shipped_topologies

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


def _numeric_paths(doc):
    """Paths of the numbers in a document, each with its type."""
    out = []
    for path in _paths(doc):
        node = doc
        for k in path:
            node = node[k]
        if isinstance(node, (int, float)) and not isinstance(node, bool):
            out.append((path, type(node)))
    return out


def numeric_extremes(doc):
    """Numbers replaced by others at the ends of what the loader accepts (1e-9 .. 1e15 in the
    key's unit, integers up to 2^31 - 1): most of these predict, at absurd sizes."""
    floats = st.one_of(st.sampled_from([0.0, 1e-9, 1.0, 1e15]),
                       st.floats(min_value=-9, max_value=15).map(lambda e: 10.0 ** e))
    ints = st.one_of(st.sampled_from([1, 2, 3, 64, 2**20, 2**31 - 1]),
                     st.integers(min_value=1, max_value=2**31 - 1))
    one = st.sampled_from(_numeric_paths(doc)).flatmap(
        lambda pt: st.tuples(st.just(pt[0]), st.just("replace"), ints if pt[1] is int else floats))
    return st.lists(one, min_size=1, max_size=4)


def _predict_or_raise(d, topo_doc, model_doc, **run):
    """The property: a prediction with finite, positive times and MFU in (0, 1], whose --json
    is strict JSON; or one TpsimError in one line of bounded length."""
    topo, model = d / "topo.yaml", d / "model.yaml"
    topo.write_text(yaml.safe_dump(topo_doc, allow_unicode=True))
    model.write_text(yaml.safe_dump(model_doc, allow_unicode=True))
    try:
        p = predict(str(model), str(topo), **run)
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


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topo_changes=mutations(TOPOLOGY), model_changes=mutations(MODEL),
       tp=st.sampled_from([1, 2, 8, 16]), micro_batch=st.sampled_from([1, 4]))
def test_mutated_files_predict_or_raise_one_tpsim_error(tmp_path_factory, topo_changes,
                                                        model_changes, tp, micro_batch):
    _predict_or_raise(tmp_path_factory.mktemp("fuzz"), _apply(TOPOLOGY, topo_changes),
                      _apply(MODEL, model_changes), tp=tp, micro_batch=micro_batch)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topo_changes=numeric_extremes(TOPOLOGY), model_changes=numeric_extremes(MODEL),
       tp=st.sampled_from([1, 2, 8, 16]), micro_batch=st.sampled_from([1, 4, 2**31 - 1]),
       seq_len=st.sampled_from([None, 1, 2**31 - 1]))
def test_extreme_numbers_predict_finite_times_or_raise(tmp_path_factory, topo_changes,
                                                       model_changes, tp, micro_batch, seq_len):
    _predict_or_raise(tmp_path_factory.mktemp("fuzz"), _apply(TOPOLOGY, topo_changes),
                      _apply(MODEL, model_changes), tp=tp, micro_batch=micro_batch,
                      seq_len=seq_len)



def test_the_ends_of_the_accepted_range_predict(tmp_path):
    """Not vacuous: at the edges the loader accepts (links and memory at 1e-9 GB/s = 1 B/s,
    2^31 - 1 sequences of 2^31 - 1 tokens) a prediction comes back, finite, and no faster than
    the all-reduces allow: each of 16 ranks sends at least S/16 of every all-reduce's
    S = b s h 2 bytes over its 1 B/s link, 4 all-reduces per layer, 24 layers: >= 6 S seconds."""
    topo = json.loads(json.dumps(TOPOLOGY))
    topo["device"]["memory_bandwidth_GBps"] = 1e-9
    for level in topo["levels"]:
        level["bandwidth_GBps"] = 1e-9
    p = predict(MODEL["name"], _write(tmp_path, topo), tp=16, micro_batch=2**31 - 1,
                seq_len=2**31 - 1)
    S = (2**31 - 1) ** 2 * MODEL["hidden"] * 2
    assert math.isfinite(p.model.step_s) and p.model.step_s >= 24 * 4 * S / 16
    assert 0 < p.model.mfu <= 1 and p.inputs.dtype == "bf16"


def _write(d, doc):
    path = d / "t.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)
