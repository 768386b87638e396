"""Reading run folders back as pandas tables (one row per run; one run's logs).

Pure pandas: never imports torch. ``gradlab.load_runs`` and ``gradlab.load_steps`` are these.
"""

from __future__ import annotations

import json
import math
import os
import socket
import stat
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from gradlab.errors import RunFolderError
from gradlab.identity import experiment_key, resolved_from_meta
from gradlab.runlog import (
    CONFIG_FILE,
    EVALS_FILE,
    STALE_SECONDS,
    STEPS_FILE,
    SUMMARY_FILE,
    SWEEP_FILE,
    read_config,
    read_meta,
    read_summary,
)

IDENTITY = ["run", "name", "edits", "dataset", "seed"]
METRICS = [
    "steps",
    "final_train_loss",
    "final_test_accuracy",
    "best_test_accuracy",
    "epsilon",
    "grad_norm_mean",
    "grad_norm_max",
    "edit_changed_frac",
    "alerts",
    "steps_per_second",
]
STATUS = "status"


# --------------------------------------------------------------------------- finding runs


def is_run_folder(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() or (path / SUMMARY_FILE).is_file()


def find_runs(paths: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """Every run folder at or below ``paths``, at any depth (a runs folder, sweep folders
    inside it, run folders given one by one). Hidden folders are not searched, and nothing
    below a run folder is.

    Returns:
        The run folders in order without duplicates, and one message per path that is not
        a run folder and holds none, or per run folder a ``sweep.json`` lists but which is
        gone.
    """
    runs: list[Path] = []
    problems: list[str] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            problems.append(f"{path} (no such file or folder)")
        elif path.is_dir():
            found, missing = _walk(path)
            runs.extend(found)
            problems.extend(missing)
            if not found and not missing and not path.name.startswith("."):
                problems.append(f"{path} (not a run folder, and holds none)")
        elif path.name != ".gitkeep":
            problems.append(f"{path} (not a run folder)")
    unique = list(dict.fromkeys(p.resolve() for p in runs))
    by_resolved = {p.resolve(): p for p in runs}
    return [by_resolved[p] for p in unique], problems


def _walk(top: Path) -> tuple[list[Path], list[str]]:
    """Run folders at or below ``top`` (sorted by path), and the folders that sweep.json
    files below ``top`` list but that are gone."""
    found: list[Path] = []
    missing: list[str] = []
    stack = [top]
    while stack:
        folder = stack.pop()
        if is_run_folder(folder):
            found.append(folder)
            continue
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name, reverse=True)
        except OSError:
            continue
        names = {e.name for e in entries}
        if SWEEP_FILE in names:
            missing.extend(_missing_sweep_runs(folder, names))
        stack.extend(
            Path(e.path)
            for e in entries
            if not e.name.startswith(".") and e.is_dir(follow_symlinks=True)
        )
    return found, missing


def _missing_sweep_runs(path: Path, present: set[str]) -> list[str]:
    """Run folders the sweep.json in ``path`` lists (in any expansion) that are gone."""
    try:
        data = json.loads((path / SWEEP_FILE).read_text(encoding="utf-8"))
        expansions = [*data.get("history", []), data]
        folders = [r.get("folder") for e in expansions for r in e.get("runs", [])]
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        return [f"{path / SWEEP_FILE} (unreadable: {exc})"]
    gone = dict.fromkeys(f for f in folders if isinstance(f, str) and f and f not in present)
    return [f"{path / f} (listed in {SWEEP_FILE}, not found)" for f in gone]


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


def _process_alive(pid: int) -> bool:
    if not 0 < pid < 2**31:  # not a PID this system can have
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def run_status(summary: dict[str, Any], meta: dict[str, Any], path: Path | None = None) -> str:
    """The summary's status, except for a ``running`` run that is dead: ``crashed`` (killed
    before it could write its summary). A running run touches its summary.json every
    :data:`~gradlab.runlog.HEARTBEAT_SECONDS`; untouched for
    :data:`~gradlab.runlog.STALE_SECONDS` it is dead, whatever host reads it. On the host
    that ran it, a process that is gone is dead at once."""
    status = str(summary.get("status", "unknown"))
    if status != "running":
        return status
    pid = summary.get("pid")
    if (
        isinstance(pid, int)
        and meta.get("host") == socket.gethostname()
        and not _process_alive(pid)
    ):
        return "crashed"
    if path is not None:
        try:
            age = time.time() - (path / SUMMARY_FILE).stat().st_mtime
        except OSError:
            return status
        if age > STALE_SECONDS:
            return "crashed"
    return status


def _log_or_empty(load, path: Path) -> pd.DataFrame:
    """A run's log, or an empty table when it is missing or unreadable."""
    try:
        return load(path)
    except RunFolderError:
        return pd.DataFrame()


def figures_from_logs(path: Path) -> dict[str, float]:
    """The summary's figures, recomputed from a run's steps.csv and evals.csv: what a run
    that died without writing its summary (or one still running) has logged so far."""
    figures: dict[str, float] = {}
    steps = _log_or_empty(load_steps, path)
    if len(steps) and "loss" in steps:
        figures["steps"] = float(steps["step"].iloc[-1])
        figures["final_train_loss"] = float(steps["loss"].tail(20).mean())
        taken = steps[steps["skipped"] == 0] if "skipped" in steps else steps
        if "grad_norm" in taken and taken["grad_norm"].notna().any():
            figures["grad_norm_mean"] = float(taken["grad_norm"].mean())
            figures["grad_norm_max"] = float(taken["grad_norm"].max())
        changed = [c for c in steps.columns if c.startswith("edit") and c.endswith(".changed")]
        figures["edit_changed_frac"] = (
            float((steps[changed].fillna(0) > 0).any(axis=1).mean()) if changed else 0.0
        )
        if "elapsed_s" in steps and steps["elapsed_s"].iloc[-1] > 0:
            figures["steps_per_second"] = float(
                steps["step"].iloc[-1] / steps["elapsed_s"].iloc[-1]
            )
    evals = _log_or_empty(load_evals, path)
    if len(evals) and "test_accuracy" in evals:
        figures["final_test_accuracy"] = float(evals["test_accuracy"].iloc[-1])
        figures["best_test_accuracy"] = float(evals["test_accuracy"].max())
    if len(evals) and "epsilon" in evals and evals["epsilon"].notna().any():
        figures["epsilon"] = float(evals["epsilon"].dropna().iloc[-1])  # spent by then
    return figures


def read_run(path: Path) -> dict[str, Any]:
    """One row of :func:`load_runs` for the run folder ``path``.

    Raises:
        RunFolderError: a file is missing, unreadable, or holds values of the wrong type.
    """
    try:
        return _read_run(path)
    except (TypeError, AttributeError, ValueError, KeyError, OverflowError) as exc:  # wrong types
        raise RunFolderError(f"{path}: unexpected contents ({type(exc).__name__}: {exc})") from None


def _read_run(path: Path) -> dict[str, Any]:
    config = read_config(path)
    meta = read_meta(path)
    summary = read_summary(path)
    row: dict[str, Any] = {
        "run": path.name,
        "name": config.get("name"),
        "edits": meta.get("edits", "?"),
        "dataset": _name_of(meta.get("dataset")) or _name_of(config.get("data")),
        "seed": config.get("seed"),
    }
    status = run_status(summary, meta, path)
    if status in ("running", "crashed") and not isinstance(summary.get("steps"), (int, float)):
        summary = {**figures_from_logs(path), **summary}
    alerts = summary.get("alerts")
    if isinstance(alerts, dict):  # counts per kind; the table shows their total
        counts = {
            str(kind): float(n)
            if isinstance(n, (int, float)) and not isinstance(n, bool)
            else math.nan
            for kind, n in alerts.items()
        }
        summary = {**summary, "alerts": sum(counts.values())}
        row.update({f"alerts.{kind}": count for kind, count in counts.items()})
    if summary.get("epsilon", 0) is None and summary.get("noise_multiplier") == 0:
        summary = {**summary, "epsilon": math.inf}  # DP-SGD without noise: no guarantee
    for metric in METRICS:
        value = summary.get(metric)
        row[metric] = float(value) if isinstance(value, (int, float)) else math.nan
    row[STATUS] = status
    row["path"] = str(path)
    resolved = resolved_from_meta(meta)
    row["group"] = experiment_key(config, resolved)
    row["started"] = str(meta.get("started") or "")
    if not isinstance(row["seed"], int) or isinstance(row["seed"], bool):
        raise ValueError(f"seed {row['seed']!r} in config.yaml is not a whole number")
    row.update({f"resolved.{k}": v for k, v in resolved.items() if k != "grad_scaler"})
    for key, value in flatten(config).items():
        if key not in row:
            row[key] = value
    return row


def _name_of(section: Any) -> Any:
    return section.get("name") if isinstance(section, dict) else None


def load_runs(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run folder found at or below ``paths``.

    Columns: ``run`` (folder name), ``name``, ``edits`` (the pipeline in short form),
    ``dataset``, ``seed``, the summary's metrics (``steps``, ``final_train_loss``,
    ``final_test_accuracy``, ``best_test_accuracy``, ``grad_norm_mean``, ``grad_norm_max``,
    ``edit_changed_frac``, ``alerts`` and ``alerts.<kind>``, ``steps_per_second``),
    ``status``, ``path``, ``group`` (the experiment's key, :mod:`gradlab.identity`: equal
    for runs of the same experiment), ``resolved.device`` / ``resolved.amp`` /
    ``resolved.engine`` (from meta.json), ``started``, ``duplicate_of`` (for a completed run
    whose experiment and seed a newer completed run repeats: that run's path; it is not an
    observation) and every config key, flattened (``optim.lr``, ``model.hidden``, ...).

    ``df.attrs["skipped"]`` lists the folders that are broken (left out);
    ``df.attrs["duplicates"]`` the ``(older, newer)`` path pairs of repeated runs.
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
    df["duplicate_of"] = None
    df.attrs["duplicates"] = _mark_duplicates(df)
    df.attrs["skipped"] = skipped
    return df


def _mark_duplicates(df: pd.DataFrame) -> list[tuple[str, str]]:
    """Completed runs of the same experiment and seed count once: the newest (by start
    time, then folder name); the older ones get ``duplicate_of``. Returns (older, newer)."""
    if df.empty:
        return []
    completed = df[df[STATUS] == "completed"]
    pairs = []
    for _, same in completed.groupby(["group", "seed"], sort=False):
        if len(same) < 2:
            continue
        order = same.assign(_name=same["run"]).sort_values(["started", "_name"])
        newest = order.index[-1]
        for index in order.index[:-1]:
            df.at[index, "duplicate_of"] = df.at[newest, "path"]
            pairs.append((df.at[index, "path"], df.at[newest, "path"]))
    return pairs


def is_observation(df: pd.DataFrame) -> pd.Series:
    """Runs that count in a group's statistics: completed, and not a duplicate."""
    return (df[STATUS] == "completed") & df["duplicate_of"].isna()


def _reason(exc: RunFolderError, path: Path) -> str:
    return str(exc).replace(f"{path}/", "").replace(str(path), "")


def load_steps(run: str | Path) -> pd.DataFrame:
    """``steps.csv`` of one run, one row per optimizer step. A row cut short by a killed
    process (no ``elapsed_s``, the last column) is dropped."""
    return read_log(Path(run) / STEPS_FILE, "elapsed_s", numeric=True)


def load_evals(run: str | Path) -> pd.DataFrame:
    """``evals.csv`` of one run: step, epoch, test_loss, test_accuracy, elapsed_s."""
    return read_log(Path(run) / EVALS_FILE, "elapsed_s", numeric=True)


def read_log(path: Path, last_column: str, numeric: bool = False) -> pd.DataFrame:
    """A CSV log of a run; rows cut short (no value in ``last_column``) are dropped. With
    ``numeric`` every column is a number (a cell that is not one is NaN). Only a regular
    file is read: a FIFO or a device in a run folder is an error, never a hang."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise RunFolderError(f"{path}: missing") from None
    except OSError as exc:
        raise RunFolderError(f"{path}: unreadable ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise RunFolderError(f"{path}: not a regular file")
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError, OverflowError) as exc:
        raise RunFolderError(f"{path}: unreadable ({str(exc)[:200]})") from None
    if numeric:
        df = df.apply(pd.to_numeric, errors="coerce")
    if last_column in df.columns:
        df = df[df[last_column].notna()]
    return df.reset_index(drop=True)
