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
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gradlab.config import Config, config_from_dict, read_yaml_mapping, set_by_path
from gradlab.errors import ConfigError, GradlabError
from gradlab.executors import Event, run_local, run_ray
from gradlab.identity import run_experiment_key
from gradlab.runlog import read_config, read_meta, read_summary, write_json

SWEEP_KEYS = ("name", "base", "set", "list", "grid", "seeds")
SWEEP_FILE = "sweep.json"


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
        write_json(sweep_dir / SWEEP_FILE, {**current, "history": history})

    def notify(kind: str) -> Event:
        def event(run: PlannedRun) -> None:
            if kind == "done":
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
