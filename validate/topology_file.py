"""The calibrated topology file: the user's own topology YAML (or a fresh one for this machine)
with the fitted values written in, every other key and comment kept (ruamel.yaml round trip).

Each fitted key's comment says what it was fitted on and its standard error; the file's header
says which run wrote it. No torch here.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

from atomic import write_text_atomic
from tpsim.calibrate.fitting import yaml_location
from tpsim.cluster.topology import Topology


def _yaml():
    from ruamel.yaml import YAML
    y = YAML()
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)
    return y


def _round(x: float) -> float:
    """Six significant digits: what a person reads, and enough for the model."""
    return float(f"{x:.6g}")


def fresh_topology_text(name: str, description: str, device: dict, levels: list[dict]) -> str:
    """A topology YAML in tpsim's schema for a machine no file describes (values in YAML units;
    the fitted keys are overwritten with their comments by :func:`write_calibrated`)."""
    from ruamel.yaml.comments import CommentedMap
    dev = CommentedMap(device)
    for key, value in device.items():
        if isinstance(value, dict):              # peak_tflops: {fp32: ...} on one line
            dev[key] = CommentedMap(value)
            dev[key].fa.set_flow_style()
    doc = CommentedMap(name=name, description=description, device=dev,
                       levels=[CommentedMap(lv) for lv in levels])
    out = io.StringIO()
    _yaml().dump(doc, out)
    return out.getvalue()


def _set(node, keys: list, value, comment: str) -> None:
    """Set ``node[k0][k1]... = value``, making missing mappings, with an end-of-line comment."""
    from ruamel.yaml.comments import CommentedMap
    for key in keys[:-1]:
        if not isinstance(key, int) and key not in node:
            node[key] = CommentedMap()
        node = node[key]
    node[keys[-1]] = value
    if comment and hasattr(node, "yaml_add_eol_comment"):
        _replace_eol_comment(node, keys[-1], comment)


def _replace_eol_comment(node, key, comment: str) -> None:
    """Replace ``key``'s end-of-line comment (and its continuation lines, indented to the same
    column), keeping the full-line comments after it that introduce the next keys (ruamel.yaml
    attaches them to this key)."""
    old = node.ca.items.get(key)
    token = old[2] if old and len(old) > 2 else None
    after = []
    if token is not None:
        for line in token.value.split("\n")[1:]:
            if line.strip() and len(line) - len(line.lstrip()) < token.column:
                after.append(line)
    node.yaml_add_eol_comment(comment, key)
    if after:
        new = node.ca.items[key][2]
        new.value = new.value.rstrip("\n") + "\n" + "\n".join(after) + "\n"


def write_calibrated(source_text: str, topo: Topology, updates: list[tuple[str, float, str]],
                     header: list[str], path: str | Path, dtype_peak: tuple | None = None) -> Path:
    """Write ``source_text`` with each ``(parameter path, SI value, comment)`` set at its YAML key
    (unit from the schema: :func:`tpsim.calibrate.fitting.yaml_location`) to ``path``.

    ``dtype_peak``: ``(dtype, FLOP/s, comment)`` written into ``device.peak_tflops``. The header
    lines replace the file's opening comment; every other key and comment stays as it was.
    """
    y = _yaml()
    doc = y.load(source_text)
    for param, value, comment in updates:
        keys, scale = yaml_location(topo, param)
        _set(doc, keys, _round(value / scale), comment)
    if dtype_peak is not None:
        dtype, flops, comment = dtype_peak
        peaks = doc["device"].setdefault("peak_tflops", {})
        peaks[dtype] = _round(flops / 1e12)
        _replace_eol_comment(doc["device"], "peak_tflops", comment)
    if header:
        doc.yaml_set_start_comment("\n".join(header))
    out = io.StringIO()
    y.dump(doc, out)
    return write_text_atomic(path, out.getvalue())     # whole or not at all


def fitted_comment(stderr: float, value: float, at_bound: bool, on: str, scale: float,
                   unit: str) -> str:
    """'fitted on <on>: +- <se> <unit> (1 s.e.)', or a note that it ended on its bound."""
    if at_bound:
        return f"fitted on {on}; ended on its bound"
    if math.isinf(stderr):
        return f"not determined by {on} (no point depends on it): left as it was"
    if not math.isfinite(stderr):
        return f"fitted on {on}"
    rel = f", {100 * stderr / abs(value):.0f}%" if abs(value) > stderr / 10 else ""
    return f"fitted on {on}: +- {_round(stderr / scale):g}{unit} (1 s.e.{rel})"
