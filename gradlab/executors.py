"""Where sweep runs execute: worker processes on this machine, or Ray tasks.

Both call :func:`run_one`, which never raises for a failing run, and report each run's start
and end through callbacks so the sweep can show progress and keep ``sweep.json`` current.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradlab.config import Config, config_from_dict
from gradlab.errors import GradlabError

if TYPE_CHECKING:
    from gradlab.plan import PlannedRun


# --------------------------------------------------------------------------- one run


def run_one(
    config: dict[str, Any],
    sweep_dir: str,
    threads: int | None = None,
    folder: str | None = None,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """Train one run of a sweep (in a worker process or a Ray task) into ``folder``, an
    empty run folder the sweep claimed for it (so that it knows the folder even if this
    process dies). ``command``: the sweep's command line, recorded in meta.json (default:
    this process's ``sys.argv``, which in a Ray worker is Ray's, not the sweep's).

    Never raises for a failing run: a problem found before training (missing data, no such
    device) still gets a run folder whose summary says failed, with the error.
    """
    import torch

    from gradlab.train import train

    if threads:
        torch.set_num_threads(threads)
    cfg = config_from_dict(config)
    run_folder = Path(folder) if folder else None
    try:
        result = train(cfg, sweep_dir, command=command, run_folder=run_folder)
        return {
            "status": result.summary["status"],
            "folder": result.path.name,
            "error": result.summary.get("error"),
        }
    except GradlabError as exc:
        return record_failure(cfg, sweep_dir, str(exc), run_folder)
    except Exception as exc:  # noqa: BLE001 - a bug: still recorded, the others go on
        return record_failure(cfg, sweep_dir, f"{type(exc).__name__}: {exc}", run_folder)


def record_failure(
    cfg: Config,
    sweep_dir: str | Path,
    error: str,
    folder: Path | None = None,
    status: str = "failed",
) -> dict[str, Any]:
    """Make ``folder`` (or a new run folder) say that its run ended as ``status`` (failed, or
    interrupted) with ``error``: its config and a minimal meta.json when the run never
    wrote them, and a summary with what the run logged, unless the run already ended with a
    summary of its own (which then stands)."""
    from gradlab.reading import figures_from_logs
    from gradlab.runlog import (
        CONFIG_FILE,
        SUMMARY_FILE,
        RunWriter,
        create_run_folder,
        read_summary,
        write_json,
    )
    from gradlab.train import resolved_setup

    folder = folder if folder is not None else create_run_folder(sweep_dir, cfg.name)
    if not (folder / CONFIG_FILE).exists():
        setup = resolved_setup(cfg)
        meta = {
            "experiment_hash": cfg.experiment_hash(setup),
            "seed": cfg.seed,
            "device": setup["device"],
            "amp": {"dtype": setup["amp"], "grad_scaler": setup["grad_scaler"]},
            "engine": setup["engine"],
        }
        RunWriter.create(sweep_dir, cfg.name, cfg.to_yaml(), meta, ["step"], folder=folder).close()
    try:
        previous = read_summary(folder).get("status")
    except GradlabError:
        previous = None
    if previous in (None, "running"):
        summary = {"steps": 0, **figures_from_logs(folder), "status": status, "error": error}
        write_json(folder / SUMMARY_FILE, summary)
        return {"status": status, "folder": folder.name, "error": error}
    return {"status": previous, "folder": folder.name, "error": None}


def _claim_folder(sweep_dir: Path, run: PlannedRun) -> Path:
    from gradlab.runlog import create_run_folder

    folder = create_run_folder(sweep_dir, run.name)
    run.folder = folder.name
    return folder


def _record(run: PlannedRun, result: dict[str, Any], on_done: Event) -> None:
    run.status = "done" if result["status"] == "completed" else result["status"]
    run.folder, run.error = result.get("folder") or run.folder, result.get("error")
    on_done(run)


_STOP_SIGNALS = {"SIGINT", "SIGTERM", "SIGHUP"}


def _died(
    run: PlannedRun, sweep_dir: Path, why: str, signal_name: str | None = None, stopping=False
) -> dict[str, Any]:
    """The result of a run whose process died: its folder says so (unless the run had
    already written a final summary). Killed by a stop signal, or while the sweep was
    being stopped, the run was interrupted; otherwise it failed. Never raises: a folder
    that cannot be written (a full disk) leaves only the sweep's record."""
    status = "interrupted" if stopping or signal_name in _STOP_SIGNALS else "failed"
    folder = sweep_dir / run.folder if run.folder else None
    try:
        return record_failure(config_from_dict(run.config), sweep_dir, why, folder, status)
    except Exception as exc:  # noqa: BLE001 - the record is all that is left
        return {"status": status, "folder": run.folder, "error": f"{why}; and {exc}"}


# --------------------------------------------------------------------------- local workers

Event = Callable[["PlannedRun"], None]


def _worker_main(conn, threads: int, parent: int) -> None:
    """A worker process: runs one run at a time for the sweep, until told to stop.

    It ignores Ctrl-C between runs (during a run, training's own handler finishes the
    step and ends the run as interrupted), and stops its run and exits when the sweep
    process is gone, so that no worker outlives its sweep.
    """
    import threading

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)

    def orphan_watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:  # re-parented: the sweep died without telling us
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(30)
                os._exit(1)

    threading.Thread(target=orphan_watch, daemon=True).start()
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        result = run_one(*task)
        try:
            conn.send(result)
        except (BrokenPipeError, OSError):
            return


class _Worker:
    """One worker process and the pipe to it."""

    def __init__(self, context, threads: int) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=_worker_main, args=(child, threads, os.getpid()), daemon=True
        )
        self.process.start()
        child.close()

    def death(self) -> tuple[str, str | None]:
        """Why the process died, and the name of the signal that killed it (if one did)."""
        self.process.join(timeout=1)
        code = self.process.exitcode
        name = None
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:  # a real-time signal has no name
                name = f"signal {-code}"
            how = f"killed by {name}"
        else:
            how = f"exit code {code}"
        return f"the worker process died ({how}) while training this run", name

    def stop(self, timeout: float = 5.0) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout)
        self.conn.close()


def run_local(
    runs: list[PlannedRun], sweep_dir: Path, jobs: int, on_start: Event, on_done: Event
) -> None:
    """Run ``runs`` in ``jobs`` worker processes (spawned, each with cores / jobs threads).

    A worker that dies (killed, out of memory, a crash in native code) fails only its own
    run, whose folder says so, and is replaced; the others go on. Ctrl-C (or a
    KeyboardInterrupt raised by a SIGTERM handler): nothing new starts; running runs finish
    their step and end as interrupted; then every worker is stopped.
    """
    import multiprocessing
    from multiprocessing.connection import wait

    threads = max(1, (os.cpu_count() or 1) // jobs)
    command = [str(arg) for arg in sys.argv]  # the sweep's, recorded in each run's meta.json
    context = multiprocessing.get_context("spawn")
    queue = list(runs)
    idle: list[_Worker] = []
    busy: dict[_Worker, PlannedRun] = {}
    stopping = False

    def collect(timeout: float) -> None:
        ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout))
        for worker, run in list(busy.items()):
            if worker.conn not in ready and worker.process.sentinel not in ready:
                continue
            try:
                result = worker.conn.recv() if worker.conn.poll() else None
            except (EOFError, OSError):
                result = None
            del busy[worker]
            if result is None:  # the process died: only its run fails (or was interrupted)
                why, killed_by = worker.death()
                result = _died(run, sweep_dir, why, killed_by, stopping)
                worker.stop(timeout=0)
            else:
                idle.append(worker)
            _record(run, result, on_done)

    try:
        while queue or busy:
            while queue and len(busy) < jobs:
                run = queue.pop(0)
                worker = idle.pop() if idle else _Worker(context, threads)
                folder = _claim_folder(sweep_dir, run)
                worker.conn.send((run.config, str(sweep_dir), threads, str(folder), command))
                busy[worker] = run
                on_start(run)
            collect(timeout=0.5)
    except KeyboardInterrupt:
        stopping = True
        for run in queue:
            run.status, run.error = "interrupted", "not started: the sweep was interrupted"
        deadline = time.monotonic() + 120
        _signal_workers(busy, signal.SIGINT)  # the running runs finish their step and stop
        while busy and time.monotonic() < deadline:
            try:
                collect(timeout=1.0)
            except KeyboardInterrupt:
                continue
        for worker, run in list(busy.items()):  # did not stop in time: killed
            worker.process.kill()
            why = "killed: did not stop within two minutes of the sweep being interrupted"
            _record(run, _died(run, sweep_dir, why, stopping=True), on_done)
        busy.clear()
        raise
    finally:
        for worker in [*idle, *busy]:
            worker.stop()


def _signal_workers(busy: dict[_Worker, PlannedRun], number: int) -> None:
    for worker in busy:
        try:
            os.kill(worker.process.pid, number)
        except (ProcessLookupError, TypeError):
            pass
