"""Run folders -> pandas tables: one row per run, seed groups with mean and std, sorting,
deltas against a baseline. Pure pandas: never imports torch, so it starts fast.

Python API::

    import gradlab
    runs = gradlab.load_runs(["runs/"])          # one row per run
    steps = gradlab.load_steps(runs.path[0])     # one row per optimizer step
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from gradlab.errors import GradlabError, RunFolderError
from gradlab.runlog import (
    CONFIG_FILE,
    EVALS_FILE,
    STEPS_FILE,
    SUMMARY_FILE,
    read_config,
    read_meta,
    read_summary,
)

IDENTITY = ["run", "name", "edits", "dataset", "seed"]
SWEEP_FILE = "sweep.json"
METRICS = [
    "steps",
    "final_train_loss",
    "final_test_accuracy",
    "best_test_accuracy",
    "grad_norm_mean",
    "grad_norm_max",
    "edit_changed_frac",
    "alerts",
    "steps_per_second",
]
STATUS = "status"
DEFAULT_SORT = "final_test_accuracy"
# config keys that the identity columns already show, or that differ by design within a group
_SHOWN_ELSEWHERE = {"name", "seed", "edit", "data.name"}
_CONFIG_SECTIONS = {"data", "model", "optim", "train", "diagnostics"}


class CompareError(GradlabError):
    """Nothing to compare, or a choice (column, baseline) that does not exist."""


# --------------------------------------------------------------------------- finding runs


def is_run_folder(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() or (path / SUMMARY_FILE).is_file()


def find_runs(paths: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """Run folders named in ``paths`` (a run folder, or a folder holding run folders).

    Returns:
        The run folders in order without duplicates, and one message per path that is
        neither.
    """
    runs: list[Path] = []
    problems: list[str] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            problems.append(f"{path} (no such file or folder)")
        elif path.is_dir() and is_run_folder(path):
            runs.append(path)
        elif (path / SWEEP_FILE).is_file():
            listed, missing = _sweep_runs(path)
            runs.extend(listed)
            problems.extend(missing)
        elif path.is_dir():
            children = sorted(c for c in path.iterdir() if c.is_dir() and is_run_folder(c))
            if children:
                runs.extend(children)
            elif not path.name.startswith("."):
                problems.append(f"{path} (not a run folder, and holds none)")
        elif path.name != ".gitkeep":
            problems.append(f"{path} (not a run folder)")
    unique = list(dict.fromkeys(p.resolve() for p in runs))
    by_resolved = {p.resolve(): p for p in runs}
    return [by_resolved[p] for p in unique], problems


def _sweep_runs(path: Path) -> tuple[list[Path], list[str]]:
    """The run folders a sweep folder's sweep.json lists (its latest run of each config)."""
    try:
        data = json.loads((path / SWEEP_FILE).read_text(encoding="utf-8"))
        folders = [r.get("folder") for r in data["runs"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return [], [f"{path / SWEEP_FILE} (unreadable: {exc})"]
    listed = [path / f for f in folders if f]
    missing = [f"{p} (listed in {SWEEP_FILE}, not found)" for p in listed if not p.is_dir()]
    return [p for p in listed if p.is_dir()], missing


# --------------------------------------------------------------------------- one run


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}``; lists are kept as JSON text."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list):
            flat[name] = json.dumps(value, sort_keys=True)
        else:
            flat[name] = value
    return flat


def group_key(config: dict[str, Any]) -> str:
    """Runs with the same key differ only in seed and name."""
    rest = {k: v for k, v in config.items() if k not in ("name", "seed")}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def run_status(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    """The summary's status; a ``running`` run whose process is gone (on this host) is
    ``crashed``: it was killed before it could write its summary."""
    status = str(summary.get("status", "unknown"))
    pid = summary.get("pid")
    if status == "running" and isinstance(pid, int) and meta.get("host") == socket.gethostname():
        return "running" if _process_alive(pid) else "crashed"
    return status


def read_run(path: Path) -> dict[str, Any]:
    """One row of :func:`load_runs` for the run folder ``path``.

    Raises:
        RunFolderError: a file is missing or unreadable.
    """
    config = read_config(path)
    meta = read_meta(path)
    summary = read_summary(path)
    row: dict[str, Any] = {
        "run": path.name,
        "name": config.get("name"),
        "edits": meta.get("edits", "?"),
        "dataset": (meta.get("dataset") or {}).get("name")
        or (config.get("data") or {}).get("name"),
        "seed": config.get("seed"),
    }
    alerts = summary.get("alerts")
    if isinstance(alerts, dict):  # counts per kind; the table shows their total
        summary = {**summary, "alerts": sum(alerts.values())}
        row.update({f"alerts.{kind}": count for kind, count in alerts.items()})
    for metric in METRICS:
        value = summary.get(metric)
        row[metric] = float(value) if isinstance(value, (int, float)) else math.nan
    row[STATUS] = run_status(summary, meta)
    row["path"] = str(path)
    row["group"] = group_key(config)
    for key, value in flatten(config).items():
        if key not in row:
            row[key] = value
    return row


def load_runs(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run folder found in ``paths``.

    Columns: ``run`` (folder name), ``name``, ``edits`` (the pipeline in short form),
    ``dataset``, ``seed``, the summary's metrics (``steps``, ``final_train_loss``,
    ``final_test_accuracy``, ``best_test_accuracy``, ``grad_norm_mean``, ``grad_norm_max``,
    ``edit_changed_frac``, ``steps_per_second``), ``status``, ``path``, ``group`` (equal for
    runs that differ only in seed and name) and every config key, flattened
    (``optim.lr``, ``model.hidden``, ...). Folders that are broken are left out and listed
    in ``df.attrs["skipped"]``.
    """
    runs, skipped = find_runs(paths)
    rows = []
    for path in runs:
        try:
            rows.append(read_run(path))
        except RunFolderError as exc:
            skipped.append(f"{path.name} ({_reason(exc, path)})")
    df = pd.DataFrame(
        rows, columns=None if rows else [*IDENTITY, *METRICS, STATUS, "path", "group"]
    )
    df.attrs["skipped"] = skipped
    return df


def _reason(exc: RunFolderError, path: Path) -> str:
    return str(exc).replace(f"{path}/", "").replace(str(path), "")


def load_steps(run: str | Path) -> pd.DataFrame:
    """``steps.csv`` of one run, one row per optimizer step. A row cut short by a killed
    process (no ``elapsed_s``, the last column) is dropped."""
    return _read_log(Path(run) / STEPS_FILE, "elapsed_s")


def load_evals(run: str | Path) -> pd.DataFrame:
    """``evals.csv`` of one run: step, epoch, test_loss, test_accuracy, elapsed_s."""
    return _read_log(Path(run) / EVALS_FILE, "elapsed_s")


def _read_log(path: Path, last_column: str) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise RunFolderError(f"{path}: missing") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise RunFolderError(f"{path}: unreadable ({exc})") from None
    if last_column in df.columns:
        df = df[df[last_column].notna()]
    return df.reset_index(drop=True)


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


# --------------------------------------------------------------------------- exports


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
