"""Who is who in a comparison: a legend label and a colour for each row of the table,
shared by the plots and the report so that every figure of a study agrees.

The label rule (:func:`row_labels`): when the rows have distinct names, the label is the
name (sweeps name their runs by what varies: ``clip-max_norm=0.25``, ``sgd-lr=2``), the same
name that compare shows. Otherwise (names that repeat, or none) a label names what differs
between the rows, that is the config columns whose values differ (``lr=0.5``,
``hidden=128``), then the ``edits`` label (``clip_norm(0.25)``) and the dataset when they
differ. Settings that do not change the experiment (:data:`gradlab.identity.IGNORED`) are
left out. The run name is added only when it tells apart rows that the parts alone do not;
labels still equal get their seeds, then their run folder. Colours (:func:`row_colors`) follow the natural order of the labels, so a
row keeps its colour whatever the order of the table.
"""

from __future__ import annotations

import colorsys
import math
import re
from typing import Any

import numpy as np
import pandas as pd

from gradlab.identity import IGNORED
from gradlab.study.compare import is_config_column

_TAB10 = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
]  # fmt: skip
_TAB10_LIGHT = [
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
    "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
]  # fmt: skip
# config columns never used in a legend: shown by another column, or outside the experiment
_NOT_IN_LABELS = {"edit", "data.name"}


def row_labels(table: pd.DataFrame) -> list[str]:
    """One legend label per row: its name when the names differ, else what differs.

    When the ``name`` column exists and its values are distinct (missing names aside), a
    row is labelled by its name as it is (``sgd-lr=2``). Otherwise (names that repeat, or
    no names) the label is made of parts: the config columns whose values differ
    (``lr=0.5``, ``hidden=128``; the last part of the key, or the whole key where two would
    read the same), then the ``edits`` label (``clip_norm(0.25)``) and the dataset when they
    differ. Settings that do not change the experiment (``train.log``, ``data.root``... see
    :data:`gradlab.identity.IGNORED`) are left out. The run name comes first
    (``baseline: lr=0.5``) only when it tells apart rows that the parts alone do not; a
    single row, or rows that differ in nothing, are named by their name. Labels that would
    still be equal get their seeds (``, seed=1``), then their run folder, then a number in
    the order of their run folders (``#1``, whatever the table's order). A grouped table
    adds the number of seeds: ``lr=0.5 (n=3)``.

    Labels are kept short (long values are cut in the middle) and distinct.
    """
    if table.empty:
        return []
    bare = _without_attrs(table)
    records = bare.to_dict("records")
    present = [r["name"] for r in records if "name" in r and not _missing(r["name"])]
    names = [
        f"row {i + 1}" if _missing(r.get("name")) else str(r["name"]) for i, r in enumerate(records)
    ]
    columns = _label_columns(bare)
    short = _short_names(columns)
    bases = [
        ", ".join(_part(short[c], r[c]) for c in columns if not _missing(r[c])) for r in records
    ]
    labels = [b or n for n, b in zip(names, bases, strict=True)]
    named = [f"{n}: {b}" if b else n for n, b in zip(names, bases, strict=True)]
    if len(records) == 1:
        labels = names
    elif present and _distinct([str(n) for n in present]):  # the names tell every row apart
        labels = [  # a row without a name: what differs
            (b or n) if _missing(r.get("name")) else n
            for n, b, r in zip(names, bases, records, strict=True)
        ]
    elif not all(bases) or len(set(named)) > len(set(labels)):  # the names tell more apart
        labels = named
    grouped = bool(table.attrs.get("grouped")) or "n" in table.columns
    fallbacks = [
        [
            f", seeds {r['seed']}" if grouped else f", seed={r['seed']}"
            for r in records
            if "seed" in r
        ],
        [f" [{r.get('run', '')}]" for r in records],
        [f" #{k + 1}" for k in _folder_ranks(table)],
    ]
    for extra in fallbacks:
        if _distinct(labels):
            break
        if len(extra) == len(labels) and len(set(extra)) > 1:
            labels = [label + e for label, e in zip(labels, extra, strict=True)]
    if "n" in table.columns:
        labels = [
            label if _missing(r["n"]) else f"{label} (n={int(r['n'])})"
            for label, r in zip(labels, records, strict=True)
        ]
    return labels


def _without_attrs(table: pd.DataFrame) -> pd.DataFrame:
    """The same table (its data not copied) without its ``attrs``: pandas deep-copies them
    into every column taken out, and a study's ``attrs["paths"]`` names thousands of runs."""
    return pd.DataFrame(table, copy=False)


def _folder_ranks(table: pd.DataFrame) -> list[int]:
    """Each row's rank in the order of its run folders (``attrs["paths"]``; else its
    position): a number that stays with the row however the table is sorted."""
    paths = table.attrs.get("paths")
    if not paths or len(paths) != len(table):
        return list(range(len(table)))
    order = sorted(range(len(paths)), key=lambda i: tuple(sorted(map(str, paths[i]))))
    ranks = [0] * len(order)
    for rank, i in enumerate(order):
        ranks[i] = rank
    return ranks


def row_colors(table: pd.DataFrame) -> list[str]:
    """A colour (``#rrggbb``) per row, the same for the same row whatever the table's
    order: colours go to the rows in the natural order of their labels (``lr=2`` before
    ``lr=10``), so every panel, plot and report of a study agrees."""
    labels = row_labels(table)
    paths = table.attrs.get("paths") or [[] for _ in labels]
    keys = [
        (_natural_key(label), tuple(sorted(map(str, p))))
        for label, p in zip(labels, paths, strict=False)
    ]
    palette = _palette(len(labels))
    colors = [""] * len(labels)
    for rank, i in enumerate(sorted(range(len(keys)), key=keys.__getitem__)):
        colors[i] = palette[rank]
    return colors


def _label_columns(table: pd.DataFrame) -> list[str]:
    def shown(column: str) -> bool:
        if column in ("edits", "dataset"):
            return True
        if column in _NOT_IN_LABELS or not (
            is_config_column(column) or column.startswith("resolved.")
        ):
            return False
        return not any(column == k or column.startswith(f"{k}.") for k in IGNORED)

    columns = [
        c
        for c in table.columns
        if shown(c) and table[c].map(lambda v: "" if _missing(v) else _value(v)).nunique() > 1
    ]
    # the settings first, then the edits and the dataset: "lr=0.5, clip_norm(0.25)"
    return sorted(columns, key=lambda c: c in ("edits", "dataset"))


def _short_names(columns: list[str]) -> dict[str, str | None]:
    last = [c.rsplit(".", 1)[-1] for c in columns]
    return {
        c: None if c in ("edits", "dataset") else (s if last.count(s) == 1 else c)
        for c, s in zip(columns, last, strict=True)
    }


def _part(short: str | None, value: Any) -> str:
    if short is None:  # the edits label or the dataset
        return "no edits" if value == "none" else _value(value)
    return f"{short}={_value(value)}"


def _value(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    return text if len(text) <= 40 else f"{text[:26]}…{text[-12:]}"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _distinct(labels: list[str]) -> bool:
    return len(set(labels)) == len(labels)


def _natural_key(label: str) -> tuple:
    parts = re.split(r"(\d+(?:\.\d+)?(?:e[-+]?\d+)?)", label)
    return tuple((0, float(p)) if i % 2 else (1, p) for i, p in enumerate(parts) if p)


def _palette(n: int) -> list[str]:
    if n <= 20:
        return (_TAB10 + _TAB10_LIGHT)[:n]
    out = []
    for i in range(n):  # evenly spaced hues, alternately darker and lighter
        r, g, b = colorsys.hls_to_rgb(i / n, 0.42 if i % 2 else 0.6, 0.7)
        out.append(f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}")
    return out
