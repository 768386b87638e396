"""Run folders -> the comparison table: one row per run or per group of seeds (mean, std,
n), sorted, with deltas against a baseline. Pure pandas: never imports torch, so it starts
fast. Reading run folders lives in :mod:`gradlab.reading`, rendering in :mod:`gradlab.exports`.

Python API::

    import gradlab
    runs = gradlab.load_runs(["runs/"])          # one row per run
    steps = gradlab.load_steps(runs.path[0])     # one row per optimizer step
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

from gradlab.reading import (  # noqa: F401  (the public names of compare)
    IDENTITY,
    METRICS,
    STATUS,
    CompareError,
    load_evals,
    load_runs,
    load_steps,
)

DEFAULT_SORT = "final_test_accuracy"
# config keys that the identity columns already show, or that differ by design within a group
_SHOWN_ELSEWHERE = {"name", "seed", "edit", "data.name"}
_CONFIG_SECTIONS = {"data", "model", "optim", "train", "diagnostics"}


# --------------------------------------------------------------------------- groups


def should_group(df: pd.DataFrame) -> bool:
    """Group by default when some configuration was run with more than one seed."""
    return bool(len(df)) and bool(df["group"].duplicated().any())


def group_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Runs whose resolved configs differ only in seed and name become one row: the mean of
    every metric in its own column, the sample standard deviation in ``<metric>.std``, the
    number of runs in ``n``, the seeds in ``seed`` and the run folders in ``paths``."""
    rows = []
    for _, members in df.groupby("group", sort=False):
        first = members.iloc[0]
        row: dict[str, Any] = {
            "run": first["run"] if len(members) == 1 else f"{len(members)} runs",
            "name": _joined(members["name"]),
            "edits": first["edits"],
            "dataset": first["dataset"],
            "seed": ",".join(str(s) for s in sorted(members["seed"])),
            "n": len(members),
        }
        for metric in METRICS:
            values = members[metric].dropna()
            row[metric] = values.mean() if len(values) else math.nan
            row[f"{metric}.std"] = values.std(ddof=1) if len(values) > 1 else math.nan
        counts = members[STATUS].value_counts()
        row[STATUS] = (
            counts.index[0]
            if len(counts) == 1
            else ", ".join(f"{n} {status}" for status, n in counts.items())
        )
        row["paths"] = list(members["path"])
        row["group"] = first["group"]
        for column in df.columns:
            if column not in row and column != "path":
                row[column] = first[column]
        rows.append(row)
    return pd.DataFrame(rows)


def _joined(values: pd.Series) -> str:
    unique = list(dict.fromkeys(str(v) for v in values))
    return unique[0] if len(unique) == 1 else "|".join(unique)


# --------------------------------------------------------------------------- the table


def default_ascending(column: str) -> bool:
    """Losses and norms sort smallest first; accuracies and everything else largest first."""
    return "loss" in column or "grad_norm" in column


def comparison(
    df: pd.DataFrame,
    group: bool | None = None,
    sort_by: str = DEFAULT_SORT,
    ascending: bool | None = None,
    metrics: list[str] | None = None,
    baseline: str | None = None,
) -> pd.DataFrame:
    """The comparison table as a DataFrame with exactly the columns to show, sorted.

    Args:
        df: from :func:`load_runs`.
        group: merge seeds into mean/std rows; None = when some configuration repeats.
        sort_by: a column of the table (metric or config key).
        ascending: None = by the column's kind (see :func:`default_ascending`).
        metrics: metric (or config) columns to show instead of :data:`METRICS`.
        baseline: a run's ``name`` or folder name (or a group's name); adds
            ``delta.<sort_by>``, the difference to that row.
    """
    if df.empty:
        raise CompareError("no runs to compare")
    grouped = should_group(df) if group is None else group
    table = group_runs(df) if grouped else df.copy()
    chosen = list(metrics) if metrics else list(METRICS)
    unknown = [m for m in [*chosen, sort_by] if m not in table.columns]
    if unknown:
        valid = [c for c in table.columns if c not in ("path", "paths", "group")]
        raise CompareError(f"unknown column {unknown[0]!r}; columns: {', '.join(valid)}")

    differing = [
        c
        for c in table.columns
        if "." in c
        and c not in chosen
        and c.split(".")[-1] != "std"
        and c not in _SHOWN_ELSEWHERE
        and table[c].astype(str).nunique() > 1
    ]
    columns = [*IDENTITY, *(["n"] if grouped else []), *differing]
    for metric in chosen:
        columns.append(metric)
        if grouped and f"{metric}.std" in table.columns:
            columns.append(f"{metric}.std")
    if sort_by not in columns:
        columns.append(sort_by)
    columns.append(STATUS)

    order = default_ascending(sort_by) if ascending is None else ascending
    table = table.sort_values(sort_by, ascending=order, na_position="last", kind="stable")
    if baseline is not None:
        reference = _baseline_row(table, baseline)
        table[f"delta.{sort_by}"] = table[sort_by] - reference[sort_by]
        columns.insert(
            columns.index(sort_by) + 1 + (f"{sort_by}.std" in columns), f"delta.{sort_by}"
        )
    out = table[list(dict.fromkeys(columns))].reset_index(drop=True)
    out.attrs["grouped"] = grouped
    out.attrs["paths"] = list(table["paths"] if grouped else table["path"].map(lambda p: [p]))
    return out


def _baseline_row(table: pd.DataFrame, baseline: str) -> pd.Series:
    matches = table[(table["name"] == baseline) | (table["run"] == baseline)]
    if len(matches) == 1:
        return matches.iloc[0]
    names = ", ".join(dict.fromkeys(str(n) for n in table["name"]))
    if matches.empty:
        raise CompareError(f"--baseline {baseline!r} matches no row; names: {names}")
    raise CompareError(
        f"--baseline {baseline!r} matches {len(matches)} rows; name one run folder instead"
    )


def constant_columns(table: pd.DataFrame, keep: Iterable[str] = ()) -> dict[str, Any]:
    """Columns whose value is the same in every row (for a header line above the table);
    never the run names, the columns in ``keep``, or anything when there is one row."""
    if len(table) < 2:
        return {}
    fixed = {}
    for column in table.columns:
        if column in ("run", "name", *keep):
            continue
        values = table[column]
        if values.isna().all() or (values.notna().all() and values.astype(str).nunique() == 1):
            fixed[column] = values.iloc[0]
    return fixed
