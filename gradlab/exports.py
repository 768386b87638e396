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


COUNTS = ("n", "n_pairs", "seeds_needed", "steps")


def to_records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as plain JSON values: NaN as null, whole counts as integers."""
    records = []
    for row in table.to_dict(orient="records"):
        record = {k: _number(v) for k, v in row.items()}
        for key in COUNTS:
            value = record.get(key)
            if isinstance(value, float) and value.is_integer():
                record[key] = int(value)
        records.append(record)
    return records


def export(table: pd.DataFrame, fmt: str) -> str:
    """``csv`` or ``json`` text of the table: raw numbers, every column, names unchanged."""
    if fmt == "csv":
        return table.to_csv(index=False, float_format="%.10g")
    if fmt == "json":
        return json.dumps(to_records(table), indent=2) + "\n"
    raise ValueError(fmt)


SIGNIFICANCE = 0.05
HIDDEN_SUFFIXES = (".std", ".ci_low", ".ci_high")


def format_value(column: str, value: Any) -> str:
    """Human text of one cell: 4 decimals for losses and accuracies, integers for counts,
    two significant digits for p-values."""
    value = _number(value)
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    metric = column.removeprefix("delta.")
    if metric in ("steps", "n", "n_pairs", "seeds_needed") or (
        metric == "seed" and float(value).is_integer()
    ):
        text = f"{value:.0f}"
    elif metric in ("p_value", "p_adjusted"):
        text = f"{value:.2g}" if value >= 1e-4 else f"{value:.1e}"
    elif metric == "steps_per_second":
        text = f"{value:,.0f}"
    elif "accuracy" in metric or "loss" in metric or metric.endswith("_frac"):
        text = f"{value:.4f}"
    else:
        text = f"{value:.4g}"
    return ("+" if column.startswith("delta.") and value >= 0 else "") + text


def significant(table: pd.DataFrame) -> list[bool]:
    """Rows whose test against the baseline has ``p_adjusted`` below 0.05."""
    if "p_adjusted" not in table.columns:
        return [False] * len(table)
    return [bool(p < SIGNIFICANCE) for p in table["p_adjusted"].fillna(1.0)]


def display(
    table: pd.DataFrame, spread: str = "ci", power: bool = False
) -> tuple[list[str], list[list[str]], dict[str, str]]:
    """Headers, rows of text and the constant columns' text, for a table or Markdown.

    Grouped metrics become one cell: ``mean ± h`` with ``h`` the half-width of the
    confidence interval (``spread="ci"``) or the standard deviation (``"std"``); a delta
    against the baseline shows its interval ``[low, high]``; a significant ``p_adjusted``
    gets a ``*``. ``seeds_needed`` is shown only with ``power``.
    """
    marks = significant(table)
    table = table.copy(deep=False)
    table.attrs = {}  # pandas deep-copies attrs (the run paths) on every operation
    columns = [c for c in table.columns if not c.endswith(HIDDEN_SUFFIXES)]
    if not power and "seeds_needed" in columns:
        columns.remove("seeds_needed")
    if "name" in table.columns and not table[["name", "seed"]].astype(str).duplicated().any():
        columns.remove("run")  # the name (and seed) already tell the rows apart
    constants = {
        k: format_value(k, v)
        for k, v in constant_columns(table[columns], keep=("status", "test", "p_adjusted")).items()
    }
    shown = [c for c in columns if c not in constants]
    rows = []
    for mark, row in zip(marks, table.to_dict("records"), strict=True):
        cells = []
        for column in shown:
            text = format_value(column, row[column])
            if column.startswith("delta."):
                low, high = (_number(row.get(f"{column}{s}")) for s in (".ci_low", ".ci_high"))
                if low is not None and high is not None:
                    text += f" [{format_value(column, low)}, {format_value(column, high)}]"
            else:
                text += _spread(row, column, spread)
            if column == "p_adjusted" and mark:
                text += " *"
            cells.append(text)
        rows.append(cells)
    return shown, rows, constants


def _spread(row: dict[str, Any], column: str, spread: str) -> str:
    if spread == "std":
        std = _number(row.get(f"{column}.std"))
        return "" if std is None else f" ± {format_value(column, std)}"
    low, high = (_number(row.get(f"{column}{s}")) for s in (".ci_low", ".ci_high"))
    if low is None or high is None:
        return ""
    return f" ± {format_value(column, (high - low) / 2)}"


def notes(table: pd.DataFrame, spread: str = "ci") -> list[str]:
    """The lines that say how to read the table: what ± means, the tests, the marks."""
    lines = []
    if table.attrs.get("grouped"):
        level = table.attrs.get("ci", 0.95)
        lines.append(
            f"± = half-width of the {level * 100:g}% confidence interval of the mean over seeds "
            "(Student t; none for n = 1)"
            if spread == "ci"
            else "± = standard deviation over seeds"
        )
    if "p_adjusted" in table.columns:
        lines.append(
            "delta [interval] = row minus baseline; test: paired = per-seed differences "
            "(same seeds), welch = Welch's t-test; p_adjusted: Holm over the rows tested; "
            "* = p_adjusted < 0.05"
        )
        if table.attrs.get("baseline_empty"):
            lines.append("the baseline has no completed run: no row could be tested against it")
    return lines


def to_markdown(table: pd.DataFrame, spread: str = "ci", power: bool = False) -> str:
    headers, rows, constants = display(table, spread, power)
    lines = []
    if constants:
        lines += [" · ".join(f"{k}: {v}" for k, v in constants.items()), ""]

    def cells(values: list[str]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"

    lines.append(cells(headers))
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    lines += [cells(r) for r in rows]
    explained = notes(table, spread)
    if explained:
        lines += ["", *(line.replace("*", "\\*") for line in explained)]
    return "\n".join(lines) + "\n"
