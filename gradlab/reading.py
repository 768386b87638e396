"""Reading run folders back as pandas tables (one row per run; one run's logs).

Pure pandas: never imports torch. ``gradlab.load_runs`` and ``gradlab.load_steps`` are these.
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
    return read_log(Path(run) / STEPS_FILE, "elapsed_s")


def load_evals(run: str | Path) -> pd.DataFrame:
    """``evals.csv`` of one run: step, epoch, test_loss, test_accuracy, elapsed_s."""
    return read_log(Path(run) / EVALS_FILE, "elapsed_s")


def read_log(path: Path, last_column: str) -> pd.DataFrame:
    """A CSV log of a run; rows cut short (no value in ``last_column``) are dropped."""
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise RunFolderError(f"{path}: missing") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise RunFolderError(f"{path}: unreadable ({exc})") from None
    if last_column in df.columns:
        df = df[df[last_column].notna()]
    return df.reset_index(drop=True)
