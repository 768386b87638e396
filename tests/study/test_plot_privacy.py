"""Which rows the plots draw as private (DP-SGD) comes from the runs' config, never from
whether an epsilon could be read: private runs whose epsilon is corrupt or missing (in
summary.json or evals.csv) are drawn as private with epsilon unknown, not as the dotted
reference of a run without privacy; the report says so too."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tiny

from gradlab.config import config_from_dict
from gradlab.report import build_report
from gradlab.study.compare import comparison
from gradlab.study.labels import row_labels
from gradlab.study.plots import plot_comparison, private_rows
from gradlab.train import train

PRIVATE = {"noise_multiplier": 1.0, "max_grad_norm": 1.0}
CORRUPT = {"minus": -5, "true": True, "missing": None}  # summary.json's epsilon
LR = {"minus": 0.11, "true": 0.12, "missing": 0.13}  # each its own experiment


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """Two seeds each of: ``dp`` (σ 1, intact), ``minus`` / ``true`` / ``missing`` (σ 1,
    summary.json's epsilon -5, true or gone, evals.csv's epsilon -5, true or gone),
    ``noise-free`` (σ 0: epsilon infinite) and ``plain`` (no privacy section)."""
    runs = tmp_path_factory.mktemp("private")
    for seed in (0, 1):
        train(config_from_dict(tiny(name="dp", seed=seed, privacy=PRIVATE)), runs)
        train(config_from_dict(tiny(name="plain", seed=seed)), runs)
        zero = {**PRIVATE, "noise_multiplier": 0.0}
        train(config_from_dict(tiny(name="noise-free", seed=seed, privacy=zero)), runs)
        for name, value in CORRUPT.items():
            config = tiny(name=name, seed=seed, privacy=PRIVATE, optim={"lr": LR[name]})
            path = train(config_from_dict(config), runs).path
            summary = json.loads((path / "summary.json").read_text())
            if value is None:
                del summary["epsilon"]
            else:
                summary["epsilon"] = value
            (path / "summary.json").write_text(json.dumps(summary))
            evals = pd.read_csv(path / "evals.csv")
            if value is None:
                evals = evals.drop(columns="epsilon")
            else:
                evals["epsilon"] = "true" if value is True else value
            evals.to_csv(path / "evals.csv", index=False)
    return runs


@pytest.fixture(scope="module")
def table(study: Path) -> pd.DataFrame:
    return comparison([study], sort_by="name")


def level_lines(ax) -> dict[str, str]:
    """The axes' horizontal lines: label -> line style."""
    return {
        line.get_label(): line.get_linestyle()
        for line in ax.get_lines()
        if len(set(np.asarray(line.get_ydata(), float))) == 1 and len(line.get_xdata()) == 2
    }


def test_privacy_comes_from_the_config(table: pd.DataFrame):
    private = dict(zip(table["name"], private_rows(table), strict=True))
    assert private == {
        "dp": True, "minus": True, "true": True, "missing": True, "noise-free": True,
        "plain": False,
    }  # fmt: skip
    # a table without any privacy column (chosen columns) asks the runs' config.yaml
    narrow = comparison([table.attrs["paths"][0][0]], columns=["final_test_accuracy"])
    assert "privacy" not in narrow.columns and not any(c.startswith("privacy.") for c in narrow)
    assert private_rows(narrow) == [private[narrow["name"][0]]]


def test_private_rows_with_an_unreadable_epsilon_are_drawn_as_private(table: pd.DataFrame):
    fig = plot_comparison(table)  # the default panels: private rows add the epsilon panel
    axes = {ax.get_label(): ax for ax in fig.axes}
    assert "accuracy_vs_epsilon" in axes
    ax = axes["accuracy_vs_epsilon"]
    labels = dict(zip(table["name"], row_labels(table), strict=True))
    levels = level_lines(ax)
    for name in CORRUPT:  # private, epsilon unknown: dash-dotted, never dotted
        assert levels[labels[name]] == "-.", name
    assert levels[labels["plain"]] == ":"  # the reference: no privacy
    assert levels[labels["noise-free"]] == "--"  # private without noise: epsilon infinite
    assert labels["dp"] not in levels  # drawn against the epsilon it spent
    (curve,) = [line for line in ax.get_lines() if line.get_label() == labels["dp"]]
    dp = table.attrs["paths"][list(table["name"]).index("dp")]
    evals = [pd.read_csv(Path(p) / "evals.csv") for p in dp]
    np.testing.assert_allclose(curve.get_xdata(), evals[0]["epsilon"])
    np.testing.assert_allclose(
        curve.get_ydata(), (evals[0]["test_accuracy"] + evals[1]["test_accuracy"]) / 2
    )
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["no privacy", "DP-SGD, epsilon unknown", "DP-SGD, no noise (epsilon = inf)"]
    for name in CORRUPT:  # at the mean final accuracy of its runs, as a reference line is
        paths = table.attrs["paths"][list(table["name"]).index(name)]
        finals = [pd.read_csv(Path(p) / "evals.csv")["test_accuracy"].iloc[-1] for p in paths]
        (line,) = [line for line in ax.get_lines() if line.get_label() == labels[name]]
        assert np.allclose(line.get_ydata(), np.mean(finals))


def test_a_study_whose_every_epsilon_is_unreadable_still_gets_its_epsilon_panel(
    study: Path, table: pd.DataFrame
):
    broken = [
        Path(p) for name in CORRUPT for p in table.attrs["paths"][list(table["name"]).index(name)]
    ]
    only = comparison(broken, sort_by="name")
    axes = {ax.get_label(): ax for ax in plot_comparison(only).axes}
    levels = level_lines(axes["accuracy_vs_epsilon"])
    assert sorted(levels.values()) == ["-.", "-.", "-."]


def test_the_report_says_a_private_row_has_its_epsilon_unknown(table: pd.DataFrame):
    page = build_report(table)
    assert page.count("DP-SGD, epsilon unknown") >= len(CORRUPT)
    assert "DP-SGD, epsilon inf (no noise)" in page
    assert page.count("DP-SGD") == 5  # the five private groups; plain is none of them
