"""What ``gradlab sweep --dry-run`` prints: how the runs are counted, what varies, and one
line per run."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from gradlab.config import set_by_path
from gradlab.errors import ConfigError
from gradlab.sweeps.spec import Sweep


def describe(sweep: Sweep, folder: Path | None = None) -> str:
    """The expanded runs for --dry-run: how they were counted, what varies, then one line
    per run (index, name, seed, the values it was given for the keys that vary)."""
    runs = sweep.runs
    given = [_applied(r.overrides) for r in runs]
    keys = [
        k for k in dict.fromkeys(k for r in runs for k in r.overrides) if k not in ("seed", "name")
    ]
    varies = [k for k in keys if len({json.dumps(_at(g, k), sort_keys=True) for g in given}) > 1]
    varies = [
        k for k in varies if not any(k.startswith(v + ".") for v in varies)
    ]  # edit, not edit.0.x
    seeds = len({r.seed for r in runs}) > 1
    experiments = len({r.hash for r in runs})
    lines = [
        f"# {len(runs)} runs = {sweep.shape}; {experiments} experiments"
        + (f" -> {folder}/" if folder else ""),
        "# varies: " + (", ".join([*varies, *(["seed"] if seeds else [])]) or "nothing"),
    ]
    width = max((len(r.name) for r in runs), default=4)
    for r, g in zip(runs, given, strict=True):
        values = " ".join(f"{k}={json.dumps(_at(g, k))}" for k in varies if _at(g, k) is not None)
        lines.append(f"{r.index:>4}  {r.name:<{width}}  seed {r.seed:<4} {values}".rstrip())
    return "\n".join(lines) + "\n"


def _applied(overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides as the nested values they set (``edit`` with its grid point in it)."""
    raw: dict[str, Any] = {}
    for key, value in overrides.items():
        try:
            set_by_path(raw, str(key), copy.deepcopy(value))
        except ConfigError:
            pass
    return raw


def _at(config: dict[str, Any], key: str) -> Any:
    """The value of a dotted key in a nested mapping (list items by index)."""
    node: Any = config
    for part in key.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    return node
