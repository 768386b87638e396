"""Running a sweep: its planned runs (:mod:`gradlab.sweeps.plan`) in parallel, in local
worker processes (:mod:`gradlab.sweeps.local`) or Ray tasks
(:mod:`gradlab.sweeps.ray_executor`); what is already done is resumed, all of it is recorded
in ``sweep.json``, and Ctrl-C, SIGTERM and SIGHUP stop it cleanly."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gradlab.errors import GradlabError
from gradlab.identity import run_experiment_key
from gradlab.runlog import (
    CHECKPOINT_FILES,
    SWEEP_FILE,
    read_config,
    read_meta,
    read_summary,
    run_status,
    write_json,
)
from gradlab.sweeps.local import run_local
from gradlab.sweeps.spec import PlannedRun, Sweep
from gradlab.sweeps.worker import NOT_STARTED, Event

LOCK_FILE = ".lock"
EXECUTORS = ("local", "ray")


# --------------------------------------------------------------------------- resume


def previous_runs(
    sweep_dir: Path,
) -> tuple[dict[tuple[str, int], Path], dict[tuple[str, int], Path]]:
    """The runs already in ``sweep_dir``, by (experiment key, seed): the newest completed
    one of each, and the newest one that stopped before its end (interrupted, failed or
    crashed) with a checkpoint to go on from.

    The key is computed from each folder's config.yaml and meta.json (not the hash its
    meta.json recorded), so runs written under an older definition still count.
    """
    done: dict[tuple[str, int], Path] = {}
    stopped: dict[tuple[str, int], Path] = {}
    if not sweep_dir.is_dir():
        return done, stopped
    for folder in sorted(sweep_dir.iterdir()):  # names end in their start time: newest last
        if not folder.is_dir():
            continue
        try:
            summary = read_summary(folder)
            status = summary.get("status")
            if status == "completed" or any((folder / n).is_file() for n in CHECKPOINT_FILES):
                config, meta = read_config(folder), read_meta(folder)
                key = (run_experiment_key(config, meta), int(config.get("seed", 0)))
                if status == "completed":
                    done[key] = folder
                elif run_status(summary, meta, folder) in ("interrupted", "failed", "crashed"):
                    stopped[key] = folder
        except (GradlabError, KeyError, TypeError, ValueError):
            continue
    return done, stopped


def previous_record(sweep_dir: Path) -> list[dict[str, Any]]:
    """The expansions earlier invocations of the sweep recorded in ``sweep.json``, oldest
    first (its ``history`` and its latest). An unreadable file is kept aside as
    ``sweep.json.unreadable`` rather than overwritten."""
    path = sweep_dir / SWEEP_FILE
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError):
        os.replace(path, path.with_name(SWEEP_FILE + ".unreadable"))
        return []
    history = data.pop("history", [])
    return [*(history if isinstance(history, list) else []), data]


# --------------------------------------------------------------------------- the sweep


def keep_source(source: str, sweep_dir: Path) -> str | None:
    """Copy the sweep file ``source`` into ``sweep_dir`` as ``sweep-file-<sha256[:12]>.yaml``
    (each version of the file once; a file, so every folder there is still a run); its name,
    or None when it is not a readable file (a sweep built in Python) or the copy cannot be
    written."""
    import hashlib

    path = Path(source)
    try:
        data = path.read_bytes() if path.is_file() else None
        if data is None:
            return None
        name = f"sweep-file-{hashlib.sha256(data).hexdigest()[:12]}{path.suffix}"
        sweep_dir.mkdir(parents=True, exist_ok=True)
        copy = sweep_dir / name
        if not copy.exists():
            copy.write_bytes(data)
        return name
    except OSError:
        return None


def run_sweep(
    sweep: Sweep,
    runs_dir: str | Path = "runs",
    executor: str = "local",
    jobs: int | None = None,
    address: str | None = None,
    rerun: bool = False,
    on_event: Callable[[str, PlannedRun], None] | None = None,
    shared_dir: bool | None = None,
    restart: bool = False,
) -> Path:
    """Run a sweep into ``<runs_dir>/<sweep name>/``, skipping completed runs unless
    ``rerun``, and resuming interrupted, failed and crashed ones from their checkpoints
    unless ``restart`` (or ``rerun``), which trains them again from step 0; keeps
    ``sweep.json`` there up to date. Returns the sweep folder; each run's
    ``status``, ``folder`` and ``error`` in ``sweep.runs`` say how it ended.

    ``executor``: ``local`` (``jobs`` worker processes, default one per core) or ``ray``
    (``address``: a cluster, default a local Ray). ``shared_dir`` (Ray): None = detect
    whether the tasks see the sweep folder, True = require it, False = always copy the
    finished run folders back (see :mod:`gradlab.sweeps.ray_executor`).

    ``on_event(kind, run)`` hears ``skip`` (already completed), ``start`` (``run.resume``
    says whether it goes on from a checkpoint) and ``done`` (the run's ``status`` then says
    how it ended).

    Ctrl-C (SIGINT), SIGTERM and SIGHUP stop the sweep cleanly, in the main thread: nothing
    new starts, the running runs finish their step and end ``interrupted`` with everything
    they logged, the queued ones are recorded as not started; then it returns with
    ``sweep.signal`` set to the signal's name (the CLI exits with 128 + its number).

    A program that runs several sweeps should look at ``sweep.signal`` after each: a
    stopped sweep returns like a finished one (where the CLI exits with 128 + the signal's
    number).

    Raises:
        GradlabError: an unknown ``executor``, ``jobs`` below 1, or the sweep folder cannot
            be created or locked (another sweep runs in it).
    """
    if executor not in EXECUTORS:
        raise GradlabError(
            f"executor {executor!r}: use {' or '.join(EXECUTORS)}", argument="executor"
        )
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise GradlabError(
            f"jobs {jobs!r}: runs at a time, a whole number from 1 (None: one per core)",
            argument="jobs",
        )
    sweep_dir = Path(runs_dir) / sweep.name
    with _stop_signals() as stopped_by:
        try:
            try:
                sweep_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise GradlabError(
                    f"cannot create the sweep folder {sweep_dir}: {exc.strerror}"
                ) from None
            lock = lock_sweep_folder(sweep_dir)
            try:
                _execute(
                    sweep, sweep_dir, executor, jobs, address, rerun, on_event, shared_dir,
                    restart,
                )  # fmt: skip
            finally:
                lock.close()
        except KeyboardInterrupt:
            stopped_by.append("SIGINT")
    sweep.signal = stopped_by[0] if stopped_by else None
    return sweep_dir


@contextlib.contextmanager
def _stop_signals() -> Iterator[list[str]]:
    """SIGTERM and SIGHUP end the sweep as Ctrl-C does (a KeyboardInterrupt, the first one
    only: the runs are stopping); Ctrl-C raises even where the process inherited it
    ignored. Yields the list that records the first stop signal's name. Outside the main
    thread signals cannot be handled here: nothing changes."""
    stopped_by: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield stopped_by
        return

    def stop(signum: int, frame: Any) -> None:
        if not stopped_by:
            stopped_by.append(signal.Signals(signum).name)
            raise KeyboardInterrupt

    handlers: dict[int, Any] = {signal.SIGINT: signal.default_int_handler}
    handlers.update({s: stop for s in (signal.SIGTERM, signal.SIGHUP)})
    previous = {s: signal.signal(s, h) for s, h in handlers.items()}
    try:
        yield stopped_by
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def lock_sweep_folder(sweep_dir: Path):
    """Hold an exclusive lock on the sweep folder (released when the process ends, however
    it ends): a second ``gradlab sweep`` of the same sweep stops with one line instead of
    training the same runs twice.

    Raises:
        GradlabError: another process holds the lock.
    """
    path = sweep_dir / LOCK_FILE
    try:
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the whole sweep
    except OSError as exc:
        raise GradlabError(
            f"cannot lock the sweep folder: {path}: {exc.strerror or exc}; is it writable?"
        ) from None
    try:
        import fcntl
    except ImportError:  # no POSIX locks on this system: no protection, nothing else changes
        return handle
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise GradlabError(
            f"another gradlab sweep is running in {sweep_dir} (pid {holder}); wait for it to "
            "finish or stop it, then run this sweep again (completed runs are kept)"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _execute(
    sweep: Sweep,
    sweep_dir: Path,
    executor: str,
    jobs: int | None,
    address: str | None,
    rerun: bool,
    on_event: Callable[[str, PlannedRun], None] | None,
    shared_dir: bool | None = None,
    restart: bool = False,
) -> Path:
    jobs = jobs or os.cpu_count() or 1
    done, stopped = previous_runs(sweep_dir)
    if rerun:
        done = {}
    if rerun or restart:
        stopped = {}
    todo = []
    for run in sweep.runs:
        if (run.hash, run.seed) in done:
            run.status, run.folder = "skipped", done[(run.hash, run.seed)].name
        else:
            if (run.hash, run.seed) in stopped:  # goes on from its checkpoint, in its folder
                run.resume, run.folder = True, stopped[(run.hash, run.seed)].name
            todo.append(run)
    history = previous_record(sweep_dir)
    record = {
        **sweep.record(),
        "source_copy": keep_source(sweep.source, sweep_dir),
        "executor": executor,
        "jobs": jobs,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }

    def save() -> None:
        current = {**record, "runs": sweep.record()["runs"]}
        try:
            write_json(sweep_dir / SWEEP_FILE, {**current, "history": history})
            sweep.write_error = None
        except OSError as exc:  # a full disk: the runs go on, the CLI says what was lost
            sweep.write_error = f"cannot write {sweep_dir / SWEEP_FILE}: {exc.strerror or exc}"

    def notify(kind: str) -> Event:
        def event(run: PlannedRun) -> None:
            if kind == "start":
                run.status = "running"
            save()
            if on_event is not None:
                on_event(kind, run)

        return event

    save()
    if on_event is not None:
        for run in sweep.runs:
            if run.status == "skipped":
                on_event("skip", run)
    try:
        if todo:
            if executor == "ray":
                from gradlab.sweeps.ray_executor import run_ray

                run_ray(todo, sweep_dir, address, jobs, notify("start"), notify("done"), shared_dir)
            else:
                run_local(todo, sweep_dir, jobs, notify("start"), notify("done"))
    finally:
        for run in todo:
            if run.status in ("pending", "running"):
                started = run.status == "running"
                run.status = "interrupted"
                run.error = run.error or ("the sweep was interrupted" if started else NOT_STARTED)
        save()
    return sweep_dir
