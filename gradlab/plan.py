"""Sweep files -> the planned runs: entries x grid points x seeds, named by what varies.

A sweep file::

    name: lr-rescue                  # the sweep folder: <runs dir>/<name>/
    base: ../baseline.yaml           # a config file (relative to this file) or a mapping
    set: {data.name: mnist-sample}   # overrides for every run
    list:                            # the arms: explicit sets of overrides
      - {name: sgd, edit: []}
      - name: clip                   # an arm with its own grid (and seeds)
        edit: [{type: clip_norm}]
        grid: {edit.0.max_norm: [0.25, 1, 4]}
    grid:                            # crosses every arm: key: [values] or "v1,v2,..."
      optim.lr: 0.5,2
    seeds: [0, 1, 2, 3, 4]

Runs = for each entry, its grid points (the top-level grid crossed with its own) x its
seeds (its own, else the top-level ones), in that order. The command line adds ``--set``
(every run, over everything else) and ``--grid`` (one more axis, or one replaced).

A run is named after its entry (``name``; else the sweep's name, numbered when there are
several entries) followed by ``-<key>=<value>`` for every grid key that varies within the
entry, in a short stable form (``clip-max_norm=0.25``, ``sgd-lr=2``): see :func:`run_name`.
A name the grid itself sets, or ``--set name=...``, is used as it is.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gradlab.config import (
    _NAME_PATTERN,
    Config,
    _show,
    config_from_dict,
    parse_override,
    read_yaml_mapping,
    set_by_path,
)
from gradlab.errors import ConfigError
from gradlab.sweepsyntax import (  # noqa: F401  (public through the plan)
    MAX_NAME,
    parse_grid_option,
    run_name,
    short_keys,
    split_values,
    value_text,
)

SWEEP_KEYS = ("name", "base", "set", "list", "grid", "seeds")
ENTRY_KEYS = ("grid", "seeds")  # the keys of a list entry that are not config overrides
MAX_RUNS = 10_000
"""The most runs a sweep may expand to unless ``--max-runs`` raises it (counted before
anything is expanded)."""


@dataclass
class PlannedRun:
    """One run of a sweep: its overrides on top of the base and its resolved config.

    ``hash`` is the experiment's key (:mod:`gradlab.identity`), the same for every seed:
    a run is done when a completed run of the same experiment and seed is in the folder.
    ``varies`` holds the grid values that name it (key -> value).
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
    entry: int = 0


@dataclass
class Sweep:
    name: str
    source: str
    runs: list[PlannedRun] = field(default_factory=list)
    write_error: str | None = None  # the last failure to write sweep.json, if any
    shape: str = ""  # how the runs were counted, for --dry-run

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "runs": [{k: v for k, v in asdict(r).items() if k != "config"} for r in self.runs],
        }


# --------------------------------------------------------------------------- values


def _grid(value: Any, where: str) -> dict[str, list[Any]]:
    """A ``grid`` mapping checked: every axis a non-empty list (or a comma string)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of key: [values]")
    axes = {}
    for key, values in value.items():
        if isinstance(values, str):
            values = split_values(values, f"{where}.{key}")
        if not isinstance(values, list) or not values:
            raise ConfigError(
                f"{where}.{str(key)[:100]}: expected a non-empty list of values (or "
                f"'v1,v2,...'), got {_show(values)}"
            )
        axes[str(key)] = values
    return axes


def _seeds(value: Any, where: str) -> list[int] | None:
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)
    ):
        raise ConfigError(f"{where}: expected a list of whole numbers >= 0, got {_show(value)}")
    if len(set(value)) < len(value):
        repeated = sorted({s for s in value if value.count(s) > 1})
        raise ConfigError(f"{where}: {repeated} appear more than once; list each seed once")
    return value


# --------------------------------------------------------------------------- names


# --------------------------------------------------------------------------- expansion


def load_sweep(
    path: str | Path,
    max_runs: int = MAX_RUNS,
    sets: list[str] | tuple[str, ...] = (),
    grids: list[str] | tuple[str, ...] = (),
) -> Sweep:
    """Read and expand a sweep file, with the command line's ``--set`` and ``--grid``;
    every invalid expansion is reported at once.

    Raises:
        ConfigError: the file or an option is malformed, the name is not a valid folder
            name, it would expand to more than ``max_runs`` runs, two runs are the same
            experiment with the same seed, two experiments get the same name, or some
            expanded runs do not validate (one line per run, all of them).
    """
    try:
        return _load_sweep(Path(path), max_runs, list(sets), list(grids))
    except RecursionError:  # aliases that pass the YAML limits but nest deeply when copied
        raise ConfigError(
            f"{path}: values nested too deeply (aliases of aliases); write them out"
        ) from None


@dataclass
class _Entry:
    index: int
    overrides: dict[str, Any]
    grid: dict[str, list[Any]]
    seeds: list[int | None]


def _entries(path: Path, raw: dict[str, Any], sets: dict[str, Any], grids: dict) -> list[_Entry]:
    common = raw.get("set") or {}
    if not isinstance(common, dict):
        raise ConfigError(f"{path}: set: expected a mapping of key: value")
    items = raw.get("list") or [{}]
    if not isinstance(items, list) or not all(isinstance(e, dict) for e in items):
        raise ConfigError(f"{path}: list: expected a list of mappings of key: value")
    top_grid = {**_grid(raw.get("grid"), f"{path}: grid"), **grids}
    top_seeds = _seeds(raw.get("seeds"), f"{path}: seeds")
    entries = []
    for i, item in enumerate(items):
        where = f"{path}: list[{i}]"
        own = _grid(item.get("grid"), f"{where}.grid")
        grid = {**top_grid, **{k: v for k, v in own.items() if k not in grids}}
        clash = [k for k in sets if k in grid]
        if clash:
            raise ConfigError(
                f"--set {clash[0]}: the key is also a grid axis; change the axis with "
                f"--grid {clash[0]}=v1,v2 instead"
            )
        overrides = {k: v for k, v in item.items() if k not in ENTRY_KEYS}
        seeds = _seeds(item.get("seeds"), f"{where}.seeds") or top_seeds or [None]
        entries.append(_Entry(i, {**common, **overrides, **sets}, grid, seeds))
    return entries


def _load_sweep(path: Path, max_runs: int, set_items: list[str], grid_items: list[str]) -> Sweep:
    raw = read_yaml_mapping(path)
    unknown = [k for k in raw if k not in SWEEP_KEYS]
    if unknown:
        raise ConfigError(
            f"{path}: unknown key {_show(unknown[0])}; valid keys: {', '.join(SWEEP_KEYS)}"
        )
    name = raw.get("name") or path.stem
    if not isinstance(name, str) or not _NAME_PATTERN.match(name) or len(name) > MAX_NAME:
        raise ConfigError(
            f"{path}: name: {_show(name)} is not a valid sweep name; it must start with a "
            "letter or digit and use only letters, digits, '.', '_', '-', '=', '+' (at most 100)"
        )
    base = raw.get("base", {})
    if isinstance(base, str):
        base = read_yaml_mapping((path.parent / base).resolve())
    elif not isinstance(base, dict):
        raise ConfigError(f"{path}: base: expected a config file path or a mapping")
    sets = dict(parse_override(item) for item in set_items)
    grids = dict(parse_grid_option(item) for item in grid_items)
    entries = _entries(path, raw, sets, grids)
    counts = [math.prod(len(v) for v in e.grid.values()) * len(e.seeds) for e in entries]
    if sum(counts) > max_runs:
        raise ConfigError(
            f"{path}: the sweep expands to {sum(counts):,} runs, more than the limit of "
            f"{max_runs:,}; raise it with --max-runs if you mean it"
        )

    from gradlab.train import resolved_setup

    sweep = Sweep(name=name, source=str(path), shape=_shape(entries, name))
    problems = []
    for entry in entries:
        axes = entry.grid
        entry_name = entry.overrides.get("name") or (
            name if len(entries) == 1 else f"{name}-{entry.index}"
        )
        for combo in itertools.product(*axes.values()):
            point = dict(zip(axes, combo, strict=True))
            varying = {k: v for k, v in point.items() if len(axes[k]) > 1 and k != "name"}
            overrides = {**entry.overrides, **point}
            if "name" not in point and "name" not in sets:
                overrides["name"] = run_name(str(entry_name), varying)
            for seed in entry.seeds:
                full = {**overrides, **({"seed": seed} if seed is not None else {})}
                index = len(sweep.runs) + len(problems)
                try:
                    config = _resolve(base, full, f"run {index} ({full.get('name', name)})")
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
                        entry=entry.index,
                    )
                )
    if problems:
        shown = "\n".join(problems)
        raise ConfigError(
            f"{path}: {len(problems)} of {len(problems) + len(sweep.runs)} runs are invalid:\n{shown}"
        )
    _check_no_duplicates(path, sweep)
    _check_names(path, sweep)
    return sweep


def _shape(entries: list[_Entry], sweep_name: str) -> str:
    """How the runs are counted: ``4 entries x 3 grid points x 5 seeds``, or per entry."""
    sizes = [(math.prod(len(v) for v in e.grid.values()), len(e.seeds)) for e in entries]
    if len(set(sizes)) == 1:
        points, seeds = sizes[0]
        return (
            f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'} x {points} grid "
            f"point{'s' * (points > 1)} x {seeds} seed{'s' * (seeds > 1)}"
        )
    names = [str(e.overrides.get("name") or f"{sweep_name}-{e.index}") for e in entries]
    return "entries x grid points x seeds: " + ", ".join(
        f"{n} {p}x{s}" for n, (p, s) in zip(names, sizes, strict=True)
    )


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


def _check_names(path: Path, sweep: Sweep) -> None:
    """Different experiments must not share a name: compare's rows and legends would read
    the same."""
    owner: dict[str, PlannedRun] = {}
    clashes, seen = [], set()
    for run in sweep.runs:
        first = owner.setdefault(run.name, run)
        if first.hash != run.hash and (run.name, run.hash) not in seen:
            seen.add((run.name, run.hash))
            clashes.append(f"run {first.index} and run {run.index} are both named {run.name!r}")
    if clashes:
        more = f"; and {len(clashes) - 5} more" if len(clashes) > 5 else ""
        raise ConfigError(
            f"{path}: {len(clashes)} names would be shared by different experiments: "
            f"{'; '.join(clashes[:5])}{more}; give the list entries distinct names"
        )


def _resolve(base: dict[str, Any], overrides: dict[str, Any], where: str) -> Config:
    raw = copy.deepcopy(base)
    for key, value in overrides.items():
        try:
            set_by_path(raw, str(key), copy.deepcopy(value))
        except ConfigError as exc:  # a key this run cannot have (an arm's grid, a typo)
            raise ConfigError(f"{where}: {str(exc).removeprefix('--set ')}") from None
    return config_from_dict(raw, source=where)


def _short(overrides: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={json.dumps(v)}" for k, v in overrides.items())
    return text if len(text) < 120 else text[:117] + "..."


def describe(sweep: Sweep, folder: Path | None = None) -> str:
    """The expanded runs for --dry-run: how they were counted, what varies, then one line
    per run (index, name, seed, the values of the keys that vary)."""
    runs = sweep.runs
    keys = [k for k in dict.fromkeys(k for r in runs for k in r.overrides) if k not in ("seed",)]
    varies = [
        k for k in keys if len({json.dumps(r.overrides.get(k), sort_keys=True) for r in runs}) > 1
    ]
    varies_shown = [k for k in varies if k != "name"]
    experiments = len({r.hash for r in runs})
    lines = [
        f"# {len(runs)} runs = {sweep.shape}; {experiments} experiments"
        + (f" -> {folder}/" if folder else ""),
        "# varies: " + (", ".join([*varies_shown, "seed"]) if len(runs) > 1 else "nothing"),
    ]
    width = max((len(r.name) for r in runs), default=4)
    for r in runs:
        values = " ".join(
            f"{k}={json.dumps(r.overrides[k])}" for k in varies_shown if k in r.overrides
        )
        lines.append(f"{r.index:>4}  {r.name:<{width}}  seed {r.seed:<4} {values}".rstrip())
    return "\n".join(lines) + "\n"
