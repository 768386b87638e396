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
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradlab.config import (
    NAME_PATTERN,
    Config,
    config_from_dict,
    parse_override,
    read_yaml_mapping,
    set_by_path,
)
from gradlab.environment import resolved_setup
from gradlab.errors import ConfigError
from gradlab.plugins import anchor_plugin_paths
from gradlab.schema import show
from gradlab.sweeps.checks import check_names, check_no_duplicates, grouped_problems
from gradlab.sweeps.spec import PlannedRun, Sweep
from gradlab.sweeps.syntax import (
    MAX_NAME,
    grid_axes,
    name_hash,
    parse_grid_option,
    run_name,
    seed_list,
)

SWEEP_KEYS = ("name", "base", "set", "list", "grid", "seeds")
ENTRY_KEYS = ("grid", "seeds")  # the keys of a list entry that are not config overrides
MAX_RUNS = 10_000
"""The most runs a sweep may expand to unless ``--max-runs`` raises it (counted before
anything is expanded)."""


def load_sweep(
    path: str | Path,
    max_runs: int = MAX_RUNS,
    sets: list[str] | tuple[str, ...] = (),
    grids: list[str] | tuple[str, ...] = (),
    seeds: str | None = None,
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
        return _load_sweep(Path(path), max_runs, list(sets), list(grids), seeds)
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
    name: str = ""
    named: bool = False  # the name was given (entry, set, --set), not made up


def _overlap(key: str, axes: Iterable[str]) -> list[str]:
    """The axes ``key`` sets, or that set part of it (``edit`` and ``edit.0.max_norm``)."""
    return [a for a in axes if a == key or a.startswith(key + ".") or key.startswith(a + ".")]


def _entries(
    path: Path,
    raw: dict[str, Any],
    sets: dict[str, Any],
    grids: dict[str, list[Any]],
    seeds_option: list[int] | None,
    sweep_name: str,
) -> list[_Entry]:
    common = raw.get("set") or {}
    if not isinstance(common, dict):
        raise ConfigError(f"{path}: set: expected a mapping of key: value")
    items = raw.get("list") or [{}]
    if not isinstance(items, list) or not all(isinstance(e, dict) for e in items):
        raise ConfigError(f"{path}: list: expected a list of mappings of key: value")
    for where, keys in (
        ("set", common),
        ("--set", sets),
        ("--grid", grids),
        ("grid", raw.get("grid") or {}),
    ):
        if "seed" in keys:
            raise ConfigError(
                f"{path}: {where} seed: the seeds are a list of their own: `seeds: [0, 1]` "
                "(in the file or an entry) or --seeds 0,1"
            )
    file_grid = grid_axes(raw.get("grid"), f"{path}: grid")
    owns = [grid_axes(item.get("grid"), f"{path}: list[{i}].grid") for i, item in enumerate(items)]
    # --grid replaces the file's axis; an axis only entries have, in those entries; else
    # it is a new axis crossing every entry
    entry_axes = {k for own in owns for k in own}
    top_grid = {
        **file_grid,
        **{k: v for k, v in grids.items() if k in file_grid or k not in entry_axes},
    }
    top_seeds = seeds_option or seed_list(raw.get("seeds"), f"{path}: seeds")
    differing = _differing_keys(items)
    entries = []
    for i, (item, own) in enumerate(zip(items, owns, strict=True)):
        where = f"{path}: list[{i}]"
        if "seed" in item:
            raise ConfigError(f"{where}: seed: give the entry `seeds: [...]` instead")
        own = {**own, **{k: v for k, v in grids.items() if k in own}}
        overrides = {k: v for k, v in item.items() if k not in ENTRY_KEYS}
        # the entry's own value of a key wins over the top-level axis of that key
        grid = {**{k: v for k, v in top_grid.items() if k not in overrides}, **own}
        for key in sets:
            clash = _overlap(key, grid)
            if clash:
                raise ConfigError(
                    f"--set {key}: grid axis {clash[0]} sets it too; change the axis with "
                    f"--grid {clash[0]}=v1,v2 instead"
                )
        given = seeds_option or seed_list(item.get("seeds"), f"{where}.seeds") or top_seeds
        seeds: list[int | None] = [*given] if given else [None]  # None: the config's seed
        merged = {**common, **overrides, **sets}
        if "name" in sets:  # --set name=...: used as it is
            name, named = str(sets["name"]), True
        elif merged.get("name") is not None:  # the entry's (or the file's) name: a base
            name, named = str(merged["name"]), False
        elif len(items) == 1:
            name, named = sweep_name, False
        else:
            parts = {k: overrides[k] for k in differing if k in overrides}
            name, named = (run_name(sweep_name, parts) if parts else f"{sweep_name}-{i}"), False
        entries.append(_Entry(i, merged, grid, seeds, name, named))
    return entries


def _differing_keys(items: list[dict[str, Any]]) -> list[str]:
    """The override keys whose values differ between the list's entries (to name the
    entries that have no name)."""
    keys = [
        k
        for k in dict.fromkeys(k for item in items for k in item)
        if k not in (*ENTRY_KEYS, "name")
    ]
    missing = object()
    return [
        k
        for k in keys
        if len({json.dumps(item.get(k, missing), sort_keys=True, default=str) for item in items})
        > 1
    ]


def _load_sweep(
    path: Path,
    max_runs: int,
    set_items: list[str],
    grid_items: list[str],
    seeds_text: str | None = None,
) -> Sweep:
    raw = read_yaml_mapping(path)
    unknown = [k for k in raw if k not in SWEEP_KEYS]
    if unknown:
        raise ConfigError(
            f"{path}: unknown key {show(unknown[0])}; valid keys: {', '.join(SWEEP_KEYS)}"
        )
    name = raw.get("name") or path.stem
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or len(name) > MAX_NAME:
        raise ConfigError(
            f"{path}: name: {show(name)} is not a valid sweep name; it must start with a "
            "letter or digit and use only letters, digits, '.', '_', '-', '=', '+' (at most 100)"
        )
    base = raw.get("base", {})
    if isinstance(base, str):
        base_path = (path.parent / base).resolve()
        base = read_yaml_mapping(base_path)
        anchor_plugin_paths(base, base_path.parent)  # its edits' files: relative to it
    elif isinstance(base, dict):
        anchor_plugin_paths(base, path.parent)  # an inline base: relative to the sweep file
    else:
        raise ConfigError(f"{path}: base: expected a config file path or a mapping")
    sets = dict(parse_override(item) for item in set_items)
    grids = dict(parse_grid_option(item) for item in grid_items)
    seeds_option = None if seeds_text is None else seed_list(seeds_text, "--seeds")
    entries = _entries(path, raw, sets, grids, seeds_option, name)
    counts = [math.prod(len(v) for v in e.grid.values()) * len(e.seeds) for e in entries]
    if sum(counts) > max_runs:
        raise ConfigError(
            f"{path}: the sweep expands to {sum(counts):,} runs, more than the limit of "
            f"{max_runs:,}; raise it with --max-runs if you mean it"
        )
    points = _named_points(entries)

    sweep = Sweep(name=name, source=str(path), shape=_shape(entries, name))
    problems: list[tuple[str, int, str]] = []
    for entry, overrides in points:
        for seed in entry.seeds:
            full = {**overrides, **({"seed": seed} if seed is not None else {})}
            index = len(sweep.runs) + len(problems)
            where = f"run {index} ({full['name']})"
            try:
                config = _resolve(base, full, where, path.parent)
            except ConfigError as exc:
                problems.append((str(exc).removeprefix(f"{where}: "), index, full["name"]))
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
        raise ConfigError(
            f"{path}: {len(problems)} of {len(problems) + len(sweep.runs)} runs are invalid: "
            + grouped_problems(problems)
        )
    check_no_duplicates(path, sweep)
    check_names(path, sweep)
    return sweep


def _named_points(entries: list[_Entry]) -> list[tuple[_Entry, dict[str, Any]]]:
    """Every entry's grid points as overrides, each with its run name. Names the rule made
    (an entry's name and what varies) that two points would share (values that read the
    same, names cut at 100 characters) get a stable hash suffix instead of colliding;
    names the user gave that collide are left for :func:`gradlab.sweeps.checks.check_names` to refuse."""
    points = []
    for entry in entries:
        axes = entry.grid
        for combo in itertools.product(*axes.values()):
            point = dict(zip(axes, combo, strict=True))
            overrides = {**entry.overrides, **point}
            varying = {k: v for k, v in point.items() if len(axes[k]) > 1}
            made = "name" not in point and not entry.named and bool(varying)
            if "name" not in point:  # a name the grid sets stands as it is
                overrides["name"] = run_name(entry.name, varying) if made else entry.name
            points.append((entry, overrides, made))
    count: dict[str, int] = {}
    for _, overrides, _ in points:
        count[overrides["name"]] = count.get(overrides["name"], 0) + 1
    out = []
    for entry, overrides, made in points:
        if count[overrides["name"]] > 1 and made:  # the rule's doing, not the user's
            text = overrides["name"]
            suffix = name_hash(entry.index, {k: v for k, v in overrides.items() if k != "name"})
            overrides["name"] = f"{text[: MAX_NAME - 7]}-{suffix}"
        out.append((entry, overrides))
    return out


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


def _resolve(base: dict[str, Any], overrides: dict[str, Any], where: str, folder: Path) -> Config:
    raw = copy.deepcopy(base)
    for key, value in overrides.items():
        try:
            set_by_path(raw, str(key), copy.deepcopy(value))
        except ConfigError as exc:  # a key this run cannot have (an arm's grid, a typo)
            raise ConfigError(f"{where}: {str(exc).removeprefix('--set ')}") from None
    anchor_plugin_paths(raw, folder)  # an edit's file set by the sweep: relative to it
    return config_from_dict(raw, source=where)
