"""Sweeps: expand a grid of experiments, run them in parallel (local processes or Ray, see
:mod:`gradlab.executors`), resume what is already done, and record it all in ``sweep.json``.

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
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gradlab.config import (
    _NAME_PATTERN,
    Config,
    _show,
    config_from_dict,
    read_yaml_mapping,
    set_by_path,
)
from gradlab.errors import ConfigError, GradlabError
from gradlab.executors import Event, run_local, run_ray
from gradlab.identity import run_experiment_key
from gradlab.runlog import read_config, read_meta, read_summary, write_json

SWEEP_KEYS = ("name", "base", "set", "list", "grid", "seeds")
SWEEP_FILE = "sweep.json"
LOCK_FILE = ".lock"


@dataclass
class PlannedRun:
    """One run of a sweep: its overrides on top of the base and its resolved config.

    ``hash`` is the experiment's key (:mod:`gradlab.identity`), the same for every seed:
    a run is done when a completed run of the same experiment and seed is in the folder.
    """

    index: int
    name: str
    seed: int
    overrides: dict[str, Any]
    config: dict[str, Any]  # resolved (plain data)
    hash: str
    status: str = "pending"  # pending, running, done, failed, diverged, skipped, interrupted
    folder: str | None = None  # the run folder's name, inside the sweep folder
    error: str | None = None


@dataclass
class Sweep:
    name: str
    source: str
    runs: list[PlannedRun] = field(default_factory=list)
    write_error: str | None = None  # the last failure to write sweep.json, if any

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "runs": [{k: v for k, v in asdict(r).items() if k != "config"} for r in self.runs],
        }


# --------------------------------------------------------------------------- expansion


MAX_RUNS = 10_000
"""The most runs a sweep may expand to unless ``--max-runs`` raises it (counted before
anything is expanded)."""


def load_sweep(path: str | Path, max_runs: int = MAX_RUNS) -> Sweep:
    """Read and expand a sweep file; every invalid expansion is reported at once.

    Raises:
        ConfigError: the file is malformed, its name is not a valid folder name, it would
            expand to more than ``max_runs`` runs, two of its runs are the same experiment
            with the same seed, or some expanded runs do not validate (one line per run,
            all of them).
    """
    try:
        return _load_sweep(Path(path), max_runs)
    except RecursionError:  # aliases that pass the YAML limits but nest deeply when copied
        raise ConfigError(
            f"{path}: values nested too deeply (aliases of aliases); write them out"
        ) from None


def _load_sweep(path: Path, max_runs: int) -> Sweep:
    raw = read_yaml_mapping(path)
    unknown = [k for k in raw if k not in SWEEP_KEYS]
    if unknown:
        raise ConfigError(
            f"{path}: unknown key {_show(unknown[0])}; valid keys: {', '.join(SWEEP_KEYS)}"
        )
    name = raw.get("name") or path.stem
    if not isinstance(name, str) or not _NAME_PATTERN.match(name) or len(name) > 100:
        raise ConfigError(
            f"{path}: name: {_show(name)} is not a valid sweep name; it must start with a "
            "letter or digit and use only letters, digits, '.', '_', '-' (at most 100)"
        )
    base = raw.get("base", {})
    if isinstance(base, str):
        base = read_yaml_mapping((path.parent / base).resolve())
    elif not isinstance(base, dict):
        raise ConfigError(f"{path}: base: expected a config file path or a mapping")
    seeds = raw.get("seeds")
    if seeds is not None and (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
    ):
        raise ConfigError(
            f"{path}: seeds: expected a list of whole numbers >= 0, got {_show(seeds)}"
        )
    if seeds is not None and len(set(seeds)) < len(seeds):
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        raise ConfigError(f"{path}: seeds: {repeated} appear more than once; list each seed once")
    variants = _variants(path, raw, max_runs, len(seeds or [None]))

    from gradlab.train import resolved_setup

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
                    hash=config.experiment_hash(resolved_setup(config)),
                )
            )
    if problems:
        shown = "\n".join(problems)
        raise ConfigError(
            f"{path}: {len(problems)} of {len(problems) + len(sweep.runs)} runs are invalid:\n{shown}"
        )
    _check_no_duplicates(path, sweep)
    return sweep


def _check_no_duplicates(path: Path, sweep: Sweep) -> None:
    """Two runs of one sweep that are the same experiment with the same seed (entries that
    differ only in name, or in keys that change nothing) would share one result."""
    first: dict[tuple[str, int], PlannedRun] = {}
    clashes = []
    for run in sweep.runs:
        twin = first.setdefault((run.hash, run.seed), run)
        if twin is not run:
            clashes.append(f"run {run.index} ({run.name}) = run {twin.index} ({twin.name})")
    if clashes:
        more = f"; and {len(clashes) - 5} more" if len(clashes) > 5 else ""
        raise ConfigError(
            f"{path}: {len(clashes)} runs repeat another run (the same experiment and seed, "
            f"see 'What counts as the same experiment'): {'; '.join(clashes[:5])}{more}"
        )


def _variants(path: Path, raw: dict[str, Any], max_runs: int, n_seeds: int) -> list[dict[str, Any]]:
    """list entries x grid points, each as a flat mapping of dotted key -> value; counted
    before anything is built, so a grid that would be too large is refused at once."""
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
                f"{path}: grid.{str(key)[:100]}: expected a non-empty list of values, got {_show(values)}"
            )
    count = len(entries) * math.prod(len(v) for v in grid.values())
    if count * n_seeds > max_runs:
        raise ConfigError(
            f"{path}: the sweep expands to {count * n_seeds:,} runs ({count:,} variants x "
            f"{n_seeds} seeds), more than the limit of {max_runs:,}; raise it with --max-runs "
            "if you mean it"
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


def completed_runs(sweep_dir: Path) -> dict[tuple[str, int], Path]:
    """(experiment key, seed) -> folder of the newest completed run of it in ``sweep_dir``.

    The key is computed from each folder's config.yaml and meta.json (not the hash its
    meta.json recorded), so runs written under an older definition still count.
    """
    done: dict[tuple[str, int], Path] = {}
    if not sweep_dir.is_dir():
        return done
    for folder in sorted(sweep_dir.iterdir()):  # names end in their start time: newest last
        if not folder.is_dir():
            continue
        try:
            if read_summary(folder).get("status") == "completed":
                config, meta = read_config(folder), read_meta(folder)
                done[(run_experiment_key(config, meta), int(config.get("seed", 0)))] = folder
        except (GradlabError, KeyError, TypeError, ValueError):
            continue
    return done


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

    ``on_event(kind, run)`` hears ``skip`` (already completed), ``start`` and ``done`` (the
    run's ``status`` then says how it ended).

    Raises:
        KeyboardInterrupt: after recording the interrupted and not-started runs.
    """
    sweep_dir = Path(runs_dir) / sweep.name
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GradlabError(f"cannot create the sweep folder {sweep_dir}: {exc.strerror}") from None
    lock = lock_sweep_folder(sweep_dir)
    try:
        return _execute(sweep, sweep_dir, executor, jobs, address, rerun, on_event)
    finally:
        lock.close()


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
) -> Path:
    jobs = jobs or os.cpu_count() or 1
    done = {} if rerun else completed_runs(sweep_dir)
    todo = []
    for run in sweep.runs:
        if (run.hash, run.seed) in done:
            run.status, run.folder = "skipped", done[(run.hash, run.seed)].name
        else:
            todo.append(run)
    history = previous_record(sweep_dir)
    record = {
        **sweep.record(),
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
                run_ray(todo, sweep_dir, address, jobs, notify("start"), notify("done"))
            else:
                run_local(todo, sweep_dir, jobs, notify("start"), notify("done"))
    finally:
        for run in todo:
            if run.status in ("pending", "running"):
                started = run.status == "running"
                run.status = "interrupted"
                run.error = run.error or (
                    "the sweep was interrupted"
                    if started
                    else "not started: the sweep was interrupted"
                )
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
