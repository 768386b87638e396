"""Where sweep runs execute: worker processes on this machine, or Ray tasks.

Both call :func:`run_one`, which never raises for a failing run, and report each run's start
and end through callbacks so the sweep can show progress and keep ``sweep.json`` current.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradlab.config import Config, config_from_dict
from gradlab.errors import GradlabError

if TYPE_CHECKING:
    from gradlab.sweep import PlannedRun


# --------------------------------------------------------------------------- one run


def run_one(config: dict[str, Any], sweep_dir: str, threads: int | None = None) -> dict[str, Any]:
    """Train one run of a sweep (in a worker process or a Ray task).

    Never raises for a failing run: a problem found before training (missing data, no such
    device) still gets a run folder whose summary says failed, with the error.
    """
    import torch

    from gradlab.train import train

    if threads:
        torch.set_num_threads(threads)
    cfg = config_from_dict(config)
    try:
        result = train(cfg, sweep_dir)
        return {
            "status": result.summary["status"],
            "folder": result.path.name,
            "error": result.summary.get("error"),
        }
    except GradlabError as exc:
        return _record_setup_failure(cfg, sweep_dir, str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug: still recorded, the others go on
        return _record_setup_failure(cfg, sweep_dir, f"{type(exc).__name__}: {exc}")


def _record_setup_failure(cfg: Config, sweep_dir: str, error: str) -> dict[str, Any]:
    from gradlab.runlog import RunWriter
    from gradlab.train import resolved_setup

    setup = resolved_setup(cfg)
    meta = {
        "experiment_hash": cfg.experiment_hash(setup),
        "seed": cfg.seed,
        "device": setup["device"],
        "amp": {"dtype": setup["amp"], "grad_scaler": setup["grad_scaler"]},
        "engine": setup["engine"],
    }
    run = RunWriter.create(sweep_dir, cfg.name, cfg.to_yaml(), meta, ["step"])
    run.write_summary({"status": "failed", "steps": 0, "error": error})
    run.close()
    return {"status": "failed", "folder": run.path.name, "error": error}


# --------------------------------------------------------------------------- executors

Event = Callable[["PlannedRun"], None]


def _worker_init(threads: int) -> None:
    """Each worker gets its share of the cores, and ignores Ctrl-C between runs (during a
    run, training's own handler finishes the step and ends the run as interrupted)."""
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)


def run_local(
    runs: list[PlannedRun], sweep_dir: Path, jobs: int, on_start: Event, on_done: Event
) -> None:
    """Run ``runs`` in ``jobs`` worker processes (spawned, each with cores / jobs threads).

    Ctrl-C: nothing new starts; running runs finish their step and end as interrupted.
    """
    import concurrent.futures as cf
    import multiprocessing

    threads = max(1, (os.cpu_count() or 1) // jobs)
    context = multiprocessing.get_context("spawn")
    queue = list(runs)
    active: dict[cf.Future, PlannedRun] = {}
    with cf.ProcessPoolExecutor(
        jobs, mp_context=context, initializer=_worker_init, initargs=(threads,)
    ) as pool:
        try:
            while queue or active:
                while queue and len(active) < jobs:  # never more queued than can run
                    run = queue.pop(0)
                    active[pool.submit(run_one, run.config, str(sweep_dir))] = run
                    on_start(run)
                finished, _ = cf.wait(active, timeout=0.5, return_when=cf.FIRST_COMPLETED)
                for future in finished:
                    _finish(active.pop(future), future, on_done)
        except KeyboardInterrupt:
            for run in queue:
                run.status, run.error = "interrupted", "not started: the sweep was interrupted"
            while active:  # ask the workers to stop their runs until they have
                _interrupt_workers(pool)
                finished, _ = cf.wait(active, timeout=1.0)
                for future in finished:
                    _finish(active.pop(future), future, on_done)
            raise


def _interrupt_workers(pool) -> None:
    """SIGINT to every worker: a running run finishes its step and ends as interrupted
    (workers ignore it between runs). Needed when only this process got the Ctrl-C."""
    import signal

    for process in list(getattr(pool, "_processes", {}).values()):
        try:
            os.kill(process.pid, signal.SIGINT)
        except (ProcessLookupError, AttributeError, TypeError):
            pass


def _finish(run: PlannedRun, future, on_done: Event) -> None:
    try:
        result = future.result()
    except Exception as exc:  # noqa: BLE001 - a worker that died: record it, go on
        result = {"status": "failed", "folder": None, "error": f"{type(exc).__name__}: {exc}"}
    run.status = "done" if result["status"] == "completed" else result["status"]
    run.folder, run.error = result["folder"], result.get("error")
    on_done(run)


def run_ray(
    runs: list[PlannedRun],
    sweep_dir: Path,
    address: str | None,
    jobs: int,
    on_start: Event,
    on_done: Event,
) -> None:
    """Submit each run as a Ray task: to the cluster at ``address``, else to a local Ray
    started here with ``jobs`` CPUs. Run folders go to ``sweep_dir``, which must be on a
    file system every node shares."""
    try:
        import ray
    except ImportError:
        raise GradlabError("--executor ray needs Ray: pip install 'gradlab[ray]'") from None
    if address:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    else:
        ray.init(
            num_cpus=jobs, ignore_reinit_error=True, log_to_driver=False, include_dashboard=False
        )
    try:
        task = ray.remote(num_cpus=1)(run_one)
        refs = {task.remote(run.config, str(sweep_dir), 1): run for run in runs}
        for run in runs:
            on_start(run)
        pending = list(refs)
        try:
            while pending:
                finished, pending = ray.wait(pending, num_returns=1)
                for ref in finished:
                    run = refs[ref]
                    try:
                        result = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - a task that died: record it
                        result = {
                            "status": "failed",
                            "folder": None,
                            "error": f"{type(exc).__name__}: {exc}",
                        }
                    run.status = "done" if result["status"] == "completed" else result["status"]
                    run.folder, run.error = result["folder"], result.get("error")
                    on_done(run)
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref)
                refs[ref].status, refs[ref].error = (
                    "interrupted",
                    "cancelled: the sweep was interrupted",
                )
            raise
    finally:
        if not address:
            ray.shutdown()
