"""Reading run folders back as pandas tables (one row per run; one run's logs).

Pure pandas: never imports torch. ``gradlab.load_runs`` and ``gradlab.load_steps`` are these.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from gradlab.errors import RunFolderError
from gradlab.identity import experiment_key, resolved_from_meta
from gradlab.runlog import (
    CONFIG_FILE,
    EVALS_FILE,
    STEPS_FILE,
    SUMMARY_FILE,
    SWEEP_FILE,
    flatten,
    read_config,
    read_meta,
    read_summary,
    run_status,
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
RESUMED = "resumed"
"""How many times a run went on from a checkpoint (``gradlab train --resume``, a sweep)."""
_INF = math.inf
RANGES = {
    "steps": (0, _INF),
    "final_train_loss": (0, _INF),
    "final_test_accuracy": (0, 1),
    "best_test_accuracy": (0, 1),
    "epsilon": (0, _INF),
    "grad_norm_mean": (0, _INF),
    "grad_norm_max": (0, _INF),
    "edit_changed_frac": (0, 1),
    "alerts": (0, _INF),
    "steps_per_second": (0, _INF),
}
"""What each summary metric can be (bounds included; infinity where the upper bound is
infinite). Anything else (``epsilon: -5``, ``true``, an accuracy of 1.5) is not read as a
number: the cell is empty and a warning names the run."""


def metric_value(metric: str, value: Any) -> float | None:
    """A summary's ``value`` of ``metric`` as a float; NaN when absent (None, missing), None
    when it is not a possible value (a boolean, text, a number outside :data:`RANGES`)."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    low, high = RANGES.get(metric, (-_INF, _INF))
    if math.isnan(number) or low <= number <= high:
        return number
    return None


# --------------------------------------------------------------------------- finding runs


def is_run_folder(path: Path) -> bool:
    """A folder with a config.yaml or a summary.json. Raises OSError when ``path`` cannot be
    looked into (permission denied, a symlink loop)."""
    return any(_stat_mode(path / name, stat.S_ISREG) for name in (CONFIG_FILE, SUMMARY_FILE))


def _stat_mode(path: Path, test) -> bool:
    """``test(mode)`` of ``path`` (followed); False when nothing is there."""
    try:
        return bool(test(os.stat(path).st_mode))
    except (FileNotFoundError, NotADirectoryError):
        return False


def find_runs(paths: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """Every run folder at or below ``paths``, at any depth (a runs folder, sweep folders
    inside it, run folders given one by one). Hidden folders are not searched, and nothing
    below a run folder is.

    Symlinks are followed, once: a folder reached again (by another link, or a loop such as
    ``ln -s .. runs/up``) is not searched again, a link to a folder that holds it is a loop
    and not followed, and the kernel's file systems (``/proc``, ``/sys``, ``/dev``, ...)
    hold no runs and are not searched. A folder that cannot be read is left out.

    Returns:
        The run folders in order without duplicates, and one message per path that is not
        a run folder and holds none, per folder that could not be searched (and why), or
        per run folder a ``sweep.json`` lists but which is gone.
    """
    runs: list[Path] = []
    problems: list[str] = []
    walk = _Walk()
    for raw in paths:
        path = Path(raw)
        try:
            info = os.stat(path)
        except OSError as exc:
            problems.append(f"{path} ({_os_reason(exc, path)})")
            continue
        if stat.S_ISDIR(info.st_mode):
            before = len(walk.found), len(walk.problems)
            again = (info.st_dev, info.st_ino) in walk.seen
            walk.search(path)
            unchanged = (len(walk.found), len(walk.problems)) == before
            if unchanged and not again and not path.name.startswith("."):
                problems.append(f"{path} (not a run folder, and holds none)")
        elif path.name != ".gitkeep":
            problems.append(f"{path} (not a run folder)")
    runs, problems = walk.found, problems + walk.problems
    unique = list(dict.fromkeys(os.path.realpath(p) for p in runs))
    by_real = {os.path.realpath(p): p for p in runs}
    return [by_real[p] for p in unique], problems


def _os_reason(exc: OSError, path: Path) -> str:
    """Why ``path`` cannot be searched, in a few words."""
    if exc.errno == errno.ELOOP:
        return "a symlink loop"
    if isinstance(exc, FileNotFoundError):
        return "a symlink to nothing" if os.path.islink(path) else "no such file or folder"
    if isinstance(exc, PermissionError):
        return "cannot be read: permission denied"
    return f"cannot be read: {exc.strerror or exc}"


_KERNEL_FILE_SYSTEMS = {
    "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "securityfs", "debugfs",
    "tracefs", "pstore", "bpf", "mqueue", "hugetlbfs", "configfs", "fusectl", "binfmt_misc",
    "autofs", "efivarfs", "rpc_pipefs", "nsfs",
}  # fmt: skip


def _kernel_mounts() -> list[str]:
    """Mount points of the kernel's own file systems (Linux; none elsewhere)."""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as mounts:
            fields = [line.split() for line in mounts]
    except OSError:
        return []
    return [
        f[1].replace("\\040", " ") for f in fields if len(f) > 2 and f[2] in _KERNEL_FILE_SYSTEMS
    ]


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


class _Walk:
    """One search over several paths: every real folder is searched at most once."""

    def __init__(self) -> None:
        self.found: list[Path] = []
        self.problems: list[str] = []
        self.seen: set[tuple[int, int]] = set()
        self.kernel = _kernel_mounts()

    def search(self, top: Path) -> None:
        """Add the run folders at or below ``top`` (depth first, by name) and the problems
        met on the way: unreadable folders, loops, runs a sweep.json lists that are gone."""
        stack = [top]
        links: list[Path] = []  # followed after the real folders, which so keep their own
        while stack or links:  # paths when a link leads to them too
            folder = stack.pop() if stack else links.pop(0)
            try:
                self._visit(folder, stack, links)
            except OSError as exc:
                self.problems.append(f"{folder} ({_os_reason(exc, folder)})")

    def _visit(self, folder: Path, stack: list[Path], links: list[Path]) -> None:
        info = os.stat(folder)
        key = (info.st_dev, info.st_ino)
        if key in self.seen:  # another way to a folder already searched
            return
        self.seen.add(key)
        real = os.path.realpath(folder)
        if any(_under(real, mount) for mount in self.kernel if mount != "/"):
            self.problems.append(f"{folder} (the kernel's file system {real}; not searched)")
            return
        if is_run_folder(folder):
            self.found.append(folder)
            return
        entries = sorted(os.scandir(folder), key=lambda e: e.name, reverse=True)
        names = {e.name for e in entries}
        if SWEEP_FILE in names:
            self.problems.extend(_missing_sweep_runs(folder, names))
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                if not entry.is_dir(follow_symlinks=True):
                    continue
                link = entry.is_symlink()
                if link and _under(real, os.path.realpath(path)):
                    self.problems.append(
                        f"{path} (a symlink to a folder that holds it; not followed)"
                    )
                    continue
            except OSError as exc:
                self.problems.append(f"{path} ({_os_reason(exc, path)})")
                continue
            (links if link else stack).append(path)


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


def _log_or_empty(load, path: Path) -> pd.DataFrame:
    """A run's log, or an empty table when it is missing or unreadable."""
    try:
        return load(path)
    except RunFolderError:
        return pd.DataFrame()


def figures_from_logs(path: Path) -> dict[str, float | int]:
    """The summary's figures, recomputed from a run's steps.csv and evals.csv: what a run
    that died without writing its summary (or one still running) has logged so far."""
    figures: dict[str, float | int] = {}
    steps = _log_or_empty(load_steps, path)
    if len(steps) and "loss" in steps:
        logged = steps["step"].dropna()
        if len(logged) and math.isfinite(logged.iloc[-1]):
            figures["steps"] = int(logged.iloc[-1])  # a count, as in a summary
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


def read_run(path: Path, invalid: list[str] | None = None) -> dict[str, Any]:
    """One row of :func:`load_runs` for the run folder ``path``. A summary metric that is
    not a possible value (:data:`RANGES`) is left empty (NaN) and named in ``invalid``.

    Raises:
        RunFolderError: a file is missing, unreadable, or holds values of the wrong type.
    """
    try:
        return _read_run(path, [] if invalid is None else invalid)
    except (TypeError, AttributeError, ValueError, KeyError, OverflowError) as exc:  # wrong types
        raise RunFolderError(f"{path}: unexpected contents ({type(exc).__name__}: {exc})") from None


def _read_run(path: Path, invalid: list[str]) -> dict[str, Any]:
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
        value = metric_value(metric, summary.get(metric))
        if value is None:
            invalid.append(f"{metric} {json.dumps(summary.get(metric), default=str)[:40]}")
        row[metric] = math.nan if value is None else value
    row[STATUS] = status
    resumed = summary.get("resumed")
    count = resumed.get("count") if isinstance(resumed, dict) else 0
    row[RESUMED] = count if isinstance(count, int) and not isinstance(count, bool) else 0
    row["path"] = str(path)
    resolved = resolved_from_meta(meta)
    row["group"] = experiment_key(config, resolved)
    row["started"] = str(meta.get("started") or "")
    if not isinstance(row["seed"], int) or isinstance(row["seed"], bool):
        raise ValueError(f"seed {row['seed']!r} in config.yaml is not a whole number")
    row.update(
        {f"resolved.{k}": v for k, v in resolved.items() if k not in ("grad_scaler", "plugins")}
    )
    if resolved.get("plugins"):  # the user's edits' code: tells an edited plugin's runs apart
        row["resolved.plugins"] = ", ".join(
            f"{spec.rpartition(':')[2]}@{str(sha)[:12]}"
            for spec, sha in resolved["plugins"].items()
        )
    for key, value in flatten(config).items():
        if key not in row:
            row[key] = value
    # DP-SGD on or off in one column: "on" with a privacy section (its keys are privacy.*)
    row["privacy"] = "on" if isinstance(config.get("privacy"), dict) else None
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
    ``df.attrs["invalid"]`` the runs whose summary holds impossible values (left empty);
    ``df.attrs["duplicates"]`` the ``(older, newer)`` path pairs of repeated runs.
    """
    runs, skipped = find_runs(paths)
    rows = []
    invalid: list[str] = []
    for path in runs:
        values: list[str] = []
        try:
            rows.append(read_run(path, values))
        except RunFolderError as exc:
            skipped.append(f"{path.name} ({_reason(exc, path)})")
        if values:
            invalid.append(f"{path.name} ({', '.join(values)})")
    df = pd.DataFrame(
        rows, columns=None if rows else [*IDENTITY, *METRICS, STATUS, "path", "group"]
    )
    df["duplicate_of"] = None
    df.attrs["duplicates"] = _mark_duplicates(df)
    df.attrs["skipped"] = skipped
    df.attrs["invalid"] = invalid
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


def load_steps(
    run: str | Path,
    columns: Iterable[str] | None = None,
    *,
    contained: bool = False,
) -> pd.DataFrame:
    """``steps.csv`` of one run, one row per optimizer step. A row cut short by a killed
    process (no ``elapsed_s``, the last column) is dropped.

    Args:
        columns: read only these (see :func:`read_log`); None reads every column.
        contained: refuse a file that lies outside the run folder (a symlink out of it).
    """
    return read_log(
        Path(run) / STEPS_FILE, "elapsed_s", numeric=True, columns=columns,
        folder=Path(run) if contained else None,
    )  # fmt: skip


def load_evals(
    run: str | Path,
    columns: Iterable[str] | None = None,
    *,
    contained: bool = False,
) -> pd.DataFrame:
    """``evals.csv`` of one run: step, epoch, test_loss, test_accuracy, (epsilon),
    elapsed_s. ``columns`` and ``contained`` as in :func:`load_steps`."""
    return read_log(
        Path(run) / EVALS_FILE, "elapsed_s", numeric=True, columns=columns,
        folder=Path(run) if contained else None,
    )  # fmt: skip


def read_log(
    path: Path,
    last_column: str,
    numeric: bool = False,
    columns: Iterable[str] | None = None,
    folder: Path | None = None,
) -> pd.DataFrame:
    """A CSV log of a run; rows cut short (no value in ``last_column``) are dropped. With
    ``numeric`` every column is a number (a cell that is not one, ``true`` included, is
    NaN). Only a regular file is read: a FIFO or a device in a run folder is an error,
    never a hang.

    Args:
        columns: the names of the columns to keep (those the file lacks are left out);
            ``last_column`` is always kept. None: all of them. Fewer columns are faster to
            make numbers of; the rows are the same.
        folder: the run folder the file must lie in: a file whose real path is outside it
            (a symlink out of the folder) is not read.

    Raises:
        RunFolderError: the file is missing, not a regular file, outside ``folder`` or
            not CSV.
    """
    if folder is not None:
        home = os.path.realpath(folder)
        if os.path.commonpath([os.path.realpath(path), home]) != home:
            raise RunFolderError(f"{path}: a symlink out of its run folder; not read")
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise RunFolderError(f"{path}: missing") from None
    except OSError as exc:
        raise RunFolderError(f"{path}: unreadable ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise RunFolderError(f"{path}: not a regular file")
    try:
        df = pd.read_csv(path)  # every column: a row with too many fields is an error
    except (OSError, ValueError, pd.errors.ParserError, OverflowError) as exc:
        raise RunFolderError(f"{path}: unreadable ({str(exc)[:200]})") from None
    if columns is not None:
        wanted = {*columns, last_column}
        df = df[[c for c in df.columns if c in wanted]]
    if numeric:  # columns parsed as numbers stay as they are: no copy of the whole table
        for name, dtype in zip(list(df.columns), df.dtypes, strict=True):
            if dtype.kind == "b":  # true/false: not numbers
                df[name] = math.nan
            elif dtype.kind not in "iuf":
                df[name] = pd.to_numeric(df[name], errors="coerce")
    if last_column in df.columns:
        complete = df[last_column].notna()
        if not complete.all():
            df = df[complete]
    if not df.index.equals(pd.RangeIndex(len(df))):  # rows dropped, or a column read as index
        df = df.reset_index(drop=True)
    return df
