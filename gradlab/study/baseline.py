"""The baseline of a comparison: which row it is, and every other row tested against it.

``--baseline`` names the reference row by name, by run folder, or by selectors
``KEY=VALUE`` over any column (``optim.lr=0.1``, ``edits=none``; several joined by commas
must all hold). It must match exactly one row.

Grouped, each other row gets, on the compared metric (group minus baseline):
``delta.<metric>`` with its interval ``.ci_low`` / ``.ci_high``, ``p_value``,
``p_adjusted`` (Holm-Bonferroni over the rows tested), ``test`` (``paired`` when both rows
ran the same seeds, else ``welch``), ``n_pairs`` and ``seeds_needed`` (see
:mod:`gradlab.study.stats`). Ungrouped, only ``delta.<metric>``.
"""

from __future__ import annotations

import math
import numbers
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gradlab.errors import CompareError
from gradlab.study.reading import is_observation

TEST_COLUMNS = ("p_value", "p_adjusted", "test", "n_pairs", "seeds_needed")
_SELECTOR = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*=(.*)$")


# --------------------------------------------------------------------------- selection


def parse_selectors(spec: str) -> list[tuple[str, str]] | None:
    """``"optim.lr=0.1,edits=none"`` -> ``[("optim.lr", "0.1"), ("edits", "none")]``;
    None when ``spec`` is a plain name. A comma starts a new selector only before
    ``KEY=``, so values may hold commas."""
    if not _SELECTOR.match(spec):
        return None
    parts = re.split(r",(?=\s*[A-Za-z_][\w.]*\s*=)", spec)
    return [(m.group(1), m.group(2).strip()) for m in map(_SELECTOR.match, parts) if m]


def _matches(value: Any, wanted: str) -> bool:
    """Whether a cell holds the selector's value: numbers compared as numbers (``1e-3``
    equals ``0.001``), booleans as booleans, everything else as text. A group's cell that
    joins its members' values (``100|7``) matches any of them."""
    if isinstance(value, str):
        if value == wanted:
            return True
        if "|" in value:
            return any(_matches(part, wanted) for part in value.split("|"))
    number = _as_number(wanted)
    if number is not None and isinstance(value, numbers.Real) and not isinstance(value, bool):
        return math.isclose(float(value), number, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower() == wanted.strip().lower()
    if wanted.strip().lower() in ("", "null", "none", "~") and _missing(value):
        return True
    if isinstance(value, str) and number is not None:
        return _as_number(value) == number
    return str(value) == wanted.strip()


def _as_number(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def select_baseline(table: pd.DataFrame, spec: str) -> int:
    """The index of the one row of ``table`` that ``spec`` names.

    Raises:
        CompareError: no row or several rows match (the line lists the candidates), or a
            selector names no column.
    """
    selectors = parse_selectors(spec)
    if selectors is None:
        names = table["name"].map(lambda n: str(n).split("|"))  # a group may join names
        mask = names.map(lambda parts: spec in parts) | (table["run"] == spec)
        members = table["members"] if "members" in table else table["path"].map(lambda p: [p])
        mask |= members.map(lambda paths: any(_is_folder(p, spec) for p in paths))
    else:
        mask = pd.Series(True, index=table.index)
        for key, wanted in selectors:
            if key not in table.columns:
                raise CompareError(
                    f"baseline {spec!r}: no column {key!r}; use a config key (optim.lr), "
                    "name, edits, dataset or run",
                    argument="baseline",
                )
            mask &= table[key].map(lambda v, w=wanted: _matches(v, w))
    matches = table.index[mask]
    if len(matches) == 1:
        return int(matches[0])
    if len(matches) == 0:
        names = ", ".join(dict.fromkeys(str(n) for n in table["name"]))
        raise CompareError(f"baseline {spec!r} matches no row; names: {names}", argument="baseline")
    candidates = "; ".join(_describe(table, i) for i in matches[:6])
    more = f"; and {len(matches) - 6} more" if len(matches) > 6 else ""
    hint = (
        "narrow it with selectors over the columns that differ, e.g. 'name=baseline,optim.lr=0.1'"
        if "members" in table
        else "name one run folder, or add seed=N to the selectors"
    )
    raise CompareError(
        f"baseline {spec!r} matches {len(matches)} rows: {candidates}{more}; {hint}",
        argument="baseline",
    )


def _is_folder(path: str, spec: str) -> bool:
    """Whether ``spec`` names the run folder ``path``: by its name, or as a path (relative
    or absolute) to the same folder."""
    folder, target = Path(path), Path(spec)
    if folder.name == spec:
        return True
    return target.name == folder.name and target.exists() and target.resolve() == folder.resolve()


def _describe(table: pd.DataFrame, index: int) -> str:
    """A candidate row: its name, up to three config columns that tell rows apart and, for
    single runs, the seed and the folder (what a selector or the folder name can use)."""
    row = table.loc[index]
    differing = [
        c
        for c in table.columns
        if (c.split(".")[0] in ("optim", "model", "data", "train", "resolved") or c == "edits")
        and table[c].map(str).nunique() > 1
    ][:3]
    detail = [f"{c}={row[c]}" for c in differing]
    if "members" not in table:
        detail += [f"seed={row['seed']}", f"run={row['run']}"]
    return f"{row['name']}" + (f" ({', '.join(detail)})" if detail else "")


# --------------------------------------------------------------------------- tests


def _per_seed(df: pd.DataFrame, paths: list[str], metric: str) -> dict[int, float]:
    """seed -> value of ``metric`` for the observations among ``paths``."""
    rows = df[df["path"].isin(paths) & is_observation(df)]
    return {int(seed): float(value) for seed, value in zip(rows["seed"], rows[metric], strict=True)}


def add_tests(
    table: pd.DataFrame, df: pd.DataFrame, reference: int, metric: str, grouped: bool, level: float
) -> list[str]:
    """Add the baseline's columns to ``table`` (in place); returns their names, in order."""
    delta = f"delta.{metric}"
    table[delta] = table[metric] - table.at[reference, metric]
    if not grouped:
        return [delta]
    from gradlab.study.stats import compare_to_baseline, holm

    base = _per_seed(df, table.at[reference, "members"], metric)
    results: dict[str, list[Any]] = {k: [] for k in ("ci_low", "ci_high", *TEST_COLUMNS, "delta")}
    for index in table.index:
        if index == reference:
            values: dict[str, Any] = dict.fromkeys(results, math.nan)
            values.update(test="baseline", delta=0.0 if base else math.nan)
        else:
            diff = compare_to_baseline(
                _per_seed(df, table.at[index, "members"], metric), base, level
            )
            values = {k: getattr(diff, k) for k in results if k != "p_adjusted"}
            values["p_adjusted"] = math.nan
        for key, value in values.items():
            results[key].append(value)
    results["p_adjusted"] = holm(results["p_value"])
    table[delta] = results["delta"]  # the mean of paired differences, or of group means
    table[f"{delta}.ci_low"] = results["ci_low"]
    table[f"{delta}.ci_high"] = results["ci_high"]
    for key in TEST_COLUMNS:
        table[key] = results[key]
    table.attrs["baseline_empty"] = not base
    return [delta, f"{delta}.ci_low", f"{delta}.ci_high", *TEST_COLUMNS]
