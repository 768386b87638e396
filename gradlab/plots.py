"""Figures that explain a study: one line per row of the comparison table (the mean over
its seeds, with a band), in panels chosen by name, saved as PNG, PDF or SVG.

Python API (the figure ``gradlab compare --plot`` writes, to change in a notebook)::

    from gradlab.compare import comparison
    from gradlab.plots import plot_comparison
    table = comparison(["runs/study"])
    fig = plot_comparison(table, panels=["train_loss", "grad_norm", "edit_stats"])
    axes = {ax.get_label(): ax for ax in fig.axes}  # each axes is labelled by its panel
    axes["grad_norm"].set_ylim(1e-2, 10)
    fig.savefig("study.pdf")

How a line and its band are computed, at each step:

- per-step series (training loss, gradient norms, learning rate, edit statistics) are first
  smoothed run by run with a trailing moving average over about 1/50 of the run
  (:func:`smoothing_window`); test metrics are drawn as evaluated, with markers when there
  are few evaluations;
- linear panels draw the mean over the row's seeds and a band of +- one sample std;
- log panels (:data:`LOG_PANELS`) draw the geometric mean ``exp(mean(log x))`` and the band
  ``exp(mean(log x) +- std(log x))``, so a band is never at or below zero. They smooth
  first and then take logs; values <= 0 (nothing to show on a log axis) are left out.

Figures are made without pyplot (an Agg canvas), so a notebook's backend is left alone;
matplotlib is imported only when a figure is made.
"""

from __future__ import annotations

import colorsys
import math
import os
import re
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from gradlab.compare import is_config_column, load_evals, load_steps
from gradlab.errors import GradlabError
from gradlab.identity import IGNORED
from gradlab.reading import CompareError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FORMATS = (".png", ".pdf", ".svg")
PANELS: dict[str, str] = {
    "train_loss": "training loss",
    "test_loss": "test loss",
    "test_accuracy": "test accuracy",
    "grad_norm": "gradient norm before the edits",
    "grad_norm_after": "gradient norm after the edits",
    "lr": "learning rate",
    "edit_stats": "edit statistics per step",
}
"""Panel name -> title. ``edit_stats`` draws every ``edit<i>.<type>.<stat>`` column of
``steps.csv`` (e.g. the fraction of entries clipped, or ``changed``: the fraction of steps
the edit changed the gradient); rows without edits have no line there."""
DEFAULT_PANELS = ("train_loss", "test_accuracy", "grad_norm", "grad_norm_after")
LOG_PANELS = frozenset({"grad_norm", "grad_norm_after", "lr", "edit_stats"})

# panel -> (log file, column (None: the edit statistics), y label)
_SOURCES = {
    "train_loss": ("steps", "loss", "cross-entropy"),
    "test_loss": ("evals", "test_loss", "cross-entropy"),
    "test_accuracy": ("evals", "test_accuracy", "accuracy"),
    "grad_norm": ("steps", "grad_norm", "global L2 norm"),
    "grad_norm_after": ("steps", "grad_norm_after", "global L2 norm"),
    "lr": ("steps", "lr", "learning rate"),
    "edit_stats": ("steps", None, "value"),
}
_EDIT_STAT = re.compile(r"^edit(\d+)\.([^.]+)\.(.+)$")
_PANEL_SIZE = (5.2, 3.6)  # inches per panel
_PER_ROW = 3
_MARKERS_UP_TO = 30  # evaluation points
_DPI = 110
_TAB10 = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
]  # fmt: skip
_TAB10_LIGHT = [
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
    "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
]  # fmt: skip
_LINESTYLES = ["-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 2))]
# config columns never used in a legend: shown by another column, or outside the experiment
_NOT_IN_LABELS = {"edit", "data.name"}


# --------------------------------------------------------------------------- choices


def check_panels(names: str | Iterable[str] | None) -> list[str]:
    """The panels to draw, in order (duplicates dropped): a list of names or one
    comma-separated string; None gives :data:`DEFAULT_PANELS`.

    Raises:
        CompareError: an unknown name, or none at all.
    """
    if names is None:
        return list(DEFAULT_PANELS)
    if isinstance(names, str):
        names = names.split(",")
    chosen = [str(n).strip() for n in names if str(n).strip()]
    for name in chosen:
        if name not in PANELS:
            raise CompareError(f"--panels {name}: unknown panel; choose from {', '.join(PANELS)}")
    if not chosen:
        raise CompareError(f"--panels: choose at least one of {', '.join(PANELS)}")
    return list(dict.fromkeys(chosen))


def check_plot_path(path: str | Path) -> Path:
    """``path`` as a Path when its suffix is one of :data:`FORMATS` (any case).

    Raises:
        CompareError: another suffix, or none.
    """
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise CompareError(f"--plot {path}: unsupported format; use .png, .pdf or .svg")
    return path


# --------------------------------------------------------------------------- labels, colours


def row_labels(table: pd.DataFrame) -> list[str]:
    """One legend label per row, from what differs between the rows.

    The parts are the config columns whose values differ (``lr=0.5``, ``hidden=128``; the
    last part of the key, or the whole key where two would read the same), then the
    ``edits`` label (``clip_norm(0.25)``) and the dataset when they differ. Settings that do
    not change the experiment (``train.log``, ``data.root``... see
    :data:`gradlab.identity.IGNORED`) are left out. The run name comes first
    (``baseline: lr=0.5``) only when it tells apart rows that the parts alone do not; a
    single row, or rows that differ in nothing, are named by their name. Labels that would
    still be equal get their seeds (``, seed=1``), then their run folder. A grouped table adds the
    number of seeds: ``lr=0.5 (n=3)``.

    Labels are kept short (long values are cut in the middle) and distinct.
    """
    if table.empty:
        return []
    records = table.to_dict("records")
    names = [str(r.get("name", f"row {i + 1}")) for i, r in enumerate(records)]
    columns = _label_columns(table)
    short = _short_names(columns)
    bases = [
        ", ".join(_part(short[c], r[c]) for c in columns if not _missing(r[c])) for r in records
    ]
    labels = [b or n for n, b in zip(names, bases, strict=True)]
    named = [f"{n}: {b}" if b else n for n, b in zip(names, bases, strict=True)]
    if len(records) == 1:
        labels = names
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
        [f" #{i + 1}" for i in range(len(records))],
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


# --------------------------------------------------------------------------- the figure


def smoothing_window(total_steps: int) -> int:
    """Moving-average window of per-step series: about 1/50 of the run, at least 1."""
    return max(1, total_steps // 50)


def plot_comparison(
    table: pd.DataFrame,
    out: str | Path | None = None,
    panels: str | Iterable[str] | None = None,
    labels: list[str] | None = None,
) -> Figure | Path:
    """One line per table row in each panel (see the module docstring for the bands).

    Args:
        table: from :func:`gradlab.compare.comparison` (``attrs["paths"]`` names the runs).
        out: a ``.png``, ``.pdf`` or ``.svg`` file, written whole or not at all; None
            returns the figure instead, to change and save in a notebook.
        panels: names from :data:`PANELS` (default :data:`DEFAULT_PANELS`).
        labels: the legend labels, one per row (default :func:`row_labels`).

    Returns:
        The Path written, or the Figure when ``out`` is None (each axes' ``get_label()``
        is its panel name).

    Raises:
        CompareError: an unknown panel, an unsupported format, no rows or no run folders.
        ValueError: not one label per row.
    """
    chosen = check_panels(panels)
    target = None if out is None else check_plot_path(out)
    paths = table.attrs.get("paths")
    if table.empty:
        raise CompareError("no rows to plot")
    if paths is None or len(paths) != len(table):
        raise CompareError("the table names no run folders; make it with compare.comparison")
    labels = row_labels(table) if labels is None else [str(label) for label in labels]
    if len(labels) != len(table):
        raise ValueError(f"{len(labels)} labels for {len(table)} rows")
    colors = row_colors(table)
    logs = {
        kind: [[_read(reader, p) for p in row] for row in paths]
        for kind, reader in (("steps", load_steps), ("evals", load_evals))
        if any(_SOURCES[name][0] == kind for name in chosen)
    }
    longest = max((len(f) for row in logs.get("steps", []) for f in row), default=1)
    window = smoothing_window(longest)

    nrows = math.ceil(len(chosen) / _PER_ROW)
    ncols = math.ceil(len(chosen) / nrows)
    fig = new_figure(ncols * _PANEL_SIZE[0], nrows * _PANEL_SIZE[1])
    grid = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in grid[len(chosen) :]:
        ax.remove()
    for name, ax in zip(chosen, grid, strict=False):
        _draw_panel(ax, name, logs[_SOURCES[name][0]], labels, colors, window)
    banded = any(len(p) > 1 for p in paths)
    _add_legend(fig, labels, colors, nrows * _PANEL_SIZE[1], banded)
    return fig if target is None else save_figure(fig, target)


def _read(reader, path: str | Path) -> pd.DataFrame:
    try:
        return reader(path)
    except GradlabError:  # a log that cannot be read: that run draws nothing
        return pd.DataFrame()


def _draw_panel(
    ax: Axes,
    name: str,
    runs: list[list[pd.DataFrame]],
    labels: list[str],
    colors: list[str],
    window: int,
) -> None:
    kind, column, ylabel = _SOURCES[name]
    log = name in LOG_PANELS
    smooth = kind == "steps" and name != "lr" and window > 1  # lr: exact, as scheduled
    drawn = 0
    if column is None:
        drawn = _draw_edit_stats(ax, runs, labels, colors, window)
    else:
        for frames, label, color in zip(runs, labels, colors, strict=True):
            series = [
                s for f in frames if (s := _series(f, column, window if smooth else 1)) is not None
            ]
            drawn += _draw_row(ax, series, log, label, color, "-", markers=kind == "evals")
    title = PANELS[name] + (f" (moving average over {window} steps)" if smooth else "")
    width_chars = int(_PANEL_SIZE[0] * 72 / (10 * 0.58))
    ax.set_title(textwrap.fill(title, width_chars), fontsize=10)
    ax.set_label(name)
    if not drawn:
        what = "no row has edits" if column is None else f"no run logged {column}"
        ax.text(
            0.5, 0.5, f"no data\n({what})", ha="center", va="center", color="0.4",
            transform=ax.transAxes,
        )  # fmt: skip
        ax.set_xticks([])
        ax.set_yticks([])
        return
    if log:
        ax.set_yscale("log")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel + (" (log scale)" if log else ""))
    ax.grid(alpha=0.3, which="major")


def _draw_edit_stats(
    ax: Axes, runs: list[list[pd.DataFrame]], labels: list[str], colors: list[str], window: int
) -> int:
    """Every edit statistic of every row: the row's colour, one line style per statistic
    (named in a small legend of the axes)."""
    per_row = [
        sorted({c for f in frames for c in f.columns if _EDIT_STAT.match(c)}) for frames in runs
    ]
    keys = sorted({_stat_key(c) for columns in per_row for c in columns})
    styles = {k: _LINESTYLES[i % len(_LINESTYLES)] for i, k in enumerate(keys)}
    drawn = 0
    for frames, columns, label, color in zip(runs, per_row, labels, colors, strict=True):
        for column in columns:
            series = [s for f in frames if (s := _series(f, column, window)) is not None]
            key = _stat_key(column)
            drawn += _draw_row(ax, series, True, f"{label}: {key}", color, styles[key])
    if drawn:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color="0.35", linestyle=styles[k]) for k in keys]
        ax.legend(handles, keys, fontsize=7, loc="best", framealpha=0.8)
    return drawn


def _stat_key(column: str) -> str:
    index, _, stat = _EDIT_STAT.match(column).groups()  # the edit itself: the row's label
    return stat if index == "0" else f"edit{index}.{stat}"


def _series(frame: pd.DataFrame, column: str, window: int) -> pd.Series | None:
    """``column`` of one run against step (finite values only), smoothed over ``window``."""
    if column not in frame.columns or "step" not in frame.columns:
        return None
    rows = frame[["step", column]].dropna(subset=["step"]).drop_duplicates("step", keep="last")
    series = rows.set_index("step")[column].astype(float).sort_index()
    series = series.where(np.isfinite(series))
    if window > 1:
        series = series.rolling(window, min_periods=1).mean()
    return series if series.notna().any() else None


def band(series: list[pd.Series], log: bool) -> pd.DataFrame:
    """The line and band of one row at each step, from its runs' series (aligned on step).

    Returns:
        Columns ``center``, ``low``, ``high`` indexed by step: the mean and mean +- std
        (ddof=1) over the runs, or with ``log`` the geometric mean ``exp(mean(log x))`` and
        ``exp(mean(log x) +- std(log x))`` with values <= 0 left out. ``low``/``high`` are
        NaN where fewer than two runs have a value.
    """
    values = pd.concat(series, axis=1, keys=range(len(series))).sort_index()
    if log:
        values = np.log(values.where(values > 0))
    mean, std = values.mean(axis=1), values.std(axis=1, ddof=1)
    out = pd.DataFrame({"center": mean, "low": mean - std, "high": mean + std})
    out = np.exp(out) if log else out
    return out[mean.notna()]


def _draw_row(
    ax: Axes,
    series: list[pd.Series],
    log: bool,
    label: str,
    color: str,
    linestyle: Any,
    markers: bool = False,
) -> int:
    if not series:
        return 0
    line = band(series, log)
    if line.empty:
        return 0
    few = markers and len(line) <= _MARKERS_UP_TO
    ax.plot(
        line.index,
        line["center"],
        color=color,
        linestyle=linestyle,
        label=label,
        marker="o" if few else None,
        ms=3.5,
        lw=1.5,
    )
    if line["low"].notna().any():
        ax.fill_between(
            line.index,
            line["low"],
            line["high"],
            color=color,
            alpha=0.18,
            linewidth=0,
            label=f"_band {label}",
        )
    return 1


def _add_legend(
    fig: Figure, labels: list[str], colors: list[str], panels_height: float, banded: bool
) -> None:
    """The legend below the panels: as many columns as fit the width, the figure made tall
    enough for its rows."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, lw=2) for c in colors]
    shown = [label if len(label) <= 90 else f"{label[:60]}…{label[-29:]}" for label in labels]
    title = (
        "line: mean over seeds, band: ±1 std (log axes: geometric mean, ×/÷ geometric std)"
        if banded
        else None
    )
    renderer = fig.canvas.get_renderer()
    width = fig.get_figwidth() * fig.dpi
    ncol = len(labels)
    while True:
        legend = fig.legend(
            handles,
            shown,
            loc="outside lower center",
            ncol=ncol,
            fontsize=9,
            frameon=False,
            title=title,
            title_fontsize=8,
        )
        extent = legend.get_window_extent(renderer)
        if extent.width <= 0.97 * width or ncol == 1:
            break
        legend.remove()
        ncol = max(1, min(ncol - 1, int(ncol * 0.97 * width / extent.width)))
    fig.set_figheight(panels_height + extent.height / fig.dpi + 0.25)


def new_figure(width: float, height: float) -> Figure:
    """An empty figure (inches) with constrained layout on an Agg canvas, outside pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, out: str | Path) -> Path:
    """Write ``fig`` in the format its suffix names (:data:`FORMATS`) through a temporary
    file and a rename (a failure leaves no half-written picture), and close it.

    Raises:
        CompareError: an unsupported suffix. OSError: the file cannot be written.
    """
    out = check_plot_path(out)
    fmt = out.suffix.lower()[1:]
    metadata = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}.get(fmt)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        fig.savefig(tmp, format=fmt, dpi=_DPI, metadata=metadata)
        os.replace(tmp, out)
    finally:
        if getattr(fig.canvas, "manager", None) is not None:  # made with pyplot
            import matplotlib.pyplot as plt

            plt.close(fig)
        tmp.unlink(missing_ok=True)
    return out
