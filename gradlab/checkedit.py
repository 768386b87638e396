"""``gradlab check-edit SPEC``: a conformance check of a user's edit before a study.

A few steps of the config's network with the edit, in each setup an edit must work in
(the analytic and the autograd engine in full precision; autograd under fp16 autocast with
a GradScaler on the CPU), each trained twice with the same seed and once without the edit:

- ``contract``: the run completes (the loop checks the contract at every step: gradients
  edited in place with their shape, dtype and device; exactly the declared statistics, as
  0-dim tensors); an exception or a breach is the run's error, shown as it is;
- ``repeatable``: the same seed gives the same steps.csv, bit for bit (timings aside);
- ``finite``: every logged loss and gradient norm after the edit is finite (the inputs are);
- ``statistics``: each declared statistic and ``changed`` has a value at every step the edit
  was active, and ``changed`` is 0 or 1;
- the cost: seconds per step with the edit beside the run without it (not a verdict).
"""

from __future__ import annotations

import copy
import csv
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from gradlab.config import Config, config_from_dict
from gradlab.errors import ConfigError

SETUPS = {
    "analytic": {"engine": "analytic", "amp": "off"},
    "autograd": {"engine": "autograd", "amp": "off"},
    "autograd fp16": {"engine": "autograd", "amp": "fp16"},
}
"""Where an edit is checked (all on the CPU: fp16 autocast with a GradScaler there)."""
DEFAULT: dict[str, Any] = {
    "name": "check-edit",
    "seed": 0,
    "data": {"name": "mnist-sample"},
    "model": {"hidden": 100},
    "optim": {"lr": 0.1, "batch_size": 100},
}
"""The network an edit is checked on without ``--config``: the study's two-layer net."""


def check_edit(spec: str, config: Config | None = None, steps: int = 20) -> dict[str, Any]:
    """Check the edit ``spec`` (``file.py:Class``, ``module:Class`` or a built-in name) on
    ``config``'s network for ``steps`` steps in every :data:`SETUPS` (see the module).
    The edit's entry is ``config``'s first edit of that type when it has one (with its
    parameters), else ``{type: spec}``.

    Returns:
        ``{"spec", "steps", "setups": {setup: {check: (passed, detail)}}, "seconds":
        {setup: (with, without)}, "passed"}``.

    Raises:
        ConfigError: the spec or the config is invalid (one line).
    """
    from gradlab.train import train

    raw = _checked_config(spec, config, steps)
    report: dict[str, Any] = {"spec": spec, "steps": steps, "setups": {}, "seconds": {}}
    with tempfile.TemporaryDirectory(prefix="gradlab-check-edit-") as tmp:
        for label, setup in SETUPS.items():
            with_edit = _with_setup(raw, setup)
            without = {**_with_setup(raw, setup), "edit": []}
            runs = [
                train(config_from_dict(with_edit), Path(tmp) / label / "a"),
                train(config_from_dict(with_edit), Path(tmp) / label / "b"),
            ]
            plain = train(config_from_dict(without), Path(tmp) / label / "plain")
            report["setups"][label] = _checks(runs)
            report["seconds"][label] = (_per_step(runs[0]), _per_step(plain))
    report["passed"] = all(ok for checks in report["setups"].values() for ok, _ in checks.values())
    return report


def _checked_config(spec: str, config: Config | None, steps: int) -> dict[str, Any]:
    from gradlab.plugins import anchor_plugin_paths

    given = {"edit": [{"type": spec}]}
    anchor_plugin_paths(given, os.getcwd())  # a file on the command line: from here
    spec = given["edit"][0]["type"]
    raw = config.to_dict() if config is not None else copy.deepcopy(DEFAULT)
    entries = [e for e in raw.get("edit") or [] if e.get("type") == spec]
    raw["edit"] = [entries[0] if entries else {"type": spec}]
    raw["optim"] = {**raw.get("optim", {}), "max_steps": steps}
    raw["optim"].pop("epochs", None)
    raw["train"] = {**raw.get("train", {}), "device": "cpu", "eval_every": steps}
    raw["diagnostics"] = {"every": 0}
    raw.pop("privacy", None)  # the edit is checked on the gradient; DP does not change that
    raw["data"] = {**raw.get("data", {}), "sampling": "auto"}
    config_from_dict(raw, source="check-edit")  # one line now, before any training
    return raw


def _with_setup(raw: dict[str, Any], setup: dict[str, str]) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    out["train"] = {**out["train"], **setup}
    return out


def _rows(run: Any) -> list[dict[str, str]]:
    with open(run.path / "steps.csv") as f:
        return list(csv.DictReader(f))


def _checks(runs: list[Any]) -> dict[str, tuple[bool, str]]:
    first = runs[0]
    status = first.summary["status"]
    checks: dict[str, tuple[bool, str]] = {}
    if status != "completed":
        checks["contract"] = (False, str(first.summary.get("error") or status))
        return checks
    checks["contract"] = (True, "completed")
    a, b = (_rows(run) for run in runs)
    timing = {"elapsed_s"}
    same = [{k: v for k, v in r.items() if k not in timing} for r in a] == [
        {k: v for k, v in r.items() if k not in timing} for r in b
    ]
    checks["repeatable"] = (
        same,
        "same seed, same steps.csv" if same else "two runs with the same seed differ",
    )
    bad = [
        f"{column} at step {row['step']}"
        for row in a
        for column in ("loss", "grad_norm_after")
        if column in row and row[column] != "" and not math.isfinite(float(row[column]))
    ]
    checks["finite"] = (not bad, "loss and grad_norm_after finite" if not bad else bad[0])
    stats = [c for c in a[0] if c.startswith("edit0.")] if a else []
    changed = next((c for c in stats if c.endswith(".changed")), None)
    missing = [
        f"{c} at step {row['step']}"
        for row in a
        if changed is not None and row[changed] not in ("0", "0.0")
        for c in stats
        if row[c] in ("", "nan")
    ]
    flags = {row[changed] for row in a} if changed else set()
    if not flags <= {"0", "1", "0.0", "1.0"}:
        missing.append(f"changed is {sorted(flags - {'0', '1', '0.0', '1.0'})[0]}, not 0 or 1")
    active = sum(1 for row in a if changed and float(row[changed]) == 1)
    checks["statistics"] = (
        not missing,
        f"{', '.join(c.removeprefix('edit0.') for c in stats)}; changed at {active} of {len(a)} steps"
        if not missing
        else missing[0],
    )
    return checks


def _per_step(run: Any) -> float:
    rows = _rows(run)
    if len(rows) < 2:
        return math.nan
    # from the second step: the first one pays for the set-up
    return (float(rows[-1]["elapsed_s"]) - float(rows[0]["elapsed_s"])) / (len(rows) - 1)


def check_steps(steps: int) -> int:
    if not 2 <= steps <= 10_000:
        raise ConfigError(f"--steps {steps}: use 2 to 10000 steps")
    return steps
