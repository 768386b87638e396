"""The run folder: create it, append metrics as they happen, write the summary, read back.

Layout of ``runs/<name>-<YYYYMMDD-HHMMSS>-<4 hex>/``:

- ``config.yaml``   the fully resolved config (train it again with ``gradlab train``)
- ``meta.json``     environment: versions, git commit, host, device, AMP, dataset, command
- ``steps.csv``     one row per optimizer step, appended while training
- ``evals.csv``     test loss / accuracy, every ``eval_every`` steps and at the end
- ``summary.json``  status and final figures (``status: running`` until the run ends)

This module never imports torch, so reading runs stays fast.
"""

from __future__ import annotations

import csv
import json
import math
import os
import secrets
import socket
import time
from pathlib import Path
from typing import Any

import yaml

from gradlab.errors import RunFolderError
from gradlab.yamlfile import read_small_text_file

CONFIG_FILE = "config.yaml"
META_FILE = "meta.json"
STEPS_FILE = "steps.csv"
EVALS_FILE = "evals.csv"
SUMMARY_FILE = "summary.json"
GRADS_FILE = "grads.csv"
ALERTS_FILE = "alerts.csv"
CHECKPOINT_FILE = "checkpoint.pt"
"""What a stopped run goes on from (gradlab.checkpoint), and the one before it:"""
PREVIOUS_CHECKPOINT_FILE = "checkpoint-previous.pt"
CHECKPOINT_FILES = (CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE)
SWEEP_FILE = "sweep.json"
"""A sweep folder's record of its runs (beside the run folders it holds)."""
# the per-parameter statistics of grads.csv, after its step and param columns (written by
# gradlab.diagnostics, read by gradlab.study.inspection)
GRADS_STATS = (
    "mean",
    "std",
    "norm",
    "norm_after",
    "max_abs",
    "zero_frac",
    "update_ratio",
    "weight_norm",
)
ALERTS_COLUMNS = ["step", "alert", "param", "value", "threshold", "message"]
EVAL_COLUMNS = ["step", "epoch", "test_loss", "test_accuracy", "elapsed_s"]
PRIVATE_EVAL_COLUMNS = ["step", "epoch", "test_loss", "test_accuracy", "epsilon", "elapsed_s"]
"""evals.csv of a run with a ``privacy`` section: epsilon spent up to that step."""
STATUSES = ("running", "completed", "interrupted", "failed", "diverged")
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: 10x faster


def create_run_folder(runs_dir: str | Path, name: str) -> Path:
    """Claim a new, empty ``<runs_dir>/<name>-<YYYYMMDD-HHMMSS>-<4 hex>`` folder.

    ``os.mkdir`` either creates the folder or fails, so two runs started in the same second
    never share or overwrite a folder; on a clash another random suffix is drawn.
    """
    runs_dir = Path(runs_dir)
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(
            f"cannot create the runs directory {runs_dir}: {exc.strerror}"
        ) from None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for _ in range(100):
        path = runs_dir / f"{name}-{stamp}-{secrets.token_hex(2)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunFolderError(
                f"cannot write in the runs directory {runs_dir}: {exc.strerror}"
            ) from None
    raise RunFolderError(f"could not find a free run folder name under {runs_dir}")


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` atomically: a temporary file of this writer's own (so concurrent
    writers never rename each other's halves), flushed to disk, then renamed over
    ``path``. Readers see the old file or the new one, never half of one.

    Raises:
        OSError: the file cannot be written (the temporary file is removed).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON with :func:`write_text_atomically`."""
    write_text_atomically(path, json.dumps(data, indent=2, default=str) + "\n")


HEARTBEAT_SECONDS = 10.0
"""How often a training run touches its summary.json while it runs."""
STALE_SECONDS = 120.0
"""A ``running`` summary.json untouched for this long belongs to a dead run (``crashed``),
from any host; clocks are assumed to agree to within a minute."""


class Heartbeat:
    """Touches a file every :data:`HEARTBEAT_SECONDS` from a daemon thread while a run
    trains, so that a reader anywhere can tell a live run from a killed one by its
    modification time (the thread dies with the process)."""

    def __init__(self, path: Path, every: float = HEARTBEAT_SECONDS) -> None:
        import threading

        self.path = path
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="gradlab-heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            try:
                os.utime(self.path)
            except OSError:
                pass  # a full or vanished disk: the run's own writes will say so

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()


def format_value(value: Any) -> str:
    """CSV text of one metric: integers as they are, floats with 7 significant digits,
    NaN as an empty cell."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return format(value, ".7g")
    return str(value)


class CsvLog:
    """An append-only CSV file: header once, rows appended and flushed in batches.

    ``resume_at``: the file exists (a resumed run's) and goes on from that byte (what it
    held at the checkpoint; :func:`check_log` has checked it), the rows after it dropped.
    """

    def __init__(self, path: Path, columns: list[str], resume_at: int | None = None) -> None:
        self.path = path
        self.columns = columns
        if resume_at is not None:
            os.truncate(path, resume_at)
            self._file = open(path, "a", newline="", encoding="utf-8")  # noqa: SIM115
            self._writer = csv.writer(self._file, lineterminator="\n")
            return
        self._file = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115 - long-lived
        self._writer = csv.writer(self._file, lineterminator="\n")
        self._writer.writerow(columns)
        self._file.flush()

    def size(self) -> int:
        """Bytes written so far (everything appended is flushed)."""
        return os.fstat(self._file.fileno()).st_size

    def append(self, rows: list[list[Any]]) -> None:
        self._writer.writerows([[format_value(v) for v in row] for row in rows])
        self._file.flush()

    def append_lines(self, text: str) -> None:
        """Append rows already formatted as CSV lines (the fast path of numeric logs)."""
        self._file.write(text)
        self._file.flush()

    def numeric_template(self, integer_columns: set[str]) -> str:
        """A ``str.format`` template for one row of numbers, the same text as
        :func:`format_value` gives once ``nan`` is replaced by an empty cell."""
        return ",".join("{}" if c in integer_columns else "{:.7g}" for c in self.columns) + "\n"

    def close(self) -> None:
        """Close the file; data a full disk would not take is dropped (the run's summary
        already says why it failed)."""
        if not self._file.closed:
            try:
                self._file.close()
            except OSError:
                pass


def check_log(path: Path, columns: list[str], size: int) -> None:
    """Before a resumed run touches its logs: ``path`` has the header ``columns`` and at
    least ``size`` bytes, the last of them ending a row.

    Raises:
        RunFolderError: it does not (the run folder no longer matches its checkpoint).
    """
    try:
        with open(path, "rb") as f:
            header = f.readline().decode("utf-8", "replace").rstrip("\n")
            length = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - 1))
            last = f.read(1)
    except OSError as exc:
        raise RunFolderError(f"{path}: unreadable ({exc.strerror or exc})") from None
    if header != ",".join(columns):
        raise RunFolderError(f"{path}: its columns are not the ones this run writes")
    if length < size or last != b"\n":
        raise RunFolderError(
            f"{path}: shorter than at the checkpoint ({length:,} bytes, {size:,} expected)"
        )


class RunWriter:
    """Writes one run folder while a run trains (``resume_at``: a resumed run's, each log
    going on from the byte its checkpoint recorded)."""

    def __init__(
        self,
        path: Path,
        step_columns: list[str],
        eval_columns: list[str] = EVAL_COLUMNS,
        resume_at: dict[str, int] | None = None,
    ) -> None:
        self.path = path
        self.resume_at = resume_at
        self.logs: list[CsvLog] = []
        self.steps = self.add_log(STEPS_FILE, step_columns)
        self.evals = self.add_log(EVALS_FILE, eval_columns)
        self.meta: dict[str, Any] = {}

    @classmethod
    def create(
        cls,
        runs_dir: str | Path,
        name: str,
        config_yaml: str,
        meta: dict[str, Any],
        step_columns: list[str],
        folder: Path | None = None,
        eval_columns: list[str] = EVAL_COLUMNS,
    ) -> RunWriter:
        """Claim a new run folder (or take ``folder``, an empty one already claimed, as a
        sweep does so that it knows every run's folder) and write its first files."""
        path = folder if folder is not None else create_run_folder(runs_dir, name)
        (path / CONFIG_FILE).write_text(config_yaml, encoding="utf-8")
        writer = cls(path, step_columns, eval_columns)
        writer.write_meta(meta)
        write_json(path / SUMMARY_FILE, {"status": "running", "pid": os.getpid()})
        return writer

    def write_meta(self, meta: dict[str, Any]) -> None:
        self.meta.update(meta)
        write_json(self.path / META_FILE, self.meta)

    def write_summary(self, summary: dict[str, Any]) -> None:
        if summary.get("status") not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        write_json(self.path / SUMMARY_FILE, summary)

    def add_log(self, filename: str, columns: list[str]) -> CsvLog:
        """Another append-only CSV file in the run folder (closed with the run)."""
        at = self.resume_at.get(filename) if self.resume_at is not None else None
        log = CsvLog(self.path / filename, columns, at)
        self.logs.append(log)
        return log

    def sizes(self) -> dict[str, int]:
        """Each log's file name and bytes written so far (a checkpoint's)."""
        return {log.path.name: log.size() for log in self.logs}

    def close(self) -> None:
        for log in self.logs:
            log.close()


# --------------------------------------------------------------------------- reading


def read_json(path: Path) -> dict[str, Any]:
    """A run folder's JSON file: a small regular file holding an object (a FIFO, a device,
    a huge or half-written file is a RunFolderError, never a hang or a traceback)."""
    try:
        data = json.loads(read_small_text_file(path, error=RunFolderError))
    except RunFolderError as exc:
        raise RunFolderError(
            str(exc).replace(f"{path}: no such file", f"{path}: missing")
        ) from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise RunFolderError(f"{path}: unreadable ({str(exc)[:200]})") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{path}: expected a JSON object")
    return data


def read_summary(run: str | Path) -> dict[str, Any]:
    return read_json(Path(run) / SUMMARY_FILE)


def read_meta(run: str | Path) -> dict[str, Any]:
    return read_json(Path(run) / META_FILE)


def read_config(run: str | Path) -> dict[str, Any]:
    """The resolved config a run was trained with, as plain data. A config written before
    ``optim.name`` existed gets ``optim.name: sgd`` (the only optimizer then)."""
    path = Path(run) / CONFIG_FILE
    try:
        text = read_small_text_file(path, error=RunFolderError)
        data = yaml.load(text, Loader=_YAML_LOADER)
    except RunFolderError as exc:
        raise RunFolderError(
            str(exc).replace(f"{path}: no such file", f"{path}: missing")
        ) from None
    except (yaml.YAMLError, RecursionError, ValueError, OverflowError) as exc:
        raise RunFolderError(f"{path}: unreadable ({str(exc)[:200]})") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{path}: expected a mapping")
    optim = data.get("optim")
    if isinstance(optim, dict) and "name" not in optim:
        data["optim"] = {"name": "sgd", **optim}
    return data


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
