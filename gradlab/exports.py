"""The comparison table as text: human cells (table, Markdown) and raw exports (CSV, JSON).

Column names are never changed, whatever the format.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from gradlab.compare import constant_columns


def _number(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _number(value.item())
    return value


def to_records(table: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: _number(v) for k, v in row.items()} for row in table.to_dict(orient="records")]


def export(table: pd.DataFrame, fmt: str) -> str:
    """``csv`` or ``json`` text of the table: raw numbers, every column, names unchanged."""
    if fmt == "csv":
        return table.to_csv(index=False, float_format="%.10g")
    if fmt == "json":
        return json.dumps(to_records(table), indent=2) + "\n"
    raise ValueError(fmt)


def format_value(column: str, value: Any) -> str:
    """Human text of one cell: 4 decimals for losses and accuracies, integers for steps."""
    value = _number(value)
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    metric = column.removeprefix("delta.")
    if metric in ("steps", "n") or (metric == "seed" and float(value).is_integer()):
        text = f"{value:.0f}"
    elif metric == "steps_per_second":
        text = f"{value:,.0f}"
    elif "accuracy" in metric or "loss" in metric or metric.endswith("_frac"):
        text = f"{value:.4f}"
    else:
        text = f"{value:.4g}"
    return ("+" if column.startswith("delta.") and value >= 0 else "") + text


def display(table: pd.DataFrame) -> tuple[list[str], list[list[str]], dict[str, str]]:
    """Headers, rows of text and the constant columns' text, for a table or Markdown.

    A metric and its ``.std`` column become one cell, ``mean ± std``.
    """
    columns = [c for c in table.columns if not c.endswith(".std")]
    if "name" in table.columns and not table[["name", "seed"]].astype(str).duplicated().any():
        columns.remove("run")  # the name (and seed) already tell the rows apart
    constants = {
        k: format_value(k, v) for k, v in constant_columns(table[columns], keep=("status",)).items()
    }
    shown = [c for c in columns if c not in constants]
    rows = []
    for _, row in table.iterrows():
        cells = []
        for column in shown:
            text = format_value(column, row[column])
            std = row.get(f"{column}.std")
            if std is not None and _number(std) is not None:
                text += f" ± {format_value(column, std)}"
            cells.append(text)
        rows.append(cells)
    return shown, rows, constants


def to_markdown(table: pd.DataFrame) -> str:
    headers, rows, constants = display(table)
    lines = []
    if constants:
        lines += [" · ".join(f"{k}: {v}" for k, v in constants.items()), ""]

    def cells(values: list[str]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"

    lines.append(cells(headers))
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    lines += [cells(r) for r in rows]
    return "\n".join(lines) + "\n"
