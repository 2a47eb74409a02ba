"""What a figure's CSV does not say itself, beside it: ``NAME.about.json`` holds the table's
title, its columns, the notes its caption reads (settings, units) and its totals, so the CSV
stays plain (a header, then the rows: any CSV reader takes it) and nothing the figure states is
lost. Strict JSON: a non-finite total is written as null."""
from __future__ import annotations

import json
import math
from pathlib import Path


def about_path(csv_path: Path) -> Path:
    """The sidecar of ``NAME.csv``: ``NAME.about.json`` beside it."""
    return csv_path.with_name(csv_path.stem + ".about.json")


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def write_about(table, csv_path: Path) -> Path:
    """Write ``table``'s title, columns, notes and totals beside its CSV; the path written."""
    path = about_path(csv_path)
    about = {"csv": csv_path.name, "title": table.title, "columns": list(table.columns),
             "notes": list(table.notes), "totals": table.totals}
    path.write_text(json.dumps(_finite(about), indent=2, allow_nan=False) + "\n")
    return path
