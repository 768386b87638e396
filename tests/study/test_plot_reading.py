"""The fast paths of the study figures and report give what the plain computations give:
many runs' logs parsed together against read_log file by file (corrupt files included),
moving means, bands and per-layer health against pandas and numpy run by run, and a long
line drawn through fewer points that keeps its every extreme."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradlab.errors import RunFolderError
from gradlab.report.health import HEALTH, layer_health
from gradlab.study.bands import (
    DRAW_BUCKETS,
    band_arrays,
    draw_row,
    drawn_points,
    moving_mean,
    run_curve,
)
from gradlab.study.figures import new_figure
from gradlab.study.inspection import layer_table
from gradlab.study.plots import read_logs
from gradlab.study.reading import read_log

HEADER = "step,loss,elapsed_s\n"
LOGS = {  # a run folder's steps.csv, as a killed run, a hand edit or a bad disk leave it
    "cut": HEADER + "1,0.3,0.1\n2,0.2\n",
    "no-final-newline": HEADER + "1,abc,0.1\n2,0.4,0.2",
    "true-false": HEADER + "1,true,0.1\n2,false,0.2\n",
    "a-field-more-first": HEADER + "1,2,3,4\n",
    "a-field-more-later": HEADER + "1,2,3\n4,5,6,7\n",
    "blank-lines": HEADER + "\n1,0.5,0.1\n   \n2,0.6,0.2\n\n",
    "header-only": HEADER,
    "empty": "",
    "quoted": HEADER + '1,"0.5",0.1\n',
    "crlf": HEADER.replace("\n", "\r\n") + "1,0.5,0.1\r\n",
    "bom": "\ufeff" + HEADER + "1,0.5,0.1\n",
    "other-header": "step,loss,other,elapsed_s\n1,0.5,9,0.1\n",
    "no-last-column": "step,loss\n1,0.5\n\n2,0.6\n",
    "non-finite": HEADER + "1,inf,0.1\n2,nan,0.2\n3,,0.3\n4,1e400,0.4\n",
    "empty-last-cell": HEADER + "1,0.5,\n2,0.6,0.2\n",
    "only-commas": HEADER + ",,\n1,2,3\n",
    "a-column-named-_run": "_run,loss,elapsed_s\n1,2,3\n",
    "hex-and-spaces": HEADER + "1,0x10,0.1\n   2, 0.5 ,0.2\n",
    "not-utf8": HEADER + "1,0.5,0.1\n",  # made invalid below
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("logs")
    out = {}
    for name, text in {"intact": HEADER + "1,0.5,0.1\n2,0.4,0.2\n", **LOGS}.items():
        folder = root / name
        folder.mkdir()
        data = text.encode()
        if name == "not-utf8":
            data = data.replace(b"0.5", b"0.\xff5")
        (folder / "steps.csv").write_bytes(data)
        out[name] = folder
    for name, make in (
        ("fifo", lambda p: os.mkfifo(p)),
        ("folder", lambda p: p.mkdir()),
        ("missing", lambda p: None),
        ("outside", lambda p: p.symlink_to(root / "intact" / "steps.csv")),
    ):
        (root / name).mkdir()
        make(root / name / "steps.csv")
        out[name] = root / name
    (root / "intact-2").mkdir()
    (root / "intact-2" / "steps.csv").write_text(HEADER + "5,0.1,0.3\n6,0.2,0.4\n")
    out["intact-2"] = root / "intact-2"
    return out


def cells(frame: pd.DataFrame) -> dict[str, list]:
    """A table's values, numbers as floats (NaN as ``nan``), anything else as text."""

    def cell(value):
        try:
            number = float(value)
        except (TypeError, ValueError):
            return str(value)
        return "nan" if number != number else number

    return {str(c): [cell(v) for v in frame[c]] for c in frame.columns}


def one_by_one(folder: Path, numeric: bool, columns, contained: bool):
    try:
        return read_log(
            folder / "steps.csv", "elapsed_s", numeric, columns, folder if contained else None
        )
    except RunFolderError as exc:
        return exc


@pytest.mark.parametrize("name", [*LOGS, "fifo", "folder", "missing", "outside"])
@pytest.mark.parametrize("numeric", [True, False])
@pytest.mark.parametrize("columns", [None, ["loss"]])
def test_logs_read_together_are_the_logs_read_one_by_one(folders, name, numeric, columns):
    """Each log between two intact ones (so that it would be parsed with them), and the
    three of them as read_log reads each: the same error, or the same rows and values
    (``true`` read as text, not a flag, where a neighbour has numbers: then as read_log
    it is no number either)."""
    runs = [folders["intact"], folders[name], folders["intact-2"]]
    for contained in (False, True):
        together = read_logs(
            runs, "steps.csv", "elapsed_s", numeric=numeric, columns=columns, contained=contained
        )
        assert len(together) == 3
        for folder, got in zip(runs, together, strict=True):
            expected = one_by_one(folder, numeric, columns, contained)
            if isinstance(expected, RunFolderError):
                assert isinstance(got, RunFolderError) and str(got) == str(expected)
                continue
            assert isinstance(got, pd.DataFrame)
            if name == "true-false" and not numeric and folder == folders[name]:
                expected = expected.astype({"loss": str}).replace(
                    {"loss": {"True": "true", "False": "false"}}
                )
            assert cells(got) == cells(expected), (name, folder.name)
            assert isinstance(got.index, pd.RangeIndex) and got.index.start == 0


def test_many_logs_are_parsed_in_few_batches(folders, monkeypatch):
    calls = []
    real = pd.read_csv
    monkeypatch.setattr(pd, "read_csv", lambda *a, **k: calls.append(a) or real(*a, **k))
    runs = [folders["intact"], folders["intact-2"]] * 50
    frames = read_logs(runs, "steps.csv", "elapsed_s", numeric=True)
    assert len(calls) == 1
    assert [f["step"].tolist() for f in frames[:2]] == [[1, 2], [5, 6]]


# --------------------------------------------------------------------------- bands


def window_means(values: np.ndarray, window: int) -> np.ndarray:
    out = []
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1) : i + 1]
        chunk = chunk[~np.isnan(chunk)]
        out.append(chunk.mean() if chunk.size else np.nan)
    return np.array(out)


@pytest.mark.parametrize("seed", range(6))
def test_the_moving_mean_is_the_mean_of_each_window(seed):
    rng = np.random.default_rng(seed)
    n, window = int(rng.integers(1, 700)), int(rng.integers(1, 90))
    values = rng.normal(0, 1, n) * 10 ** rng.uniform(-3, 3, n)
    values[rng.uniform(size=n) < 0.15] = np.nan
    got = moving_mean(values, window)
    expected = window_means(values, window)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12 * np.nanmax(np.abs(values)))
    pandas = pd.Series(values).rolling(window, min_periods=1).mean().to_numpy()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(pandas))


def pandas_series(x, y, window):
    """One run's series the way the plots made it before: pandas, step by step."""
    rows = pd.DataFrame({"x": x, "y": y}).astype(float)
    rows = rows[np.isfinite(rows["x"])].drop_duplicates("x", keep="last")
    series = rows.set_index("x")["y"].sort_index()
    series = series.where(np.isfinite(series))
    series = series.rolling(window, min_periods=1).mean() if window > 1 else series
    return series if series.notna().any() else None


def pandas_band(series, log):
    values = pd.concat(series, axis=1, keys=range(len(series))).sort_index()
    if log:
        values = np.log(values.where(values > 0))
    mean, std = values.mean(axis=1), values.std(axis=1, ddof=1)
    out = pd.DataFrame({"center": mean, "low": mean - std, "high": mean + std})
    return (np.exp(out) if log else out)[mean.notna()]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("log", [False, True])
def test_rows_of_runs_of_different_lengths_and_steps_match_pandas(seed, log):
    rng = np.random.default_rng(100 + seed)
    curves, series = [], []
    for _ in range(int(rng.integers(1, 6))):
        n = int(rng.integers(1, 120))
        x = rng.permutation(np.arange(n) * int(rng.integers(1, 3)) + 1).astype(float)
        x[rng.uniform(size=n) < 0.05] = np.nan
        if n > 3:
            x[-1] = x[0]  # a repeated step: the last row counts
        y = np.exp(rng.normal(0, 2, n)) * rng.choice([1, 1, 1, -1], n)
        y[rng.uniform(size=n) < 0.1] = np.inf
        window = int(rng.integers(1, 6))
        curve, reference = run_curve(x, y, window), pandas_series(x, y, window)
        assert (curve is None) == (reference is None)
        if curve is not None:
            np.testing.assert_array_equal(curve[0], reference.index.to_numpy())
            np.testing.assert_allclose(curve[1], reference.to_numpy(), rtol=1e-9)
            curves.append(curve)
            series.append(reference)
    if not curves:
        return
    x, center, low, high = band_arrays(curves, log)
    expected = pandas_band(series, log)
    np.testing.assert_array_equal(x, expected.index.to_numpy())
    for got, column in ((center, "center"), (low, "low"), (high, "high")):
        np.testing.assert_allclose(got, expected[column].to_numpy(), rtol=1e-9)


def test_a_long_line_is_drawn_through_its_extremes():
    rng = np.random.default_rng(7)
    n = 50_000
    runs = [(np.arange(1.0, n + 1), np.cumsum(rng.normal(0, 1, n)) + 100) for _ in range(3)]
    x, center, low, high = band_arrays(runs, log=False)
    kept = drawn_points(center, low, high)
    assert kept.size <= 4 * DRAW_BUCKETS + 2 and kept[0] == 0 and kept[-1] == n - 1
    size = -(-n // DRAW_BUCKETS)
    for start in range(0, n, size):  # every stretch keeps its highest and lowest values
        stretch = slice(start, start + size)
        inside = kept[(kept >= start) & (kept < start + size)]
        assert center[inside].max() == center[stretch].max()
        assert center[inside].min() == center[stretch].min()
        assert low[inside].min() == low[stretch].min() and high[inside].max() == high[stretch].max()
    ax = new_figure(4, 3).add_subplot()
    draw_row(ax, runs, False, "long", "#1f77b4", "-")
    (line,) = ax.get_lines()
    np.testing.assert_array_equal(line.get_xdata(), x[kept])
    assert line.get_ydata().max() == center.max() and line.get_ydata().min() == center.min()
    short = drawn_points(center[:4000], low[:4000], high[:4000])
    np.testing.assert_array_equal(short, np.arange(4000))  # short lines: every point


# --------------------------------------------------------------------------- gradient health

STATS = ["mean", "std", "norm", "norm_after", "max_abs", "zero_frac", "update_ratio", "weight_norm"]


def health_run_by_run(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """layer_health as it was computed before: inspection.layer_table for each run."""
    per_run = []
    for grads in frames:
        layers = layer_table(grads).set_index(["param", "stat"])
        per_run.append(
            pd.DataFrame(
                {k: layers[which].xs(stat, level="stat") for k, (stat, which) in HEALTH.items()}
            )
        )
    return pd.concat(per_run).groupby(level=0, sort=False).mean()


@pytest.mark.parametrize("seed", range(10))
def test_layer_health_of_all_runs_at_once_is_layer_table_run_by_run(seed):
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(int(rng.integers(1, 6))):
        params = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight"]
        params = list(rng.permutation(params))[: int(rng.integers(1, 5))]
        steps = rng.permutation(np.arange(1, int(rng.integers(2, 30))))
        rows = [
            {
                "step": s,
                "param": p,
                **{k: np.nan if rng.uniform() < 0.2 else rng.normal() for k in STATS},
            }
            for s in steps
            for p in params
        ]
        frames.append(pd.DataFrame(rows).sample(frac=1, random_state=seed))
    pd.testing.assert_frame_equal(layer_health(frames), health_run_by_run(frames), rtol=1e-12)
