"""Run folders -> the comparison table: one row per run or per experiment (mean, std and
confidence interval over its seeds), sorted, with tests against a baseline. Pure pandas:
never imports torch, so it starts fast. Reading run folders lives in
:mod:`gradlab.study.reading`, the baseline and its tests in :mod:`gradlab.study.baseline`, the
statistics in :mod:`gradlab.study.stats`, rendering in :mod:`gradlab.study.exports`.

Python API::

    import gradlab
    table = gradlab.comparison(["runs/"], baseline="edits=none")  # what the CLI prints
    runs = gradlab.load_runs(["runs/"])          # one row per run
    steps = gradlab.load_steps(runs.path[0])     # one row per optimizer step
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from gradlab.errors import CompareError
from gradlab.study.reading import (
    IDENTITY,
    METRICS,
    RESUMED,
    STATUS,
    is_observation,
    load_runs,
)

DEFAULT_SORT = "final_test_accuracy"
# shown by default: every summary metric but the speed, which follows the machine's load
DEFAULT_METRICS = [m for m in METRICS if m != "steps_per_second"]
DEFAULT_CI = 0.95
_ONLY_WHEN_SET = {"epsilon"}
"""Default metrics shown only when some run has a value (epsilon: runs with privacy)."""
# config keys that the identity columns already show, or that differ by design within a group
_SHOWN_ELSEWHERE = {"name", "seed", "edit", "data.name", "privacy"}  # privacy.* tell more
_CONFIG_SECTIONS = {"data", "model", "optim", "train", "diagnostics", "privacy"}
_BOOKKEEPING = {
    STATUS, RESUMED, "path", "paths", "members", "group", "started", "duplicate_of", "n",
}  # fmt: skip
_SUFFIXES = (".std", ".ci_low", ".ci_high")
_STATUS_ORDER = [
    "completed",
    "duplicate",
    "running",
    "interrupted",
    "diverged",
    "crashed",
    "failed",
]


def is_config_column(column: str) -> bool:
    return column == "edit" or column.split(".")[0] in _CONFIG_SECTIONS


def metric_columns(df: pd.DataFrame) -> list[str]:
    """The per-run measurements: every numeric column that is not a config key, an identity
    column or bookkeeping (the summary's metrics, ``alerts.<kind>``, anything added later)."""
    return [
        c
        for c in df.columns
        if c not in IDENTITY
        and c not in _BOOKKEEPING
        and not is_config_column(c)
        and not c.startswith("resolved.")
        and not c.endswith(_SUFFIXES)
        and pd.api.types.is_numeric_dtype(df[c])
        and not pd.api.types.is_bool_dtype(df[c])
    ]


# --------------------------------------------------------------------------- groups


def should_group(df: pd.DataFrame) -> bool:
    """Group by default when some experiment was run with more than one seed."""
    return bool(len(df)) and bool(df["group"].duplicated().any())


def group_runs(df: pd.DataFrame, level: float = DEFAULT_CI) -> pd.DataFrame:
    """Runs of the same experiment (:mod:`gradlab.identity`) become one row.

    Only observations count (completed runs, one per seed: see
    :func:`gradlab.study.reading.is_observation`): every measurement column holds their mean,
    ``<column>.std`` the sample standard deviation, ``<column>.ci_low`` / ``.ci_high`` the
    Student t interval at ``level`` (empty for fewer than two), ``n`` their number and
    ``seed`` their seeds. ``status`` counts every member (``4 completed, 1 duplicate``);
    other columns hold the members' value, or their values joined by ``|`` when they differ.
    """
    from gradlab.study.stats import t_quantile_array

    metrics = metric_columns(df)
    observed = is_observation(df)
    obs = df[observed].groupby("group", sort=False)
    mean, std, count = obs[metrics].mean(), obs[metrics].std(ddof=1), obs[metrics].count()
    half = t_quantile_array(0.5 + level / 2, count - 1) * std / count.pow(0.5)
    half = half.where(count > 1)

    members = df.groupby("group", sort=False)
    keys = list(members.groups)
    rest = [
        c
        for c in df.columns
        if c not in metrics and c not in ("path", "started", "duplicate_of", "seed", "run", RESUMED)
    ]
    first = members[rest].head(1).set_index(df.loc[members.head(1).index, "group"])
    differ = members[rest].nunique(dropna=False) > 1
    rows = []
    for key in keys:
        group = df.loc[members.groups[key]]
        observations = group[observed.loc[group.index]]
        shown = observations if len(observations) else group
        row: dict[str, Any] = {
            "run": group["run"].iloc[0] if len(group) == 1 else f"{len(group)} runs",
            "seed": ",".join(str(s) for s in sorted(shown["seed"])),
            "n": len(observations),
        }
        for column in rest:
            row[column] = (
                _joined(group[column]) if differ.at[key, column] else first.at[key, column]
            )
        has_obs = key in mean.index
        for metric in metrics:
            m = mean.at[key, metric] if has_obs else math.nan
            h = half.at[key, metric] if has_obs else math.nan
            row[metric] = m
            row[f"{metric}.std"] = std.at[key, metric] if has_obs else math.nan
            row[f"{metric}.ci_low"], row[f"{metric}.ci_high"] = m - h, m + h
        row[STATUS] = _status_counts(group)
        if RESUMED in group:
            row[RESUMED] = int(group[RESUMED].fillna(0).sum())
        row["paths"] = list(shown["path"])
        row["members"] = list(group["path"])
        rows.append(row)
    ordered = ["run", "name", "edits", "dataset", "seed", "n"]
    table = pd.DataFrame(rows)
    return table[[*ordered, *(c for c in table.columns if c not in ordered)]]


def _status_counts(members: pd.DataFrame) -> str:
    labels = members[STATUS].where(members["duplicate_of"].isna(), "duplicate")
    counts = labels.value_counts()
    if len(counts) == 1:
        return str(counts.index[0])
    order = sorted(
        counts.index, key=lambda s: (_STATUS_ORDER.index(s) if s in _STATUS_ORDER else 99, s)
    )
    return ", ".join(f"{counts[status]} {status}" for status in order)


def _joined(values: pd.Series) -> Any:
    unique = list(dict.fromkeys(values.tolist()))
    if len(unique) == 1:
        return unique[0]
    return "|".join(sorted(str(v) for v in unique))


# --------------------------------------------------------------------------- the table


def default_ascending(column: str) -> bool:
    """Losses, norms and epsilon (privacy spent) sort smallest first; accuracies and
    everything else largest first."""
    return "loss" in column or "grad_norm" in column or column == "epsilon"


def check_ci(ci: float) -> float:
    """``ci`` when it is a confidence level, in (0, 1); else a CompareError."""
    if isinstance(ci, bool) or not (isinstance(ci, (int, float)) and 0 < ci < 1):
        raise CompareError(
            f"ci {ci}: the confidence level must be between 0 and 1, e.g. 0.95", argument="ci"
        )
    return ci


def comparison(
    runs: pd.DataFrame | str | Path | Iterable[str | Path],
    group: bool | None = None,
    sort_by: str = DEFAULT_SORT,
    ascending: bool | None = None,
    metrics: list[str] | None = None,
    baseline: str | None = None,
    test_metric: str | None = None,
    ci: float = DEFAULT_CI,
    columns: list[str] | None = None,
    drop: list[str] | None = None,
    only_changed: bool = False,
) -> pd.DataFrame:
    """The comparison table as a DataFrame with exactly the columns ``gradlab compare``
    exports (CSV, JSON), sorted.

    Args:
        runs: run folders (paths, searched at any depth) or a frame from :func:`load_runs`.
        group: one row per experiment (mean, std, CI over seeds); None = when some
            experiment has several seeds.
        sort_by: a column of the table (metric or config key).
        ascending: None = by the column's kind (see :func:`default_ascending`).
        metrics: metric (or config) columns to show instead of :data:`DEFAULT_METRICS`.
        baseline: the reference row: a name, a run folder, or selectors
            (``optim.lr=0.1``, ``edits=none``, several joined by commas). Adds
            ``delta.<metric>``; grouped, also its interval, ``p_value``, ``p_adjusted``
            (Holm), ``test`` (paired or welch), ``n_pairs`` and ``seeds_needed``
            (see :mod:`gradlab.study.baseline`).
        test_metric: the metric the baseline is compared on (default: ``sort_by``).
        ci: the level of every confidence interval, in (0, 1).
        columns: exactly these columns (any column: metrics, config keys, ``edits``,
            ``status``, ``alerts.<kind>``, ...), after the rows' ``run``, ``name`` and
            ``seed``; a metric brings its ``.std``/``.ci_*`` companions, ``baseline`` its
            test columns.
        drop: columns to leave out (with their companions).
        only_changed: leave out every column whose value is the same in every row.

    Raises:
        CompareError: no runs, an unknown column, a bad level or baseline.
    """
    from gradlab.study.baseline import TEST_COLUMNS, add_tests, select_baseline

    check_ci(ci)
    df = runs if isinstance(runs, pd.DataFrame) else load_runs(_as_paths(runs))
    if df.empty:
        raise CompareError("no runs to compare")
    if "duplicate_of" not in df:  # a frame made by hand: no run is a duplicate
        df = df.assign(duplicate_of=None)
    grouped = should_group(df) if group is None else group
    if grouped:
        table = group_runs(df, ci)
    else:
        table = df.copy()
        table[STATUS] = table[STATUS].where(table["duplicate_of"].isna(), "duplicate")
    chosen = list(metrics) if metrics else [m for m in DEFAULT_METRICS if _shown(table, m)]
    choosable = _choosable(table)
    if baseline is not None:  # the test columns exist once the baseline is chosen
        metric = test_metric or sort_by
        choosable += [f"delta.{metric}", *TEST_COLUMNS]
    for argument, names in (
        ("metrics", metrics),
        ("sort_by", [sort_by]),
        ("columns", columns),
        ("drop", drop),
    ):
        allowed = table.columns if argument in ("metrics", "sort_by") else choosable
        bad = [c for c in names or () if c not in allowed]
        if bad:
            raise CompareError(
                f"{argument} {bad[0]!r}: unknown column; columns: {', '.join(choosable)}",
                argument=argument,
            )

    differing = [
        c
        for c in table.columns
        if (is_config_column(c) or c.startswith("resolved."))
        and c not in chosen
        and c not in _SHOWN_ELSEWHERE
        and table[c].map(str).nunique() > 1  # map(str): NaN counts as a value of its own
    ]

    def with_companions(names: Iterable[str]) -> list[str]:
        return [n for c in names for n in (c, *(f"{c}{s}" for s in _SUFFIXES)) if n in table]

    if columns:
        shown = [c for c in ("run", "name", "seed") if c not in columns]
        shown += with_companions(columns)
    else:
        shown = [*IDENTITY, *(["n"] if grouped else []), *differing]
        shown += with_companions(chosen)
        if sort_by not in shown:
            shown += with_companions([sort_by])
        shown.append(STATUS)
        if RESUMED in table and table[RESUMED].fillna(0).gt(0).any():
            shown.append(RESUMED)  # how many times runs went on from a checkpoint

    order = default_ascending(sort_by) if ascending is None else ascending
    table = table.sort_values(sort_by, ascending=order, na_position="last", kind="stable")
    table = table.reset_index(drop=True)
    if baseline is not None:
        metric = test_metric or sort_by
        if metric not in metric_columns(df):
            argument = "test_metric" if test_metric else "sort_by"
            hint = "" if test_metric else "; choose one with test_metric"
            raise CompareError(
                f"{argument} {metric!r}: the baseline is compared on a metric{hint}; metrics: "
                + ", ".join(metric_columns(df)),
                argument=argument,
                mentions=() if test_metric else ("test_metric",),
            )
        reference = select_baseline(table, baseline)
        added = add_tests(table, df, reference, metric, grouped, ci)
        if metric not in shown:
            at = len(shown) - (shown[-1] == STATUS and not columns)
            shown[at:at] = with_companions([metric])
        own = {metric, *(f"{metric}{s}" for s in _SUFFIXES)}
        anchor = max(i for i, c in enumerate(shown) if c in own)
        shown[anchor + 1 : anchor + 1] = added
        table.attrs["baseline"] = reference
    elif test_metric is not None:
        raise CompareError(
            "test_metric needs baseline (the group to compare against)",
            argument="test_metric",
            mentions=("baseline",),
        )
    dropped = set(with_companions(drop or ())) | {
        f"{c}{s}" for c in drop or () if c.startswith("delta.") for s in _SUFFIXES
    }
    shown = [c for c in dict.fromkeys(shown) if c not in dropped]
    if all(c in ("run", "name", "seed") for c in shown):
        raise CompareError(
            "drop: every column was dropped; keep at least one to show", argument="drop"
        )
    if only_changed:  # a metric goes with its companions
        base = {c: c.removesuffix(_suffix(c)) if c.endswith(_SUFFIXES) else c for c in shown}
        shown = [
            c for c in shown if base[c] in ("run", "name") or table[base[c]].map(str).nunique() > 1
        ]
    out = table[shown].copy()
    out.attrs.update(
        runs=len(df),
        grouped=grouped,
        ci=ci,
        baseline=table.attrs.get("baseline"),
        paths=list(table["paths"] if grouped else table["path"].map(lambda p: [p])),
        duplicates=df.attrs.get("duplicates", []),
        skipped=df.attrs.get("skipped", []),
    )
    return out


def _suffix(column: str) -> str:
    return next(s for s in _SUFFIXES if column.endswith(s))


def _choosable(table: pd.DataFrame) -> list[str]:
    """The columns ``--columns`` and ``--drop`` accept."""
    return [
        c
        for c in table.columns
        if (c not in _BOOKKEEPING or c in ("n", STATUS, RESUMED)) and not c.endswith(_SUFFIXES)
    ]


def _as_paths(runs: str | Path | Iterable[str | Path]) -> list[str | Path]:
    return [runs] if isinstance(runs, (str, Path)) else list(runs)


def compare_runs(paths: str | Path | Iterable[str | Path], **options: Any) -> pd.DataFrame:
    """:func:`comparison` of the run folders at or below ``paths``."""
    return comparison(_as_paths(paths), **options)


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
        if values.isna().all() or (values.notna().all() and values.map(str).nunique() == 1):
            fixed[column] = values.iloc[0]
    return fixed


def _shown(table: pd.DataFrame, metric: str) -> bool:
    """Whether a default metric is a column of the default table."""
    if metric not in table.columns:
        return False
    return metric not in _ONLY_WHEN_SET or bool(table[metric].notna().any())
