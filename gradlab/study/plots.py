"""Figures that explain a study: one line per row of the comparison table (the mean over
its seeds, with a band), in panels chosen by name, saved as PNG, PDF or SVG.

Python API (the figure ``gradlab compare --plot`` writes, to change in a notebook)::

    from gradlab.study.compare import comparison
    from gradlab.study.plots import plot_comparison
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

The parts: :mod:`gradlab.study.labels` (each row's legend label and colour), :mod:`gradlab.study.bands`
(a row's line and band) and :mod:`gradlab.study.figures` (making and saving figure files); this
module chooses the panels, lays them out and draws them.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from gradlab.errors import CompareError, GradlabError
from gradlab.study.bands import draw_row, run_series, smoothing_window
from gradlab.study.figures import check_plot_path, new_figure, save_figure
from gradlab.study.labels import row_colors, row_labels
from gradlab.study.reading import load_evals, load_steps

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PANELS: dict[str, str] = {
    "train_loss": "training loss",
    "test_loss": "test loss",
    "test_accuracy": "test accuracy",
    "grad_norm": "gradient norm before the edits",
    "grad_norm_after": "gradient norm after the edits",
    "lr": "learning rate",
    "edit_stats": "edit fractions per step",
    "edit_norms": "edit norms and scales per step",
    "accuracy_vs_epsilon": "test accuracy against privacy spent",
    "dp_clipped_frac": "share of examples clipped",
    "dp_norm_median": "median per-example gradient norm",
}
"""Panel name -> title. The edit panels draw the ``edit<i>.<type>.<stat>`` columns of
``steps.csv``, split by what they measure (rows without edits have no line there):

- ``edit_stats``: the fractions and flags, on a linear axis from 0 to 1: statistics named
  ``*_frac`` (e.g. ``clipped_frac``, the fraction of entries clipped) and ``changed`` (1 when
  the edit changed the gradient; smoothed, the share of steps it did);
- ``edit_norms``: every other statistic (norms, scales, noise std, norm ratios), on a log
  axis.

In both, a line's colour is its row and its style the statistic (named in a legend beside
the panel): the statistic's name, prefixed ``<i>:`` with the edit's position when some row
has more than one edit (``0:changed``, ``1:kept_frac``).

Runs with a ``privacy`` section add: ``accuracy_vs_epsilon`` (evals.csv's test accuracy
against its ``epsilon``, the privacy spent so far, instead of the step; a row without
privacy is a dotted horizontal line at its final accuracy), ``dp_clipped_frac`` and
``dp_norm_median`` (steps.csv's ``dp.*`` columns, before clipping)."""
DEFAULT_PANELS = ("train_loss", "test_accuracy", "grad_norm", "grad_norm_after")
LOG_PANELS = frozenset({"grad_norm", "grad_norm_after", "lr", "edit_norms", "dp_norm_median"})

# panel -> (log file, column (None: the edit statistics), y label)
_SOURCES = {
    "train_loss": ("steps", "loss", "cross-entropy"),
    "test_loss": ("evals", "test_loss", "cross-entropy"),
    "test_accuracy": ("evals", "test_accuracy", "accuracy"),
    "grad_norm": ("steps", "grad_norm", "global L2 norm"),
    "grad_norm_after": ("steps", "grad_norm_after", "global L2 norm"),
    "lr": ("steps", "lr", "learning rate"),
    "edit_stats": ("steps", None, "fraction"),
    "edit_norms": ("steps", None, "value"),
    "accuracy_vs_epsilon": ("evals", "test_accuracy", "accuracy"),
    "dp_clipped_frac": ("steps", "dp.clipped_frac", "fraction"),
    "dp_norm_median": ("steps", "dp.norm_median", "L2 norm"),
}
_X_AXIS = {"accuracy_vs_epsilon": ("epsilon", "epsilon spent (the run's accountant and delta)")}
"""Panels drawn against another evals.csv column than ``step``: (column, axis label)."""
_EDIT_STAT = re.compile(r"^edit(\d+)\.([^.]+)\.(.+)$")
_PANEL_SIZE = (5.2, 3.6)  # inches per panel
_PER_ROW = 3
_LINESTYLES: list[str | tuple[float, tuple[float, ...]]] = [
    "-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 2))
]  # fmt: skip
_MARKERS = [None, "o", "s", "^", "D", "v", "x", "+"]  # after the line styles run out


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
            raise CompareError(
                f"panels {name}: unknown panel; choose from {', '.join(PANELS)}",
                argument="panels",
            )
    if not chosen:
        raise CompareError(f"panels: choose at least one of {', '.join(PANELS)}", argument="panels")
    return list(dict.fromkeys(chosen))


# --------------------------------------------------------------------------- the figure


def plot_comparison(
    table: pd.DataFrame,
    out: str | Path | None = None,
    panels: str | Iterable[str] | None = None,
    labels: list[str] | None = None,
) -> Figure | Path:
    """One line per table row in each panel (see the module docstring for the bands).

    Args:
        table: from :func:`gradlab.study.compare.comparison` (``attrs["paths"]`` names the runs).
        out: a ``.png``, ``.pdf`` or ``.svg`` file, written whole or not at all; None
            returns the figure instead, to change and save in a notebook.
        panels: names from :data:`PANELS` (default :data:`DEFAULT_PANELS`, and
            ``accuracy_vs_epsilon`` when some row is private).
        labels: the legend labels, one per row (default :func:`row_labels`).

    Returns:
        The Path written, or the Figure when ``out`` is None (each axes' ``get_label()``
        is its panel name).

    Raises:
        CompareError: an unknown panel, an unsupported format, no rows or no run folders.
        ValueError: not one label per row.
    """
    chosen = check_panels(panels)
    if panels is None and "epsilon" in table.columns and table["epsilon"].notna().any():
        chosen.append("accuracy_vs_epsilon")  # private runs: the privacy-utility curve too
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
    x, xlabel = _X_AXIS.get(name, ("step", "step"))
    drawn = 0
    if column is None:
        drawn = _draw_edit_stats(ax, name, runs, labels, colors, window)
    else:
        per_row = [
            [
                s
                for f in frames
                if (s := run_series(f, column, window if smooth else 1, x)) is not None
            ]
            for frames in runs
        ]
        levels = x != "step" and any(per_row)  # rows without x (no privacy): a reference level
        for frames, series, label, color in zip(runs, per_row, labels, colors, strict=True):
            if not series and levels:
                drawn += _draw_level(ax, frames, column, label, color)
                continue
            drawn += draw_row(ax, series, log, label, color, "-", markers=kind == "evals")
    title = PANELS[name] + (f" (moving average over {window} steps)" if smooth else "")
    width_chars = int(_PANEL_SIZE[0] * 72 / (10 * 0.58))
    ax.set_title(textwrap.fill(title, width_chars), fontsize=10)
    ax.set_label(name)
    if not drawn:
        what = f"no run logged {column}" + (f" against {x}" if x != "step" else "")
        if column is None:
            kinds = "fractions" if name == "edit_stats" else "norms or scales"
            what = f"no row has edits with {kinds}" if _has_edits(runs) else "no row has edits"
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

    if x == "step":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel + (" (log scale)" if log else ""))
    ax.grid(alpha=0.3, which="major")


def _draw_level(ax: Axes, frames: list[pd.DataFrame], column: str, label: str, color: str) -> int:
    """A dotted horizontal line at the mean over runs of ``column``'s last value."""
    last = [
        values.iloc[-1]
        for f in frames
        if column in f.columns and len(values := f[column].astype(float).dropna())
    ]
    if not last:
        return 0
    ax.axhline(sum(last) / len(last), color=color, linestyle=":", label=label)
    return 1


def _draw_edit_stats(
    ax: Axes,
    name: str,
    runs: list[list[pd.DataFrame]],
    labels: list[str],
    colors: list[str],
    window: int,
) -> int:
    """The edit statistics of every row that belong in panel ``name`` (``edit_stats``: the
    fractions and flags, ``edit_norms``: the others): the row's colour, one style per
    statistic, named in a legend beside the axes (never over the data)."""
    per_row = [
        sorted({c for f in frames for c in f.columns if _EDIT_STAT.match(c)}) for frames in runs
    ]
    indexed = any(_edit_stat(c)[0] != "0" for columns in per_row for c in columns)
    fractions = name == "edit_stats"
    per_row = [[c for c in columns if _is_fraction(c) == fractions] for columns in per_row]
    order = {}  # by edit, each edit's ``changed`` first (a solid line)
    for c in (c for columns in per_row for c in columns):
        index, _, stat = _edit_stat(c)
        order[_stat_key(c, indexed)] = (int(index), stat != "changed", stat)
    keys = sorted(order, key=order.__getitem__)
    styles = {k: _style(i) for i, k in enumerate(keys)}
    shown = set()
    for frames, columns, label, color in zip(runs, per_row, labels, colors, strict=True):
        for column in columns:
            series = [s for f in frames if (s := run_series(f, column, window)) is not None]
            key = _stat_key(column, indexed)
            linestyle, marker = styles[key]
            line = f"{label}: {key}"
            if draw_row(ax, series, not fractions, line, color, linestyle, marker=marker):
                shown.add(key)
    if shown:
        from matplotlib.lines import Line2D

        keys = [k for k in keys if k in shown]
        handles = [
            Line2D([], [], color="0.3", linestyle=styles[k][0], marker=styles[k][1], ms=4)
            for k in keys
        ]
        ax.legend(
            handles,
            keys,
            title="edit:statistic" if indexed else "statistic",
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),  # beside the axes: constrained layout makes room
            borderaxespad=0,
            fontsize=7,
            title_fontsize=7,
            handlelength=2.8,
            frameon=False,
        )
        if fractions:
            ax.set_ylim(-0.04, 1.04)
    return len(shown)


def _has_edits(runs: list[list[pd.DataFrame]]) -> bool:
    return any(_EDIT_STAT.match(c) for frames in runs for f in frames for c in f.columns)


def _edit_stat(column: str) -> tuple[str, str, str]:
    """``edit<i>.<type>.<stat>`` -> ``(i, type, stat)``, for a column known to be one."""
    match = _EDIT_STAT.match(column)
    if match is None:
        raise ValueError(f"{column!r} is not an edit statistic's column")
    return match[1], match[2], match[3]


def _is_fraction(column: str) -> bool:
    """A statistic of ``edit_stats`` (a fraction or a flag, 0 to 1), not of ``edit_norms``."""
    stat = _edit_stat(column)[2]
    return stat == "changed" or stat.endswith("_frac")


def _stat_key(column: str, indexed: bool) -> str:
    """The statistic's name in a legend (the edit itself is in the row's label), prefixed
    ``<i>:`` with the edit's position when some row has more than one edit."""
    index, _, stat = _edit_stat(column)
    return f"{index}:{stat}" if indexed else stat


def _style(i: int) -> tuple[Any, str | None]:
    """The ``i``-th statistic's (line style, marker): the line styles first, then each of
    them again with a marker, and so on: every statistic of a panel looks different."""
    n = len(_LINESTYLES)
    return _LINESTYLES[i % n], _MARKERS[(i // n) % len(_MARKERS)]


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
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]  # Agg's canvas
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
