"""Results as plain CSV (``--csv`` of ``tpsim predict``, ``search`` and ``infer``): a header,
then one row per result, no comment lines, so any CSV reader takes it as it is. The columns are
the ``--json`` object's scalar keys, nested objects flattened with dots (``step.time_s``); lists
are left out (a row holds one result: ``tpsim search`` gives a row per candidate)."""
from __future__ import annotations

import csv
import io


def flatten(obj: dict, prefix: str = "") -> dict:
    """The scalars of a JSON object by dotted key, in its order; lists left out."""
    out = {}
    for k, v in obj.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        elif not isinstance(v, (list, tuple)):
            out[f"{prefix}{k}"] = v
    return out


def csv_text(objects) -> str:
    """The CSV of JSON objects, one row each: the keys of all of them as columns, in the order
    first seen; a key an object lacks (or a null) is an empty cell."""
    rows = [flatten(o) for o in objects]
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().rstrip("\n")
