"""A row's line and band (gradlab.study.bands) on hand-built series: the smoothing window,
one run's series, the mean +- std and geometric bands against numpy, and what draw_row puts
on a real axes. (test_plots.py checks the same maths end to end on written run folders.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gradlab.study.bands import band, draw_row, run_series, smoothing_window
from gradlab.study.figures import new_figure


def series(values, steps=None) -> pd.Series:
    steps = range(1, len(values) + 1) if steps is None else steps
    return pd.Series(np.asarray(values, float), index=np.asarray(steps, float))


def band_edges(collection) -> tuple[dict, dict]:
    """The lower and upper edge of a fill_between band: y by x."""
    vertices = np.concatenate([p.vertices for p in collection.get_paths()])
    xs = sorted(set(vertices[:, 0]))
    low = {x: vertices[vertices[:, 0] == x, 1].min() for x in xs}
    high = {x: vertices[vertices[:, 0] == x, 1].max() for x in xs}
    return low, high


# --------------------------------------------------------------------------- smoothing


@pytest.mark.parametrize(
    ("steps", "window"),
    [(0, 1), (1, 1), (49, 1), (99, 1), (100, 2), (149, 2), (150, 3), (200, 4), (1000, 20)],
)
def test_the_window_is_a_fiftieth_of_the_run_and_at_least_one(steps: int, window: int):
    assert smoothing_window(steps) == window


# --------------------------------------------------------------------------- one run


def test_a_series_is_sorted_by_step_with_the_last_of_repeated_steps():
    frame = pd.DataFrame({"step": [3, 1, 2, 2], "loss": [3.0, 1.0, 9.0, 2.0]})
    out = run_series(frame, "loss", 1)
    assert out.index.tolist() == [1.0, 2.0, 3.0]
    assert out.tolist() == [1.0, 2.0, 3.0]


def test_a_missing_column_or_x_gives_none():
    frame = pd.DataFrame({"step": [1, 2], "loss": [1.0, 2.0]})
    assert run_series(frame, "grad_norm", 1) is None
    assert run_series(frame, "loss", 1, x="epsilon") is None


def test_a_series_without_a_finite_value_gives_none():
    frame = pd.DataFrame({"step": [1, 2, 3], "loss": [np.nan, np.inf, -np.inf]})
    assert run_series(frame, "loss", 1) is None
    assert run_series(frame, "loss", 3) is None


def test_non_finite_steps_are_dropped_and_non_finite_values_are_missing():
    frame = pd.DataFrame({"step": [1, np.nan, 2, np.inf, 3], "loss": [1.0, 5.0, np.inf, 6.0, 3.0]})
    out = run_series(frame, "loss", 1)
    assert out.index.tolist() == [1.0, 2.0, 3.0]
    assert out.iloc[0] == 1.0 and np.isnan(out.iloc[1]) and out.iloc[2] == 3.0


def test_smoothing_is_a_trailing_mean_over_the_window():
    values = [1.0, 2.0, 6.0, 3.0, 8.0]
    frame = pd.DataFrame({"step": [1, 2, 3, 4, 5], "loss": values})
    out = run_series(frame, "loss", 3)
    expected = [np.mean(values[max(0, i - 2) : i + 1]) for i in range(5)]  # 1, 1.5, 3, 11/3, 17/3
    np.testing.assert_allclose(out.to_numpy(), expected, rtol=1e-12)
    assert out.index.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_a_missing_value_is_left_out_of_its_window():
    frame = pd.DataFrame({"step": [1, 2, 3], "loss": [2.0, np.nan, 4.0]})
    assert run_series(frame, "loss", 2).tolist() == [2.0, 2.0, 4.0]


def test_any_column_can_be_the_x_axis():
    frame = pd.DataFrame(
        {"step": [4, 8, 12], "epsilon": [0.5, 1.0, 1.0], "test_accuracy": [0.2, 0.3, 0.4]}
    )
    out = run_series(frame, "test_accuracy", 1, x="epsilon")
    assert out.index.tolist() == [0.5, 1.0] and out.tolist() == [0.2, 0.4]


# --------------------------------------------------------------------------- the band


def test_a_linear_band_is_the_mean_and_one_sample_std():
    runs = [[1.0, 2.0, 4.0, 3.0], [3.0, 5.0, 4.0, 7.0], [2.0, 11.0, 4.0, 2.0]]
    out = band([series(r) for r in runs], log=False)
    values = np.array(runs)
    mean, std = values.mean(axis=0), values.std(axis=0, ddof=1)
    assert list(out.columns) == ["center", "low", "high"]
    assert out.index.tolist() == [1.0, 2.0, 3.0, 4.0]
    np.testing.assert_allclose(out["center"], mean, rtol=1e-12)
    np.testing.assert_allclose(out["low"], mean - std, rtol=1e-12)
    np.testing.assert_allclose(out["high"], mean + std, rtol=1e-12)
    assert out.loc[3.0, "low"] == out.loc[3.0, "high"] == 4.0  # equal runs: no width


def test_a_log_band_is_the_geometric_mean_times_and_over_the_geometric_std():
    runs = [[0.01, 1.0, 50.0], [1.0, 2.0, 0.5], [100.0, 8.0, 3.0]]
    out = band([series(r) for r in runs], log=True)
    logs = np.log(np.array(runs))
    mean, std = logs.mean(axis=0), logs.std(axis=0, ddof=1)
    center, factor = np.exp(mean), np.exp(std)
    np.testing.assert_allclose(out["center"], center, rtol=1e-12)
    np.testing.assert_allclose(out["low"], center / factor, rtol=1e-12)
    np.testing.assert_allclose(out["high"], center * factor, rtol=1e-12)
    np.testing.assert_allclose(out.loc[1.0, "center"], 1.0, rtol=1e-12)  # (0.01 * 1 * 100)^(1/3)
    assert (out["low"] > 0).all()
    linear = band([series(r) for r in runs], log=False)
    assert linear.loc[1.0, "low"] < 0  # where a linear band would go below zero


def test_a_log_band_leaves_out_values_at_or_below_zero():
    runs = [series([4.0, -1.0, 0.0]), series([1.0, 9.0, 0.0]), series([0.0, 1.0, -2.0])]
    out = band(runs, log=True)
    assert out.index.tolist() == [1.0, 2.0]  # step 3: no positive value, no point
    assert out.loc[1.0, "center"] == pytest.approx(2.0)  # sqrt(4 * 1)
    assert out.loc[2.0, "center"] == pytest.approx(3.0)  # sqrt(9 * 1)
    std = np.std(np.log([4.0, 1.0]), ddof=1)
    assert out.loc[1.0, "low"] == pytest.approx(2.0 / np.exp(std))
    assert out.loc[1.0, "high"] == pytest.approx(2.0 * np.exp(std))


def test_runs_are_aligned_on_step_and_one_value_has_no_band():
    out = band([series([1.0, 2.0, 3.0], [1, 2, 3]), series([5.0, 7.0], [2, 4])], log=False)
    assert out.index.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert out["center"].tolist() == [1.0, 3.5, 3.0, 7.0]
    assert out["low"].isna().tolist() == [True, False, True, True]
    std = np.std([2.0, 5.0], ddof=1)
    assert out.loc[2.0, "low"] == pytest.approx(3.5 - std)
    assert out.loc[2.0, "high"] == pytest.approx(3.5 + std)


def test_a_single_run_has_its_values_and_no_band():
    out = band([series([3.0, 1.0])], log=False)
    assert out["center"].tolist() == [3.0, 1.0] and out["low"].isna().all()
    assert out["high"].isna().all()


def test_a_step_where_every_run_is_missing_is_dropped():
    out = band([series([1.0, np.nan, 3.0]), series([2.0, np.nan, 5.0])], log=False)
    assert out.index.tolist() == [1.0, 3.0]


# --------------------------------------------------------------------------- drawing


@pytest.fixture
def ax():
    return new_figure(4, 3).add_subplot()


def test_a_row_draws_its_mean_line_and_its_band_in_its_colour(ax):
    runs = [[1.0, 2.0, 4.0], [3.0, 6.0, 4.0]]
    drawn = draw_row(ax, [series(r) for r in runs], False, "lr=0.1", "#d62728", "--")
    assert drawn == 1
    (line,) = ax.get_lines()
    assert line.get_label() == "lr=0.1"
    assert line.get_color() == "#d62728" and line.get_linestyle() == "--"
    assert np.asarray(line.get_xdata()).tolist() == [1.0, 2.0, 3.0]
    assert np.asarray(line.get_ydata()).tolist() == [2.0, 4.0, 4.0]
    assert line.get_marker() == "None" and line.get_markevery() is None
    (fill,) = ax.collections
    assert fill.get_label() == "_band lr=0.1"  # "_": left out of legends
    assert fill.get_alpha() == pytest.approx(0.18)
    np.testing.assert_allclose(fill.get_facecolor()[0], [214 / 255, 39 / 255, 40 / 255, 0.18])
    low, high = band_edges(fill)
    std = np.array(runs).std(axis=0, ddof=1)
    assert list(low) == [1.0, 2.0, 3.0]
    np.testing.assert_allclose(list(low.values()), [2.0, 4.0, 4.0] - std, rtol=1e-12)
    np.testing.assert_allclose(list(high.values()), [2.0, 4.0, 4.0] + std, rtol=1e-12)


def test_a_log_row_draws_the_geometric_band(ax):
    runs = [[1.0, 100.0], [100.0, 1.0]]
    draw_row(ax, [series(r) for r in runs], True, "clip", "#1f77b4", "-")
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_ydata(), [10.0, 10.0], rtol=1e-12)
    low, high = band_edges(ax.collections[0])
    factor = np.exp(np.std(np.log([1.0, 100.0]), ddof=1))
    np.testing.assert_allclose(list(low.values()), [10 / factor] * 2, rtol=1e-12)
    np.testing.assert_allclose(list(high.values()), [10 * factor] * 2, rtol=1e-12)


def test_one_run_draws_a_line_without_a_band(ax):
    assert draw_row(ax, [series([1.0, 2.0])], False, "solo", "#2ca02c", "-") == 1
    assert len(ax.get_lines()) == 1 and len(ax.collections) == 0


def test_nothing_to_draw_draws_nothing(ax):
    assert draw_row(ax, [], False, "none", "#000000", "-") == 0
    assert draw_row(ax, [series([-1.0, 0.0])], True, "neg", "#000000", "-") == 0
    assert len(ax.get_lines()) == 0 and len(ax.collections) == 0


def test_few_evaluation_points_get_a_dot_each(ax):
    draw_row(ax, [series(np.ones(30))], False, "evals", "#000000", "-", markers=True)
    (line,) = ax.get_lines()
    assert line.get_marker() == "o" and line.get_markevery() is None


def test_many_points_get_no_dots_but_keep_a_spaced_out_symbol(ax):
    draw_row(ax, [series(np.ones(31))], False, "a", "#000000", "-", markers=True)
    draw_row(ax, [series(np.ones(31))], False, "b", "#000000", "-", markers=True, marker="^")
    draw_row(ax, [series(np.ones(5))], False, "c", "#000000", "-", marker="s")
    a, b, c = ax.get_lines()
    assert a.get_marker() == "None"
    assert b.get_marker() == "^" and b.get_markevery() == 0.1
    assert c.get_marker() == "s" and c.get_markevery() == 0.1  # no markers asked: the symbol
