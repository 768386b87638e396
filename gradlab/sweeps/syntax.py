"""The small syntax of sweeps: comma-separated value lists (``--grid optim.lr=0.1,0.5``,
``grid: {optim.lr: "0.1,0.5"}``) and run names that say what varies
(``clip-max_norm=0.25``)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from gradlab.errors import ConfigError
from gradlab.schema import show
from gradlab.yamlfile import load_yaml

MAX_NAME = 100
_HYDRA_SWEEP = re.compile(r"^\s*(choice|range|interval|glob|tag)\(")


def split_values(text: str, where: str) -> list[Any]:
    """``"0.1,0.5"`` -> ``[0.1, 0.5]``: comma-separated values, each parsed as YAML; commas
    inside brackets, braces, parentheses or quotes do not split (``[],[{type: clip_norm}]``).
    Hydra's ``choice(...)`` and ``range(...)`` sweeps are refused with a hint."""
    hydra = _HYDRA_SWEEP.match(text)
    if hydra:
        raise ConfigError(
            f"{where}: Hydra's {hydra[1]}(...) is not supported; list the values, e.g. 0.1,0.5"
        )
    parts, depth, quote, current, escaped = [], 0, "", "", False
    for ch in text:
        if escaped:  # YAML's backslash escape, inside double quotes only
            escaped = False
        elif quote == '"' and ch == "\\":
            escaped = True
        elif quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += ch
    parts.append(current)
    if quote or depth:
        raise ConfigError(f"{where}: an unmatched quote or bracket in {show(text)}")
    if any(not p.strip() for p in parts):
        raise ConfigError(f"{where}: expected values separated by commas, e.g. 0.1,0.5")
    return [load_yaml(p, where) for p in parts]


def parse_grid_option(item: str) -> tuple[str, list[Any]]:
    """``--grid optim.lr=0.1,0.5`` -> ``("optim.lr", [0.1, 0.5])``."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or not text.strip():
        raise ConfigError(
            f"--grid {show(item)}: expected KEY=VALUE1,VALUE2,..., e.g. optim.lr=0.1,0.5"
        )
    return key, split_values(text, f"--grid {key}")


def value_text(value: Any) -> str:
    """A value as a short, stable piece of a run name: ``0.25``, ``relu``, a pipeline as
    ``clip_norm_1+noise_0.01`` (``none`` when empty)."""
    if isinstance(value, bool) or value is None:
        text = json.dumps(value)
    elif isinstance(value, float):
        text = f"{value:g}"
        if float(text) != value:  # %g would make 0.1234567 and 0.1234568 read the same
            text = repr(value)
    elif isinstance(value, list):
        text = "+".join(value_text(v) for v in value) or "none"
    elif isinstance(value, dict):
        kind = [value_text(value["type"])] if "type" in value else []
        text = "_".join(kind + [value_text(v) for k, v in value.items() if k != "type"])
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text).strip("_") or "_"


def short_keys(keys: list[str]) -> dict[str, str]:
    """Each dotted key by its last part (``optim.lr`` -> ``lr``; a list index keeps its
    list: ``edit.0``), or whole where two keys would read the same."""

    def last(key: str) -> str:
        parts = key.split(".")
        return ".".join(parts[-2:]) if parts[-1].isdigit() and len(parts) > 1 else parts[-1]

    shorts = [last(k) for k in keys]
    return {k: (s if shorts.count(s) == 1 else k) for k, s in zip(keys, shorts, strict=True)}


def run_name(entry_name: str, varying: dict[str, Any]) -> str:
    """``entry_name`` followed by ``-<short key>=<value>`` for each key that varies within
    the entry. A name longer than 100 characters keeps its first 93 and ends in ``-`` and
    6 hex digits of a hash of the whole: still stable, still distinct."""
    shorts = short_keys(list(varying))
    parts = [entry_name, *(f"{shorts[k]}={value_text(v)}" for k, v in varying.items())]
    return fit_name("-".join(parts))


def fit_name(name: str) -> str:
    """``name`` cut to 100 characters with a stable hash suffix when longer."""
    if len(name) <= MAX_NAME:
        return name
    return f"{name[: MAX_NAME - 7]}-{name_hash(name)}"


def name_hash(*parts: Any) -> str:
    """6 hex digits of a stable hash of ``parts`` (JSON)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def grid_axes(value: Any, where: str) -> dict[str, list[Any]]:
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
                f"'v1,v2,...'), got {show(values)}"
            )
        axes[str(key)] = values
    return axes


def seed_list(value: Any, where: str) -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = split_values(value, where)
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)
    ):
        raise ConfigError(f"{where}: expected a list of whole numbers >= 0, got {show(value)}")
    if len(set(value)) < len(value):
        repeated = sorted({s for s in value if value.count(s) > 1})
        raise ConfigError(f"{where}: {repeated} appear more than once; list each seed once")
    return value
