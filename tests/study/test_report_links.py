"""The study report reads only regular files inside each run folder: a file that is a
symlink out of its run folder (a config.yaml linked to a YAML file elsewhere) or that is not
a regular file is left out of the page, and the page says which; a link inside the folder,
and a run folder reached through a link, are read as usual."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny

from gradlab.config import config_from_dict
from gradlab.report import build_report
from gradlab.report.files import NOT_REGULAR, OUTSIDE, refused_files
from gradlab.study.compare import comparison
from gradlab.study.plots import plot_comparison
from gradlab.train import train

SECRET = "SECRET-OUTSIDE-THE-RUN-FOLDER"


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict[str, Path]:
    """Four one-seed groups (lr differs): ``linked`` (config.yaml, meta.json, grads.csv and
    steps.csv are symlinks to files outside its folder, each holding SECRET), ``fifo``
    (alerts.csv is a FIFO, config.yaml a symlink to a copy inside the folder), ``plain``,
    and ``via-link`` (its run folder is reached through a symlink)."""
    top = tmp_path_factory.mktemp("links")
    runs, elsewhere = top / "runs", top / "elsewhere"
    elsewhere.mkdir()
    found = {}
    for name, lr in (("linked", 0.1), ("fifo", 0.2), ("plain", 0.3), ("via-link", 0.4)):
        diagnostics = {"every": 4}
        config = tiny(name=name, optim={"lr": lr}, diagnostics=diagnostics)
        found[name] = train(config_from_dict(config), runs if name != "via-link" else top).path
    linked = found["linked"]
    for file in ("config.yaml", "meta.json", "grads.csv", "steps.csv"):
        target = elsewhere / file
        text = (linked / file).read_text()
        marker = f"# {SECRET}\n" if file == "config.yaml" else ""
        if file == "meta.json":
            text = text.replace('"command":', f'"secret": "{SECRET}", "command":', 1)
        elif file.endswith(".csv"):
            lines = text.splitlines(keepends=True)
            text = lines[0] + "".join(lines[1:])  # the same numbers: the secret is the file
        target.write_text(marker + text)
        (linked / file).unlink()
        (linked / file).symlink_to(target)
    fifo = found["fifo"]
    (fifo / "alerts.csv").unlink()
    os.mkfifo(fifo / "alerts.csv")
    shutil.copy(fifo / "config.yaml", fifo / "config-copy.yaml")
    (fifo / "config.yaml").unlink()
    (fifo / "config.yaml").symlink_to("config-copy.yaml")  # inside the folder: read
    via = runs / "via-link"
    via.symlink_to(found["via-link"], target_is_directory=True)
    found["via-link"] = via
    found["runs"] = runs
    return found


def test_files_out_of_the_run_folder_or_not_regular_are_refused(study):
    assert refused_files(study["linked"]) == {
        "config.yaml": OUTSIDE, "meta.json": OUTSIDE, "grads.csv": OUTSIDE, "steps.csv": OUTSIDE,
    }  # fmt: skip
    assert refused_files(study["fifo"]) == {"alerts.csv": NOT_REGULAR}
    assert refused_files(study["plain"]) == {}
    assert refused_files(study["via-link"]) == {}  # the folder is a link; its files are in it


def test_the_report_leaves_them_out_and_says_so(study):
    table = comparison([study["runs"]], sort_by="optim.lr", ascending=True)
    assert list(table["name"]) == ["linked", "fifo", "plain", "via-link"]
    page = build_report(table)
    assert SECRET not in page  # the config.yaml, meta.json shown nowhere
    name = study["linked"].name
    for file in ("config.yaml", "meta.json", "grads.csv", "steps.csv"):
        assert (
            f"{file} of {name}: a symlink out of the run folder; not read into this report" in page
        )
    assert "alerts.csv of " + study["fifo"].name + ": not a regular file" in page
    assert "5 files of the run folders not read into this report" in page
    assert "no config.yaml shown" in page  # the linked group's only run
    assert page.count("config.yaml of <code>") == 3  # fifo's (a link inside), plain's, via-link's
    assert "hidden: 16" in page
    assert page.count("per parameter, mean over 1 run;") == 3  # all but the linked group


def test_the_plot_reads_no_log_out_of_its_run_folder(study):
    table = comparison([study["runs"]], sort_by="optim.lr", ascending=True)
    label = "linked"
    inside = plot_comparison(table, panels=["train_loss"], contained=True)
    follows = plot_comparison(table, panels=["train_loss"])
    drawn = {
        ax: [line.get_label() for line in ax.get_lines()]
        for ax in (inside.axes[0], follows.axes[0])
    }
    assert not any(label in lab for lab in drawn[inside.axes[0]])
    assert any(label in lab for lab in drawn[follows.axes[0]])  # compare --plot follows links
    assert len(drawn[inside.axes[0]]) == 3
    assert np.isfinite([line.get_ydata() for line in inside.axes[0].get_lines()][0]).all()
