"""A row's line and band in a comparison figure: each run's series against step (smoothed),
combined over the row's seeds, and drawn on an axes.

- per-step series are smoothed run by run with a trailing moving average over about 1/50 of
  the run (:func:`smoothing_window`);
- on a linear axis the line is the mean over the runs and the band +- one sample std;
- on a log axis the line is the geometric mean ``exp(mean(log x))`` and the band
  ``exp(mean(log x) +- std(log x))``, so a band is never at or below zero; values <= 0 are
  left out (after smoothing).

Pure pandas and numpy; matplotlib is only called through the axes it is given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_MARKERS_UP_TO = 30  # evaluation points


def smoothing_window(total_steps: int) -> int:
    """Moving-average window of per-step series: about 1/50 of the run, at least 1."""
    return max(1, total_steps // 50)


def run_series(frame: pd.DataFrame, column: str, window: int, x: str = "step") -> pd.Series | None:
    """``column`` of one run against ``x`` (``step``, or another column such as evals.csv's
    ``epsilon``; finite values only), smoothed over ``window``."""
    if column not in frame.columns or x not in frame.columns:
        return None
    rows = frame[[x, column]].astype(float)
    rows = rows[np.isfinite(rows[x])].drop_duplicates(x, keep="last")
    series = rows.set_index(x)[column].sort_index()
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


def draw_row(
    ax: Axes,
    series: list[pd.Series],
    log: bool,
    label: str,
    color: str,
    linestyle: Any,
    markers: bool = False,
    marker: str | None = None,
) -> int:
    """Draw one row: its line, and its band where two runs or more have a value.

    Args:
        markers: a dot on every point when there are few (evaluations).
        marker: a symbol along the line, spaced out (to tell statistics apart), or None.

    Returns:
        1 when something was drawn, else 0 (no series, or no value left).
    """
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
        marker="o" if few else marker,
        markevery=None if few or marker is None else 0.1,
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
