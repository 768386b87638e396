"""A row's line and band in a comparison figure: each run's series against step (smoothed),
combined over the row's seeds, and drawn on an axes.

- per-step series are smoothed run by run with a trailing moving average over about 1/50 of
  the run (:func:`smoothing_window`);
- on a linear axis the line is the mean over the runs and the band +- one sample std;
- on a log axis the line is the geometric mean ``exp(mean(log x))`` and the band
  ``exp(mean(log x) +- std(log x))``, so a band is never at or below zero; values <= 0 are
  left out (after smoothing).

A run's series is a :data:`Curve`, two numpy arrays, and a row's band is computed on a
matrix of its runs (numpy, not one pandas object per run: a study of thousands of runs is
drawn in seconds). :func:`run_series` and :func:`band` are the same computations on pandas
objects. A long line is drawn through fewer points than it has (:func:`drawn_points`): the
smallest and largest values of the line and of the band's edges in each of
:data:`DRAW_BUCKETS` stretches, which draws the same picture at any figure's resolution;
the statistics are computed on every point.

Pure pandas and numpy; matplotlib is only called through the axes it is given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_MARKERS_UP_TO = 30  # evaluation points
DRAW_BUCKETS = 1000
"""A line of more than 4 x this many points is drawn through 4 points of each of this many
stretches of it (:func:`drawn_points`)."""

Curve = tuple[np.ndarray, np.ndarray]
"""One run's series: its x values (increasing, no repeats) and its y values (NaN where it
has none)."""


def smoothing_window(total_steps: int) -> int:
    """Moving-average window of per-step series: about 1/50 of the run, at least 1."""
    return max(1, total_steps // 50)


def run_curve(
    x: np.ndarray, y: np.ndarray, window: int, x_min: float | None = None
) -> Curve | None:
    """One run's series from its log's columns ``x`` and ``y``: rows with a finite ``x``
    (and at least ``x_min``), sorted by ``x``, the last row of a repeated ``x``; values that
    are not finite are missing; smoothed by :func:`moving_mean` over ``window``.

    Returns:
        The curve, or None when no value is left.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) if x_min is None else np.isfinite(x) & (x >= x_min)
    if not keep.all():
        x, y = x[keep], y[keep]
    if x.size > 1 and not (np.diff(x) > 0).all():  # unsorted or repeated: the last of each
        _, first_reversed = np.unique(x[::-1], return_index=True)
        last = x.size - 1 - first_reversed
        x, y = x[last], y[last]
    y = np.where(np.isfinite(y), y, np.nan)
    if window > 1:
        y = moving_mean(y, window)
    return (x, y) if x.size and not np.isnan(y).all() else None


def run_series(frame: pd.DataFrame, column: str, window: int, x: str = "step") -> pd.Series | None:
    """``column`` of one run against ``x`` (``step``, or another column such as evals.csv's
    ``epsilon``; finite values only), smoothed over ``window``: :func:`run_curve` as a
    Series indexed by ``x``."""
    if column not in frame.columns or x not in frame.columns:
        return None
    curve = run_curve(frame[x].to_numpy(float), frame[column].to_numpy(float), window)
    if curve is None:
        return None
    return pd.Series(curve[1], index=pd.Index(curve[0], name=x), name=column)


def moving_mean(values: np.ndarray, window: int) -> np.ndarray:
    """The trailing mean of ``values`` over ``window`` positions, missing values (NaN) left
    out, NaN where the window holds none: pandas' ``rolling(window, min_periods=1).mean()``.

    Sums are taken within blocks of ``window`` values (a window spans at most two), so
    that rounding follows the window's values, not the sum of the whole run."""
    values = np.asarray(values, float)
    present = ~np.isnan(values)
    counts = np.cumsum(np.concatenate([[0], present]))
    n = values.size
    ends = np.arange(1, n + 1)
    counts = counts[ends] - counts[np.maximum(ends - window, 0)]
    sums = _window_sums(np.where(present, values, 0.0), window)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _window_sums(values: np.ndarray, window: int) -> np.ndarray:
    """Sum of the ``window`` values up to each position (fewer at the start)."""
    n = values.size
    blocks = np.concatenate([values, np.zeros(-n % window)]).reshape(-1, window)
    prefix = np.cumsum(blocks, axis=1)  # within each block
    sums = prefix.ravel()[:n].copy()
    i = np.arange(n)
    # a window that starts inside the previous block: that block's remainder too
    spans = i[(i >= window) & (i % window != window - 1)]
    sums[spans] += prefix[spans // window - 1, -1] - prefix.ravel()[spans - window]
    return sums


def band_arrays(curves: list[Curve], log: bool) -> tuple[np.ndarray, ...]:
    """The line and band of one row at each x, from its runs' curves (aligned on x).

    Returns:
        ``(x, center, low, high)``: the mean and mean +- std (ddof=1) over the runs, or with
        ``log`` the geometric mean ``exp(mean(log x))`` and ``exp(mean(log x) +- std(log
        x))`` with values <= 0 left out; ``low``/``high`` are NaN where fewer than two runs
        have a value. Only the x where some run has a value.
    """
    xs = [x for x, _ in curves]
    if all(x.size == xs[0].size and np.array_equal(x, xs[0]) for x in xs[1:]):
        grid = xs[0]
        values = np.vstack([y for _, y in curves])
    else:  # runs of different lengths or steps: NaN where a run has no value
        grid = np.unique(np.concatenate(xs))
        values = np.full((len(curves), grid.size), np.nan)
        for row, (x, y) in zip(values, curves, strict=True):
            row[np.searchsorted(grid, x)] = y
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.where(values > 0, np.log(np.where(values > 0, values, 1.0)), np.nan)
    present = ~np.isnan(values)
    count = present.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(present, values, 0.0).sum(axis=0) / count
        squares = np.where(present, (values - mean) ** 2, 0.0).sum(axis=0)
        std = np.where(count > 1, np.sqrt(squares / (count - 1)), np.nan)
    keep = count > 0
    center, low, high = mean[keep], (mean - std)[keep], (mean + std)[keep]
    if log:
        center, low, high = np.exp(center), np.exp(low), np.exp(high)
    return grid[keep], center, low, high


def band(series: list[pd.Series], log: bool) -> pd.DataFrame:
    """:func:`band_arrays` on Series indexed by step.

    Returns:
        Columns ``center``, ``low``, ``high`` indexed by step.
    """
    x, center, low, high = band_arrays([_curve(s) for s in series], log)
    return pd.DataFrame({"center": center, "low": low, "high": high}, index=pd.Index(x))


def _curve(series: pd.Series | Curve) -> Curve:
    if not isinstance(series, pd.Series):
        return series
    series = series[~series.index.duplicated(keep="last")].sort_index()
    return series.index.to_numpy(float), series.to_numpy(float)


def drawn_points(center: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Which points of a line (and its band) to draw: all of them up to 4 x
    :data:`DRAW_BUCKETS`; else, in each of :data:`DRAW_BUCKETS` equal stretches, the points
    of the smallest and largest value of the line and of the lowest and highest band edge,
    and the first and last point (the picture of the line at any resolution)."""
    n = center.size
    if n <= 4 * DRAW_BUCKETS:
        return np.arange(n)
    size = -(-n // DRAW_BUCKETS)
    starts = np.arange(0, n, size)

    def stretches(values: np.ndarray, fill: float) -> np.ndarray:
        padded = np.concatenate([values, np.full(-n % size, fill)])
        return np.where(np.isnan(padded), fill, padded).reshape(-1, size)

    picks = [
        starts + stretches(center, np.inf).argmin(axis=1),
        starts + stretches(center, -np.inf).argmax(axis=1),
        starts + stretches(low, np.inf).argmin(axis=1),
        starts + stretches(high, -np.inf).argmax(axis=1),
    ]
    return np.unique(np.concatenate([[0, n - 1], *picks]).clip(0, n - 1))


def draw_row(
    ax: Axes,
    series: list[pd.Series] | list[Curve],
    log: bool,
    label: str,
    color: str,
    linestyle: Any,
    markers: bool = False,
    marker: str | None = None,
) -> int:
    """Draw one row: its line, and its band where two runs or more have a value.

    Args:
        series: the runs' series (Series indexed by step, or :data:`Curve` arrays).
        markers: a dot on every point when there are few (evaluations).
        marker: a symbol along the line, spaced out (to tell statistics apart), or None.

    Returns:
        1 when something was drawn, else 0 (no series, or no value left).
    """
    if not series:
        return 0
    x, center, low, high = band_arrays([_curve(s) for s in series], log)
    if not x.size:
        return 0
    few = markers and x.size <= _MARKERS_UP_TO
    shown = drawn_points(center, low, high)
    if shown.size < x.size:
        x, center, low, high = x[shown], center[shown], low[shown], high[shown]
    ax.plot(
        x,
        center,
        color=color,
        linestyle=linestyle,
        label=label,
        marker="o" if few else marker,
        markevery=None if few or marker is None else 0.1,
        ms=3.5,
        lw=1.5,
    )
    if not np.isnan(low).all():
        ax.fill_between(x, low, high, color=color, alpha=0.18, linewidth=0, label=f"_band {label}")
    return 1
