"""What a sweep is once planned: its runs, each with its resolved config, and how they ended.

Plain data (no torch): the planner (:mod:`gradlab.sweeps.plan`) makes it, the checks, the
``--dry-run`` view and the executors read it, and ``sweep.json`` records it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class PlannedRun:
    """One run of a sweep: its overrides on top of the base and its resolved config.

    ``hash`` is the experiment's key (:mod:`gradlab.identity`), the same for every seed:
    a run is done when a completed run of the same experiment and seed is in the folder.
    ``overrides`` holds what the sweep set for it (its entry's keys, its grid point, its
    name and seed); ``entry`` is the index of its entry in the file's ``list``.
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
    resume: bool = False  # goes on in ``folder``, an interrupted run's, from its checkpoint


@dataclass
class Sweep:
    """A planned sweep: its name (the sweep folder's), the file it came from and its runs.

    While it runs, :func:`gradlab.sweeps.run.run_sweep` updates each run's ``status``,
    ``folder`` and ``error``; ``signal`` then names the signal that stopped it (``SIGINT``,
    ``SIGTERM``, ``SIGHUP``; None when it ran to its end).
    """

    name: str
    source: str
    runs: list[PlannedRun] = field(default_factory=list)
    write_error: str | None = None  # the last failure to write sweep.json, if any
    shape: str = ""  # how the runs were counted, for --dry-run
    signal: str | None = None  # the signal that stopped the sweep, if one did

    def record(self) -> dict[str, Any]:
        """What ``sweep.json`` holds of it (the runs without their resolved configs)."""
        return {
            "name": self.name,
            "source": self.source,
            "runs": [{k: v for k, v in asdict(r).items() if k != "config"} for r in self.runs],
        }
