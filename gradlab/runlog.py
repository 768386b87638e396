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
import time
from pathlib import Path
from typing import Any

import yaml

from gradlab.errors import RunFolderError

CONFIG_FILE = "config.yaml"
META_FILE = "meta.json"
STEPS_FILE = "steps.csv"
EVALS_FILE = "evals.csv"
SUMMARY_FILE = "summary.json"
GRADS_FILE = "grads.csv"
ALERTS_FILE = "alerts.csv"
EVAL_COLUMNS = ["step", "epoch", "test_loss", "test_accuracy", "elapsed_s"]
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


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON through a temporary file and a rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


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
    """An append-only CSV file: header once, rows appended and flushed in batches."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.path = path
        self.columns = columns
        self._file = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115 - long-lived
        self._writer = csv.writer(self._file, lineterminator="\n")
        self._writer.writerow(columns)
        self._file.flush()

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
        if not self._file.closed:
            self._file.close()


class RunWriter:
    """Writes one run folder while a run trains."""

    def __init__(self, path: Path, step_columns: list[str]) -> None:
        self.path = path
        self.steps = CsvLog(path / STEPS_FILE, step_columns)
        self.evals = CsvLog(path / EVALS_FILE, EVAL_COLUMNS)
        self.logs = [self.steps, self.evals]
        self.meta: dict[str, Any] = {}

    @classmethod
    def create(
        cls,
        runs_dir: str | Path,
        name: str,
        config_yaml: str,
        meta: dict[str, Any],
        step_columns: list[str],
    ) -> RunWriter:
        path = create_run_folder(runs_dir, name)
        (path / CONFIG_FILE).write_text(config_yaml, encoding="utf-8")
        writer = cls(path, step_columns)
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
        log = CsvLog(self.path / filename, columns)
        self.logs.append(log)
        return log

    def close(self) -> None:
        for log in self.logs:
            log.close()


# --------------------------------------------------------------------------- reading


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunFolderError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFolderError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{path}: expected a JSON object")
    return data


def read_summary(run: str | Path) -> dict[str, Any]:
    return read_json(Path(run) / SUMMARY_FILE)


def read_meta(run: str | Path) -> dict[str, Any]:
    return read_json(Path(run) / META_FILE)


def read_config(run: str | Path) -> dict[str, Any]:
    """The resolved config a run was trained with, as plain data."""
    path = Path(run) / CONFIG_FILE
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)
    except FileNotFoundError:
        raise RunFolderError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RunFolderError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{path}: expected a mapping")
    return data
