"""The comparison table as text: human cells (table, Markdown) and raw exports (CSV, JSON).

Column names are never changed, whatever the format.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from gradlab.study import numbers
from gradlab.study.compare import constant_columns, is_config_column
from gradlab.study.reading import IDENTITY
from gradlab.text import markdown, one_line


def _number(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _number(value.item())
    return value


def _json_value(value: Any) -> Any:
    """JSON has no infinity (epsilon without noise): ``"inf"`` / ``"-inf"`` instead."""
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
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
        records = [{k: _json_value(v) for k, v in r.items()} for r in to_records(table)]
        return json.dumps(records, indent=2, allow_nan=False) + "\n"
    raise ValueError(fmt)


SIGNIFICANCE = 0.05
HIDDEN_SUFFIXES = (".std", ".ci_low", ".ci_high")
P_VALUES = ("p_value", "p_adjusted")


def significant(table: pd.DataFrame) -> list[bool]:
    """Rows whose test against the baseline has ``p_adjusted`` below 0.05."""
    if "p_adjusted" not in table.columns:
        return [False] * len(table)
    return [bool(p < SIGNIFICANCE) for p in table["p_adjusted"].fillna(1.0)]


def column_values(table: pd.DataFrame, column: str) -> list[Any]:
    """The column's values as plain Python values (None where missing; every row None when
    the table has no such column)."""
    if column not in table.columns:
        return [None] * len(table)
    return [_number(v) for v in table[column]]


def half_widths(table: pd.DataFrame, column: str) -> list[Any]:
    """Half the width of each row's confidence interval of ``column`` (None without one)."""
    lows, highs = (
        column_values(table, f"{column}.ci_low"),
        column_values(table, f"{column}.ci_high"),
    )
    return [
        None if low is None or high is None else (high - low) / 2
        for low, high in zip(lows, highs, strict=True)
    ]


def column_cells(table: pd.DataFrame, column: str, spread: str = "ci") -> list[str]:
    """The human text of one column, every row at one precision (:mod:`gradlab.study.numbers`).

    A grouped measurement is ``mean ± u`` (``u`` the confidence half-width, or the standard
    deviation with ``spread="std"``), a delta against the baseline ``delta [low, high]``,
    a p-value two significant digits; config values and text as written.
    """
    values = column_values(table, column)
    numeric = pd.api.types.is_numeric_dtype(table[column]) and not pd.api.types.is_bool_dtype(
        table[column]
    )
    if not numeric:
        return ["-" if v is None else str(v) for v in values]
    if column in P_VALUES:
        return [numbers.p_value_text(v) for v in values]
    if is_config_column(column):  # as the config says it: 0.1, 1e-05, 128
        return [
            "-" if v is None else format(v, "g") if isinstance(v, float) else str(v) for v in values
        ]
    delta = column.startswith("delta.")
    if delta or spread == "ci":
        shown = half_widths(table, column)
    else:
        shown = column_values(table, f"{column}.std")
    fmt = numbers.column_format(values, shown, sign=delta)
    cells = []
    for value, u, (low, high) in zip(
        values,
        shown,
        zip(
            column_values(table, f"{column}.ci_low"),
            column_values(table, f"{column}.ci_high"),
            strict=True,
        ),
        strict=True,
    ):
        text = fmt(value)
        if value is None:
            pass
        elif delta and low is not None and high is not None:
            text += f" [{fmt(low)}, {fmt(high)}]"
        elif not delta and u is not None:
            text += f" ± {fmt.uncertainty(u)}"
        cells.append(text)
    return cells


def key_columns(headers: list[str], rows: list[list[str]]) -> int:
    """How many leading columns name the rows: the first, then the next identity or config
    columns (``edits``, ``seed``, ``optim.lr``, ...) until the rows read differently."""
    k = 1
    identifying = set(IDENTITY) | {"n"}
    while (
        k < len(headers)
        and len({tuple(r[:k]) for r in rows}) < len(rows)
        and (
            headers[k] in identifying
            or is_config_column(headers[k])
            or headers[k].startswith("resolved.")
        )
    ):
        k += 1
    return k


def display(
    table: pd.DataFrame, spread: str = "ci", power: bool = False
) -> tuple[list[str], list[list[str]], dict[str, str]]:
    """Headers, rows of text and the constant columns' text, for a table or Markdown.

    Every text is one line (:func:`gradlab.text.one_line`: a newline in a name is shown
    as ``\\n``). Grouped metrics become one cell: ``mean ± h`` with ``h`` the half-width of the
    confidence interval (``spread="ci"``) or the standard deviation (``"std"``); a delta
    against the baseline shows its interval ``[low, high]``; a significant ``p_adjusted``
    gets a ``*``. ``seeds_needed`` is shown only with ``power``. Every number of a column
    has the precision its uncertainty calls for (:mod:`gradlab.study.numbers`).
    """
    marks = significant(table)
    grouped = bool(table.attrs.get("grouped"))
    table = table.copy(deep=False)
    table.attrs = {}  # pandas deep-copies attrs (the run paths) on every operation
    columns = [c for c in table.columns if not c.endswith(HIDDEN_SUFFIXES)]
    if not power and "seeds_needed" in columns:
        columns.remove("seeds_needed")
    if "run" in columns and (
        grouped  # "3 runs": n says it
        or (
            "name" in table.columns
            and "seed" in table.columns
            and not table[["name", "seed"]].astype(str).duplicated().any()
        )
    ):
        columns.remove("run")  # the name (and seed) already tell the rows apart
    cells = {c: column_cells(table, c, spread) for c in columns}
    constants = {}
    for k in constant_columns(table[columns], keep=("status", "test", "p_adjusted")):
        spread_free = not any(column_values(table, f"{k}.std"))  # every run the same: no ± 0
        constants[k] = cells[k][0].split(" ± ")[0] if spread_free else cells[k][0]
    shown = [c for c in columns if c not in constants]
    if "p_adjusted" in cells:
        cells["p_adjusted"] = [
            text + (" *" if mark else "")
            for text, mark in zip(cells["p_adjusted"], marks, strict=True)
        ]
    rows = [[one_line(cells[c][i]) for c in shown] for i in range(len(table))]
    constants = {one_line(k): one_line(v) for k, v in constants.items()}
    return [one_line(c) for c in shown], rows, constants


def notes(table: pd.DataFrame, spread: str = "ci", shown: list[str] | None = None) -> list[str]:
    """The lines that say how to read the table: what ± means (when a column of ``shown``,
    default every column, has one), the tests, the marks."""
    lines = []
    shown = list(table.columns) if shown is None else shown
    has_spread = any(f"{c}.ci_low" in table.columns for c in shown if not c.startswith("delta."))
    if table.attrs.get("grouped") and has_spread:
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
        if "test" in table.columns and (table["test"] == "none").any():
            lines.append(
                "test none: a value is infinite (epsilon without noise): no t-test, no interval"
            )
        if table.attrs.get("baseline_empty"):
            lines.append("the baseline has no completed run: no row could be tested against it")
    return lines


def to_markdown(table: pd.DataFrame, spread: str = "ci", power: bool = False) -> str:
    headers, rows, constants = display(table, spread, power)
    lines = []
    if constants:
        lines += [" · ".join(f"{markdown(k)}: {markdown(v)}" for k, v in constants.items()), ""]

    def cells(values: list[str]) -> str:
        return "| " + " | ".join(markdown(v) for v in values) + " |"

    lines.append(cells(headers))
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    lines += [cells(r) for r in rows]
    explained = notes(table, spread)
    if explained:
        lines += ["", *(line.replace("*", "\\*") for line in explained)]
    return "\n".join(lines) + "\n"
