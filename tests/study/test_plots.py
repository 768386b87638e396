"""Study figures: every format written and read back, legends that name what differs,
log-space bands against numpy, panels on runs that logged only the loss, stable colours, and
nothing clipped."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from gradlab.config import config_from_dict
from gradlab.errors import CompareError
from gradlab.runlog import RunWriter
from gradlab.study.bands import smoothing_window
from gradlab.study.compare import comparison
from gradlab.study.figures import FORMATS, check_plot_path, save_figure
from gradlab.study.inspection import plot_layers
from gradlab.study.labels import row_colors, row_labels
from gradlab.study.plots import DEFAULT_PANELS, PANELS, check_panels, plot_comparison
from gradlab.study.reading import load_steps

CPU = {"device": "cpu", "amp": {"dtype": "off", "grad_scaler": False}, "engine": "analytic"}
FULL = ["step", "epoch", "lr", "loss", "accuracy", "grad_norm", "grad_norm_after", "elapsed_s"]
LRS = (0.01, 0.1, 0.5, 2.0)


def write_run(
    root: Path, name: str, seed: int, steps: dict, *, config: dict | None = None, edits="none"
) -> Path:
    """A completed run folder written by gradlab's run writer, with the given step columns
    (``step`` and ``elapsed_s`` are added) and five evaluations."""
    raw = {"name": name, "seed": seed, "data": {"name": "mnist-sample"}, **(config or {})}
    n = len(next(iter(steps.values())))
    columns = {"step": np.arange(1, n + 1), **steps, "elapsed_s": np.linspace(0.01, 1, n)}
    meta = {**CPU, "edits": edits, "started": "2026-11-26T10:00:00+00:00"}
    run = RunWriter.create(root, name, config_from_dict(raw).to_yaml(), meta, list(columns))
    run.steps.append(np.column_stack(list(columns.values())).tolist())
    run.evals.append(
        [[s, 1, 2.0 - s / n, 0.5 + 0.04 * seed + s / (4 * n), 0.1] for s in (4, 8, 12)]
    )
    run.write_summary(
        {"status": "completed", "steps": n, "final_test_accuracy": 0.6, "final_train_loss": 1.0}
    )
    run.close()
    return run.path


def full_steps(rng: np.random.Generator, n: int, lr: float, spread: float = 0.3) -> dict:
    norm = np.exp(rng.normal(0.0, spread, n))
    return {
        "epoch": np.ones(n),
        "lr": np.full(n, lr),
        "loss": 2.3 - np.linspace(0, 1, n) + rng.normal(0, 0.05, n),
        "accuracy": np.linspace(0.1, 0.6, n),
        "grad_norm": norm,
        "grad_norm_after": norm / 2,
    }


@pytest.fixture(scope="module")
def lr_grid(tmp_path_factory) -> Path:
    """Four learning rates x two seeds, every run named ``baseline`` (20 steps each)."""
    root = tmp_path_factory.mktemp("lr-grid")
    rng = np.random.default_rng(0)
    for lr in LRS:
        for seed in (0, 1):
            write_run(root, "baseline", seed, full_steps(rng, 20, lr), config={"optim": {"lr": lr}})
    return root


@pytest.fixture(scope="module")
def spread(tmp_path_factory) -> Path:
    """Three seeds of gradient norms spread over decades (linear std above the mean), 200
    steps so that the moving average spans several steps."""
    root = tmp_path_factory.mktemp("spread")
    rng = np.random.default_rng(1)
    for seed in range(3):
        write_run(root, "spread", seed, full_steps(rng, 200, 0.1, spread=2.0))
    return root


@pytest.fixture(scope="module")
def loss_only(tmp_path_factory) -> Path:
    """Real tiny runs with ``train.log: loss``: clipped (two seeds) and plain."""
    from conftest import tiny

    from gradlab.train import train

    root = tmp_path_factory.mktemp("loss-only")
    clip = [{"type": "clip_norm", "max_norm": 0.1}]
    for seed in (0, 1):
        train(
            config_from_dict(tiny(name="clipped", seed=seed, edit=clip, train={"log": "loss"})),
            root,
        )
    train(config_from_dict(tiny(name="plain", train={"log": "loss"})), root)
    return root


def panel_axes(fig: Figure) -> dict:
    return {ax.get_label(): ax for ax in fig.axes}


def legend_texts(fig: Figure) -> list[str]:
    (legend,) = fig.legends
    return [t.get_text() for t in legend.get_texts()]


# --------------------------------------------------------------------------- formats, errors


def test_every_format_is_written_whole_and_opens(lr_grid: Path, tmp_path: Path):
    from matplotlib.image import imread

    table = comparison([lr_grid])
    for suffix in FORMATS:
        out = tmp_path / f"study{suffix}"
        panels = DEFAULT_PANELS if suffix == ".png" else ["grad_norm"]  # one full picture
        assert plot_comparison(table, out, panels=panels) == out
    image = imread(tmp_path / "study.png")
    assert image.shape[0] > 300 and image.shape[1] > 800 and image[..., :3].std() > 0.05
    assert (tmp_path / "study.pdf").read_bytes().startswith(b"%PDF")
    assert ET.parse(tmp_path / "study.svg").getroot().tag == "{http://www.w3.org/2000/svg}svg"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.pdf", "study.png", "study.svg"]


def test_a_failed_write_leaves_nothing(lr_grid: Path, tmp_path: Path):
    blocked = tmp_path / "taken.png"
    blocked.mkdir()
    with pytest.raises(OSError):
        plot_comparison(comparison([lr_grid]), blocked, panels=["lr"])
    assert blocked.is_dir() and [p.name for p in tmp_path.iterdir()] == ["taken.png"]


def test_bad_choices_are_one_clear_line(lr_grid: Path, tmp_path: Path):
    with pytest.raises(CompareError) as bad:
        check_panels("train_loss,foo")
    # the library's words for its argument; the CLI says --panels (worded by option)
    assert str(bad.value) == f"panels foo: unknown panel; choose from {', '.join(PANELS)}"
    assert bad.value.worded(lambda a: f"--{a}").startswith("--panels foo: unknown panel")
    with pytest.raises(CompareError, match="choose at least one of train_loss, "):
        check_panels([])
    with pytest.raises(CompareError) as bad:
        check_plot_path("x.jpg")
    assert str(bad.value) == "x.jpg: unsupported format; use .png, .pdf or .svg"
    assert bad.value.worded({"path": "--plot"}.get) == (
        "--plot x.jpg: unsupported format; use .png, .pdf or .svg"
    )
    with pytest.raises(CompareError, match="^study: unsupported format"):
        check_plot_path("study")
    assert check_plot_path("a/b.SVG") == Path("a/b.SVG")
    assert check_panels(None) == list(DEFAULT_PANELS)
    assert check_panels(" lr, lr ,grad_norm") == ["lr", "grad_norm"]
    table = comparison([lr_grid])
    with pytest.raises(CompareError, match="unsupported format"):
        plot_comparison(table, tmp_path / "out.jpg")
    with pytest.raises(CompareError, match="^panels nope: unknown panel"):
        plot_comparison(table, tmp_path / "out.png", panels=["nope"])
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- labels, colours


def test_legend_of_an_lr_grid_names_the_learning_rates(lr_grid: Path):
    """Every run is named ``baseline``: the names repeat, so the legend says what differs."""
    table = comparison([lr_grid])
    assert set(table["name"]) == {"baseline"}
    expected = [f"lr={row['optim.lr']:g} (n=2)" for row in table.to_dict("records")]
    assert row_labels(table) == expected
    fig = plot_comparison(table)
    assert legend_texts(fig) == expected and len(set(expected)) == len(LRS)


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (  # the config that differs, then the edits label; the names add nothing
            {
                "name": ["base", "clip", "clip"],
                "edits": ["none", "clip_norm(0.25)", "clip_norm(0.25)"],
                "model.hidden": [128, 128, 16],
                "optim.momentum": [0.9, 0.9, 0.9],
            },
            ["hidden=128, no edits", "hidden=128, clip_norm(0.25)", "hidden=16, clip_norm(0.25)"],
        ),
        (  # names that repeat and equal parts: the names tell the rows apart
            {"name": ["a", "b", "b"], "optim.lr": [0.1, 0.1, 0.5]},
            ["a: lr=0.1", "b: lr=0.1", "b: lr=0.5"],
        ),
        (  # names that repeat: what differs, the names left out
            {"name": ["baseline"] * 3, "optim.lr": [0.1, 0.5, 2.0]},
            ["lr=0.1", "lr=0.5", "lr=2"],
        ),
        (  # distinct names: the names as they are, whatever differs
            {
                "name": ["clip-max_norm=0.25", "sgd", "sgd-lr=2"],
                "edits": ["clip_norm(0.25)", "none", "none"],
                "optim.lr": [0.1, 0.1, 2.0],
            },
            ["clip-max_norm=0.25", "sgd", "sgd-lr=2"],
        ),
        (  # distinct names of a grouped table: the names and the number of seeds
            {"name": ["a", "b"], "n": [3, 2], "optim.lr": [0.1, 0.5]},
            ["a (n=3)", "b (n=2)"],
        ),
        (  # a missing name aside: the others are distinct, the unnamed row says what differs
            {"name": ["a", None, "b"], "optim.lr": [0.1, 0.5, 2.0]},
            ["a", "lr=0.5", "b"],
        ),
        (  # no names: what differs
            {"optim.lr": [0.1, 0.5]},
            ["lr=0.1", "lr=0.5"],
        ),
        (  # only settings outside the experiment differ: the names
            {"name": ["adam", "sgd"], "train.log": ["loss", "full"], "data.root": ["x", "y"]},
            ["adam", "sgd"],
        ),
        (  # nothing differs: the seeds
            {"name": ["x", "x"], "seed": [0, 1], "optim.lr": [0.1, 0.1]},
            ["x, seed=0", "x, seed=1"],
        ),
        (  # one run per seed: names that say nothing more are left out, the seeds added
            {
                "name": ["b", "b", "c", "c"],
                "seed": [0, 1, 0, 1],
                "edits": ["none"] * 2 + ["sign"] * 2,
            },
            ["no edits, seed=0", "no edits, seed=1", "sign, seed=0", "sign, seed=1"],
        ),
        (  # two keys that end alike keep their whole name
            {"name": ["r", "r"], "optim.init": [1e-3, 1.0], "model.init": ["normal", "zeros"]},
            ["optim.init=0.001, model.init=normal", "optim.init=1, model.init=zeros"],
        ),
        ({"name": ["solo"], "n": [3], "optim.lr": [0.1]}, ["solo (n=3)"]),
    ],
)
def test_labels_name_what_differs(columns: dict, expected: list[str]):
    assert row_labels(pd.DataFrame(columns)) == expected


def test_colours_follow_the_row_not_the_sort_order(lr_grid: Path):
    up = comparison([lr_grid], sort_by="optim.lr", ascending=True)
    down = comparison([lr_grid], sort_by="optim.lr", ascending=False)
    assert list(up["optim.lr"]) == sorted(LRS) and list(down["optim.lr"]) == sorted(LRS)[::-1]
    colours = dict(zip(row_labels(up), row_colors(up), strict=True))
    assert colours == dict(zip(row_labels(down), row_colors(down), strict=True))
    assert len(set(colours.values())) == len(LRS)
    for table in (up, down):  # every panel draws a row in its colour
        fig = plot_comparison(table, panels=list(PANELS))
        for ax in fig.axes:
            for line in ax.get_lines():
                if line.get_label() in colours:
                    assert line.get_color() == colours[line.get_label()]
        assert (
            sum(line.get_label() in colours for ax in fig.axes for line in ax.get_lines()) == 6 * 4
        )


# --------------------------------------------------------------------------- the bands


def row_values(paths: list, column: str, window: int) -> np.ndarray:
    """Seeds x steps of ``column``, each run smoothed by a trailing mean over ``window``."""
    out = []
    for path in paths:
        x = load_steps(path)[column].to_numpy(float)
        out.append([x[max(0, i - window + 1) : i + 1].mean() for i in range(len(x))])
    return np.array(out)


def drawn(ax, label: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A row's line (x, y) and its band's lower and upper edge at each x."""
    (line,) = [line for line in ax.get_lines() if line.get_label() == label]
    (band,) = [c for c in ax.collections if c.get_label() == f"_band {label}"]
    vertices = np.concatenate([p.vertices for p in band.get_paths()])
    x = np.asarray(line.get_xdata(), float)
    low = np.array([vertices[vertices[:, 0] == s, 1].min() for s in x])
    high = np.array([vertices[vertices[:, 0] == s, 1].max() for s in x])
    return x, np.asarray(line.get_ydata(), float), low, high


def test_log_bands_are_geometric_and_positive(spread: Path):
    table = comparison([spread])
    (label,) = row_labels(table)
    fig = plot_comparison(table, panels=["grad_norm", "train_loss"])
    window = smoothing_window(200)
    assert window == 4
    values = row_values(table.attrs["paths"][0], "grad_norm", window)
    assert (values.std(axis=0, ddof=1) > values.mean(axis=0)).sum() > 20  # linear band < 0
    logs = np.log(values)
    mean, std = logs.mean(axis=0), logs.std(axis=0, ddof=1)
    ax = panel_axes(fig)["grad_norm"]
    x, y, low, high = drawn(ax, label)
    assert ax.get_yscale() == "log"
    assert np.array_equal(x, np.arange(1, 201))
    np.testing.assert_allclose(y, np.exp(mean), rtol=1e-9)
    np.testing.assert_allclose(low, np.exp(mean - std), rtol=1e-9)
    np.testing.assert_allclose(high, np.exp(mean + std), rtol=1e-9)
    assert (low > 0).all()
    loss = row_values(table.attrs["paths"][0], "loss", window)  # linear: mean +- std
    ax = panel_axes(fig)["train_loss"]
    _, y, low, high = drawn(ax, label)
    assert ax.get_yscale() == "linear"
    np.testing.assert_allclose(y, loss.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(high - low, 2 * loss.std(axis=0, ddof=1), rtol=1e-9)
    assert "moving average over 4 steps" in ax.get_title()


# --------------------------------------------------------------------------- panels, layout


def test_every_panel_renders_on_runs_that_logged_only_the_loss(loss_only: Path, tmp_path: Path):
    table = comparison([loss_only])
    fig = plot_comparison(table, panels=list(PANELS))
    axes = panel_axes(fig)
    assert list(axes) == list(PANELS)
    for name in ("grad_norm", "grad_norm_after"):
        assert axes[name].get_lines() == []
        assert any("no data" in t.get_text() for t in axes[name].texts)
    for name in ("train_loss", "test_loss", "test_accuracy", "lr"):
        assert len(axes[name].get_lines()) == 2, name
    # edit statistics: only the clipped row, one line per logged statistic, the flag on its
    # own linear axis and the norm and scale on a log one
    labels = dict(zip(table["name"], row_labels(table), strict=True))
    stats = {line.get_label() for line in axes["edit_stats"].get_lines()}
    assert stats == {f"{labels['clipped']}: changed"}
    assert axes["edit_stats"].get_yscale() == "linear"
    stats = {line.get_label() for line in axes["edit_norms"].get_lines()}
    assert stats == {f"{labels['clipped']}: {s}" for s in ("norm", "scale")}
    assert axes["edit_norms"].get_yscale() == "log"
    accuracy = axes["test_accuracy"].get_lines()[0]
    assert accuracy.get_marker() == "o" and axes["train_loss"].get_lines()[0].get_marker() == "None"
    save_figure(fig, tmp_path / "all.svg")
    assert ET.parse(tmp_path / "all.svg").getroot().tag.endswith("svg")


def test_full_runs_draw_every_panel_and_edit_stats_says_when_none(lr_grid: Path):
    axes = panel_axes(plot_comparison(comparison([lr_grid]), panels=list(PANELS)))
    for name, ax in axes.items():
        if name in ("edit_stats", "edit_norms"):
            assert [t.get_text() for t in ax.texts] == ["no data\n(no row has edits)"]
        elif name in DP_PANELS or name in PROBE_PANELS:  # no run is private or probed
            assert [t.get_text().split("\n")[0] for t in ax.texts] == ["no data"], name
            assert not ax.get_lines()
        else:
            assert len(ax.get_lines()) == len(LRS), name
    assert axes["lr"].get_yscale() == "log"


DP_PANELS = ("accuracy_vs_epsilon", "dp_clipped_frac", "dp_norm_median")
PROBE_PANELS = ("noise_scale", "diversity")


def test_accuracy_against_epsilon(tmp_path: Path):
    """Private rows are drawn against evals.csv's epsilon (the mean over seeds at each
    point), a row without privacy as a dotted level at its mean final accuracy."""
    from conftest import tiny

    from gradlab.train import train

    private = {"noise_multiplier": 1.0, "max_grad_norm": 1.0}
    for seed in (0, 1):
        train(config_from_dict(tiny(name="dp", seed=seed, privacy=private)), tmp_path)
        train(config_from_dict(tiny(name="plain", seed=seed)), tmp_path)
    table = comparison([tmp_path], sort_by="name")
    axes = panel_axes(plot_comparison(table, panels=list(DP_PANELS)))
    labels = dict(zip(table["name"], row_labels(table), strict=True))
    lines = {line.get_label(): line for line in axes["accuracy_vs_epsilon"].get_lines()}
    evals = [pd.read_csv(p / "evals.csv") for p in sorted(tmp_path.glob("dp-*"))]
    assert len(evals) == 2 and list(evals[0]["epsilon"]) == list(evals[1]["epsilon"])
    x, y = lines[labels["dp"]].get_data()
    assert np.allclose(x, evals[0]["epsilon"])
    assert np.allclose(y, (evals[0]["test_accuracy"] + evals[1]["test_accuracy"]) / 2)
    finals = [
        pd.read_csv(p / "evals.csv")["test_accuracy"].iloc[-1] for p in tmp_path.glob("plain-*")
    ]
    level = lines[labels["plain"]]
    assert level.get_linestyle() == ":" and np.allclose(level.get_ydata(), np.mean(finals))
    for name in ("dp_clipped_frac", "dp_norm_median"):  # only the private row has the columns
        assert [line.get_label() for line in axes[name].get_lines()] == [labels["dp"]]


LONG = [f"{'a very long experiment name ' * 2}{i}: lr={lr:g}" for i, lr in enumerate(LRS)]


@pytest.mark.parametrize(
    ("panels", "labels"), [(list(PANELS), None), (["grad_norm"], LONG), (DEFAULT_PANELS, LONG)]
)
def test_nothing_is_clipped(lr_grid: Path, panels, labels):
    fig = plot_comparison(comparison([lr_grid]), panels=panels, labels=labels)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    extents = [ax.title.get_window_extent(renderer) for ax in fig.axes]
    extents += [ax.get_tightbbox(renderer) for ax in fig.axes]  # tick labels, axis labels
    extents += [legend.get_window_extent(renderer) for legend in fig.legends]
    for e in extents:
        assert e.x0 >= box.x0 - 0.5 and e.y0 >= box.y0 - 0.5, (panels, e, box)
        assert e.x1 <= box.x1 + 0.5 and e.y1 <= box.y1 + 0.5, (panels, e, box)
    assert legend_texts(fig) == (labels or row_labels(comparison([lr_grid])))
    rows = -(-len(panels) // 3)  # up to three panels a row
    assert len({round(ax.get_position().y0, 3) for ax in fig.axes}) == rows


def test_a_notebook_gets_the_figure_and_can_change_it(lr_grid: Path, tmp_path: Path):
    fig = plot_comparison(comparison([lr_grid]), panels="train_loss,grad_norm")
    assert isinstance(fig, Figure) and list(panel_axes(fig)) == ["train_loss", "grad_norm"]
    panel_axes(fig)["grad_norm"].set_title("changed")
    out = save_figure(fig, tmp_path / "changed.pdf")
    assert out.read_bytes().startswith(b"%PDF")


def test_layer_plot_returns_a_figure_or_writes_any_format(tmp_path: Path):
    steps = np.arange(1, 6)
    grads = pd.DataFrame(
        {
            "step": np.tile(steps, 2),
            "param": ["fc1.weight"] * 5 + ["fc2.weight"] * 5,
            "norm": np.linspace(0.1, 1, 10),
            "update_ratio": np.linspace(1e-4, 1e-2, 10),
        }
    )
    fig = plot_layers(grads)
    assert isinstance(fig, Figure) and [len(ax.get_lines()) for ax in fig.axes] == [2, 2]
    out = plot_layers(grads, tmp_path / "layers.svg", title="run")  # not only PNG any more
    assert out == tmp_path / "layers.svg" and ET.parse(out).getroot().tag.endswith("svg")
    with pytest.raises(CompareError, match="unsupported format"):
        plot_layers(grads, tmp_path / "layers.gif")


# --------------------------------------------------------------------------- edit statistics

CHAIN = {  # a row with five edits: nine fractions and flags, four norms and ratios
    "clip_value": ("clipped_frac",),
    "mask": ("kept_frac",),
    "agc": ("clipped_frac",),
    "topk": ("kept_frac", "norm_ratio"),
    "noise": ("norm",),
}


@pytest.fixture(scope="module")
def edited(tmp_path_factory) -> Path:
    """Two rows of two seeds: ``clip`` (one edit: norm, scale, changed) and ``chain`` (the
    five edits of :data:`CHAIN`, each with its ``changed``)."""
    root = tmp_path_factory.mktemp("edited")
    rng = np.random.default_rng(2)
    n = 60
    for seed in (0, 1):
        clip = {
            "edit0.clip_norm.norm": np.exp(rng.normal(2.5, 0.3, n)),  # ~12: not on a 0-1 axis
            "edit0.clip_norm.scale": rng.uniform(0.05, 0.2, n),
            "edit0.clip_norm.changed": np.ones(n),
        }
        write_run(root, "clip", seed, {**full_steps(rng, n, 0.1), **clip}, edits="clip_norm")
        chain = {}
        for i, (kind, stats) in enumerate(CHAIN.items()):
            for stat in stats:
                high = 1.0 if stat.endswith("_frac") else 3.0
                chain[f"edit{i}.{kind}.{stat}"] = rng.uniform(0.01, high, n)
            chain[f"edit{i}.{kind}.changed"] = (rng.uniform(0, 1, n) < 0.5).astype(float)
        steps = {**full_steps(rng, n, 0.1), **chain}
        write_run(root, "chain", seed, steps, config={"model": {"hidden": 32}}, edits="chain")
    return root


def line_style(line) -> tuple:
    """What tells one line's look from another's, colour apart (``get_linestyle`` reads
    ``--`` for every dash pattern)."""
    return line.get_linestyle(), line._unscaled_dash_pattern, line.get_marker()


def statistic_lines(ax) -> dict[str, list]:
    """The axes' lines by statistic (the label after the row's)."""
    out: dict[str, list] = {}
    for line in ax.get_lines():
        out.setdefault(line.get_label().rsplit(": ", 1)[1], []).append(line)
    return out


def test_edit_statistics_are_split_into_fractions_and_norms(edited: Path):
    table = comparison([edited])
    axes = panel_axes(plot_comparison(table, panels=["edit_stats", "edit_norms"]))
    fractions, norms = axes["edit_stats"], axes["edit_norms"]
    assert set(statistic_lines(fractions)) == {
        "0:changed", "0:clipped_frac", "1:changed", "1:kept_frac", "2:changed",
        "2:clipped_frac", "3:changed", "3:kept_frac", "4:changed",
    }  # fmt: skip
    assert fractions.get_yscale() == "linear"
    low, high = fractions.get_ylim()
    assert -0.1 < low <= 0 and 1 <= high < 1.1  # a 0-1 axis: the norms of ~12 are elsewhere
    for line in fractions.get_lines():
        assert 0 <= np.nanmin(line.get_ydata()) and np.nanmax(line.get_ydata()) <= 1
    assert set(statistic_lines(norms)) == {"0:norm", "0:scale", "3:norm_ratio", "4:norm"}
    assert norms.get_yscale() == "log"


@pytest.mark.parametrize("panel", ["edit_stats", "edit_norms"])
def test_every_edit_statistic_has_its_own_style_named_in_a_legend_beside_the_data(
    edited: Path, panel: str
):
    table = comparison([edited])
    fig = plot_comparison(table, panels=["train_loss", "edit_stats", "edit_norms"])
    ax = panel_axes(fig)[panel]
    by_stat = statistic_lines(ax)
    styles = {stat: {line_style(line) for line in lines} for stat, lines in by_stat.items()}
    assert all(len(s) == 1 for s in styles.values()), styles  # one style per statistic
    assert len({s for (s,) in styles.values()}) == len(styles)  # and no two alike
    legend = ax.get_legend()
    texts = [t.get_text() for t in legend.get_texts()]
    assert sorted(texts) == sorted(by_stat)
    for text, handle in zip(texts, legend.legend_handles, strict=True):
        assert line_style(handle) == next(iter(styles[text]))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = legend.get_window_extent(renderer)
    for other in fig.axes:  # over no data area, its own or another panel's
        assert not box.overlaps(other.get_window_extent(renderer)), (panel, other.get_label())
    assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 + 0.5  # and not cut off
    assert fig.bbox.y0 <= box.y0 and box.y1 <= fig.bbox.y1 + 0.5


def test_edit_statistics_are_named_alike_for_every_edit(edited: Path, loss_only: Path):
    """``<i>:<stat>`` for every edit when a row has several (never ``changed`` for the
    first edit and ``edit1.changed`` for the second); the plain name when none has."""
    fig = plot_comparison(comparison([edited]), panels=["edit_stats", "edit_norms"])
    for ax in fig.axes:
        texts = [t.get_text() for t in ax.get_legend().get_texts()]
        assert ax.get_legend().get_title().get_text() == "edit:statistic"
        assert all(re.fullmatch(r"\d:[a-z_]+", t) for t in texts), texts
    texts = [t.get_text() for t in panel_axes(fig)["edit_stats"].get_legend().get_texts()]
    assert texts[:4] == ["0:changed", "0:clipped_frac", "1:changed", "1:kept_frac"]
    fig = plot_comparison(comparison([loss_only]), panels=["edit_stats", "edit_norms"])
    axes = panel_axes(fig)
    assert [t.get_text() for t in axes["edit_stats"].get_legend().get_texts()] == ["changed"]
    assert [t.get_text() for t in axes["edit_norms"].get_legend().get_texts()] == [
        "norm",
        "scale",
    ]
    assert axes["edit_norms"].get_legend().get_title().get_text() == "statistic"
