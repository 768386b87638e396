"""Sweep runs in worker processes on this machine (spawned, one run at a time each).

A worker that dies fails (or, while the sweep stops, interrupts) only its own run; Ctrl-C
and the stop signals end the running runs cleanly (see :func:`run_local`).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from gradlab.sweeps.spec import PlannedRun
from gradlab.sweeps.worker import (
    NOT_STARTED,
    Event,
    claim_folder,
    died,
    record_result,
    run_one,
    run_sources,
)


def _worker_main(conn, threads: int, parent: int) -> None:
    """A worker process: runs one run at a time for the sweep, until told to stop.

    It ignores Ctrl-C between runs (during a run, training's own handler finishes the
    step and ends the run as interrupted), and stops its run and exits when the sweep
    process is gone, so that no worker outlives its sweep.
    """
    import threading

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # a process group of its own: Ctrl-C at the terminal reaches the sweep alone, which
    # passes one stop to each worker (a second signal would stop a run mid-step, before
    # the checkpoint of the step it stops at)
    os.setpgrp()
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
                result = died(run, sweep_dir, why, killed_by, stopping)
                worker.stop(timeout=0)
            else:
                idle.append(worker)
            record_result(run, result, on_done)

    try:
        while queue or busy:
            while queue and len(busy) < jobs:
                run = queue.pop(0)
                worker = idle.pop() if idle else _Worker(context, threads)
                folder = claim_folder(sweep_dir, run)
                worker.conn.send(
                    (
                        run.config,
                        str(sweep_dir),
                        threads,
                        str(folder),
                        command,
                        run_sources(run),
                        run.resume,
                    )  # fmt: skip
                )
                busy[worker] = run
                on_start(run)
            collect(timeout=0.5)
    except KeyboardInterrupt:
        stopping = True
        for run in queue:
            run.status, run.error = "interrupted", NOT_STARTED
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
            record_result(run, died(run, sweep_dir, why, stopping=True), on_done)
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
