"""Refusals of a planned sweep: invalid runs (on one line, grouped by problem), runs that
repeat another, names shared by different experiments."""

from __future__ import annotations

from pathlib import Path

from gradlab.errors import ConfigError
from gradlab.sweeps.spec import PlannedRun, Sweep


def grouped_problems(problems: list[tuple[str, int, str]]) -> str:
    """Invalid runs on one line: each distinct problem once, with the runs it hits."""
    causes: dict[str, list[tuple[int, str]]] = {}
    for cause, index, run in problems:
        causes.setdefault(cause, []).append((index, run))
    parts = []
    for cause, runs in list(causes.items())[:3]:
        names = list(dict.fromkeys(n for _, n in runs))
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        parts.append(
            f"{cause} (run{'s' * (len(runs) > 1)} {ranges([i for i, _ in runs])}: {shown})"
        )
    more = f"; and {len(causes) - 3} more problems" if len(causes) > 3 else ""
    return "; ".join(parts) + more


def ranges(numbers: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``0-2, 5``."""
    spans: list[list[int]] = []
    for n in sorted(numbers):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def check_no_duplicates(path: Path, sweep: Sweep) -> None:
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
            f"{path}: {len(clashes)} run{'s repeat' if len(clashes) > 1 else ' repeats'} "
            "another run (the same experiment and seed, "
            f"see 'What counts as the same experiment'): {'; '.join(clashes[:5])}{more}"
        )


def check_names(path: Path, sweep: Sweep) -> None:
    """Different experiments must not share a name (given names: made-up ones never do):
    compare's rows and legends would read the same."""
    owner: dict[str, PlannedRun] = {}
    clashes: dict[str, str] = {}
    for run in sweep.runs:
        first = owner.setdefault(run.name, run)
        if first.hash != run.hash and run.name not in clashes:
            clashes[run.name] = f"run {first.index} and run {run.index} are both named {run.name!r}"
    if clashes:
        shown = "; ".join(list(clashes.values())[:5])
        more = f"; and {len(clashes) - 5} more" if len(clashes) > 5 else ""
        raise ConfigError(
            f"{path}: {len(clashes)} name{'s' * (len(clashes) > 1)} would be shared by "
            f"different experiments: {shown}{more}; give each list entry its own name, or "
            "leave the name out of --set and the grid (runs are then named by what varies)"
        )
