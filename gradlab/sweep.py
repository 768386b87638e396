"""Sweeps: expand a grid of experiments, run them in parallel (local processes or Ray),
resume what is already done, and record it all in ``sweep.json``.

A sweep file::

    name: editing-study              # the sweep folder: <runs dir>/<name>/
    base: ../baseline.yaml           # a config file (relative to this file) or a mapping
    set: {data.name: mnist-sample}   # overrides for every run
    list:                            # explicit sets of overrides (each one a variant)
      - {name: baseline, edit: []}
      - {name: clip, edit: [{type: clip_norm, max_norm: 1.0}]}
    grid:                            # cartesian product of key: [values]
      optim.lr: [0.01, 0.1]
    seeds: [0, 1, 2]

Runs = list entries x grid points x seeds, in that order.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gradlab.config import Config, config_from_dict, read_yaml_mapping, set_by_path
from gradlab.errors import ConfigError, GradlabError
from gradlab.runlog import read_meta, read_summary, write_json

SWEEP_KEYS = ("name", "base", "set", "list", "grid", "seeds")
SWEEP_FILE = "sweep.json"


@dataclass
class PlannedRun:
    """One run of a sweep: its overrides on top of the base and its resolved config."""

    index: int
    name: str
    seed: int
    overrides: dict[str, Any]
    config: dict[str, Any]  # resolved (plain data)
    hash: str
    status: str = "pending"  # pending, done, failed, diverged, skipped, interrupted
    folder: str | None = None  # the run folder's name, inside the sweep folder
    error: str | None = None


@dataclass
class Sweep:
    name: str
    source: str
    runs: list[PlannedRun] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "runs": [{k: v for k, v in asdict(r).items() if k != "config"} for r in self.runs],
        }


# --------------------------------------------------------------------------- expansion


def load_sweep(path: str | Path) -> Sweep:
    """Read and expand a sweep file; every invalid expansion is reported at once.

    Raises:
        ConfigError: the file is malformed, or some expanded runs do not validate (one
            line per run, all of them).
    """
    path = Path(path)
    raw = read_yaml_mapping(path)
    unknown = [k for k in raw if k not in SWEEP_KEYS]
    if unknown:
        raise ConfigError(
            f"{path}: unknown key {unknown[0]!r}; valid keys: {', '.join(SWEEP_KEYS)}"
        )
    name = str(raw.get("name") or path.stem)
    base = raw.get("base", {})
    if isinstance(base, str):
        base = read_yaml_mapping((path.parent / base).resolve())
    elif not isinstance(base, dict):
        raise ConfigError(f"{path}: base: expected a config file path or a mapping")
    variants = _variants(path, raw)
    seeds = raw.get("seeds")
    if seeds is not None and (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and s >= 0 for s in seeds)
    ):
        raise ConfigError(f"{path}: seeds: expected a list of whole numbers >= 0, got {seeds!r}")

    sweep = Sweep(name=name, source=str(path))
    problems = []
    for variant_index, overrides in enumerate(variants):
        for seed in seeds or [None]:
            full = {**overrides, **({"seed": seed} if seed is not None else {})}
            index = len(sweep.runs) + len(problems)
            default_name = {} if "name" in overrides else {"name": f"{name}-{variant_index}"}
            try:
                config = _resolve(base, {**default_name, **full}, f"run {index}")
            except ConfigError as exc:
                problems.append(f"{exc} [overrides: {_short(full)}]")
                continue
            sweep.runs.append(
                PlannedRun(
                    index=index,
                    name=config.name,
                    seed=config.seed,
                    overrides=full,
                    config=config.to_dict(),
                    hash=config.experiment_hash(),
                )
            )
    if problems:
        shown = "\n".join(problems)
        raise ConfigError(
            f"{path}: {len(problems)} of {len(problems) + len(sweep.runs)} runs are invalid:\n{shown}"
        )
    return sweep


def _variants(path: Path, raw: dict[str, Any]) -> list[dict[str, Any]]:
    """list entries x grid points, each as a flat mapping of dotted key -> value."""
    common = raw.get("set") or {}
    entries = raw.get("list") or [{}]
    grid = raw.get("grid") or {}
    if not isinstance(common, dict):
        raise ConfigError(f"{path}: set: expected a mapping of key: value")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{path}: list: expected a list of mappings of key: value")
    if not isinstance(grid, dict):
        raise ConfigError(f"{path}: grid: expected a mapping of key: [values]")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(
                f"{path}: grid.{key}: expected a non-empty list of values, got {values!r}"
            )
    points = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
    return [{**common, **entry, **point} for entry in entries for point in points]


def _resolve(base: dict[str, Any], overrides: dict[str, Any], where: str) -> Config:
    raw = copy.deepcopy(base)
    for key, value in overrides.items():
        set_by_path(raw, str(key), copy.deepcopy(value))
    return config_from_dict(raw, source=where)


def _short(overrides: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={json.dumps(v)}" for k, v in overrides.items())
    return text if len(text) < 120 else text[:117] + "..."


# --------------------------------------------------------------------------- resume


def completed_runs(sweep_dir: Path) -> dict[str, Path]:
    """experiment hash -> folder of every completed run already in ``sweep_dir``."""
    done: dict[str, Path] = {}
    if not sweep_dir.is_dir():
        return done
    for folder in sorted(sweep_dir.iterdir()):
        if not folder.is_dir():
            continue
        try:
            if read_summary(folder).get("status") == "completed":
                done[read_meta(folder)["experiment_hash"]] = folder
        except (GradlabError, KeyError):
            continue
    return done


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

    run = RunWriter.create(
        sweep_dir, cfg.name, cfg.to_yaml(), {"experiment_hash": cfg.experiment_hash()}, ["step"]
    )
    run.write_summary({"status": "failed", "steps": 0, "error": error})
    run.close()
    return {"status": "failed", "folder": run.path.name, "error": error}


# --------------------------------------------------------------------------- executors

Event = Callable[[PlannedRun], None]


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


# --------------------------------------------------------------------------- the sweep


def execute(
    sweep: Sweep,
    runs_dir: str | Path = "runs",
    executor: str = "local",
    jobs: int | None = None,
    address: str | None = None,
    rerun: bool = False,
    on_event: Callable[[str, PlannedRun], None] | None = None,
) -> Path:
    """Run a sweep into ``<runs_dir>/<sweep name>/``, skipping completed runs unless
    ``rerun``; keeps ``sweep.json`` there up to date. Returns the sweep folder.

    Raises:
        KeyboardInterrupt: after recording the interrupted and not-started runs.
    """
    sweep_dir = Path(runs_dir) / sweep.name
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GradlabError(f"cannot create the sweep folder {sweep_dir}: {exc.strerror}") from None
    jobs = jobs or os.cpu_count() or 1
    done = {} if rerun else completed_runs(sweep_dir)
    todo = []
    for run in sweep.runs:
        if run.hash in done:
            run.status, run.folder = "skipped", done[run.hash].name
        else:
            todo.append(run)
    record = {
        **sweep.record(),
        "executor": executor,
        "jobs": jobs,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }

    def save() -> None:
        write_json(sweep_dir / SWEEP_FILE, {**record, "runs": sweep.record()["runs"]})

    def notify(kind: str) -> Event:
        def event(run: PlannedRun) -> None:
            if kind == "done":
                save()
            if on_event is not None:
                on_event(kind, run)

        return event

    save()
    try:
        if todo:
            if executor == "ray":
                run_ray(todo, sweep_dir, address, jobs, notify("start"), notify("done"))
            else:
                run_local(todo, sweep_dir, jobs, notify("start"), notify("done"))
    finally:
        for run in todo:
            if run.status == "pending":
                run.status, run.error = "interrupted", "not started: the sweep was interrupted"
        save()
    return sweep_dir


def describe(sweep: Sweep) -> str:
    """The expanded runs, one line each, for --dry-run: index, name, seed, overrides."""
    width = max(len(r.name) for r in sweep.runs) if sweep.runs else 4
    lines = [
        f"{r.index:>4}  {r.name:<{width}}  seed {r.seed:<4} {json.dumps(r.overrides)}"
        for r in sweep.runs
    ]
    return "\n".join(lines) + "\n"
