"""What a hostile pass found in compare, inspect and the CLI's output checks, each
reproduced: the privacy column, one network written two ways, corrupt summary values,
tests on an infinite epsilon, the reasons given for a missing grads.csv or an output that
cannot be written."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import tiny
from scipy import stats
from typer.testing import CliRunner

from gradlab.cli import app
from gradlab.config import config_from_dict, load_config
from gradlab.study.compare import comparison
from gradlab.study.reading import figures_from_logs, load_runs
from gradlab.train import train

runner = CliRunner()
PRIVATE = {"noise_multiplier": 1.0, "max_grad_norm": 1.0}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    """Three experiments, two seeds each: plain, DP-SGD (σ 1) and clipping only (σ 0)."""
    runs = tmp_path_factory.mktemp("mixed")
    for seed in (0, 1):
        train(config_from_dict(tiny(name="plain", seed=seed)), runs)
        train(config_from_dict(tiny(name="dp", seed=seed, privacy=PRIVATE)), runs)
        zero = {**PRIVATE, "noise_multiplier": 0.0}
        train(config_from_dict(tiny(name="clip-only", seed=seed, privacy=zero)), runs)
    return runs


def invoke_json(*args: str) -> list[dict]:
    result = runner.invoke(app, ["compare", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_the_privacy_column_says_which_runs_are_private(mixed: Path):
    rows = {r["name"]: r for r in invoke_json(str(mixed), "--columns", "privacy")}
    assert rows["dp"]["privacy"] == "on" and rows["clip-only"]["privacy"] == "on"
    assert rows["plain"]["privacy"] is None
    tested = {r["name"]: r for r in invoke_json(str(mixed), "--baseline", "privacy=null")}
    assert tested["plain"]["test"] == "baseline"
    assert tested["dp"]["test"] == "paired"
    result = runner.invoke(app, ["compare", str(mixed), "--baseline", "privacy=on"])
    assert result.exit_code == 2 and "matches 2 rows" in result.stderr


def test_a_test_on_an_infinite_epsilon_is_no_test(mixed: Path):
    """σ = 0: ε is infinite. Δ is ±inf, and no t-test gives a p-value to infinity."""
    rows = {
        r["name"]: r
        for r in invoke_json(str(mixed), "--baseline", "name=dp", "--test-metric", "epsilon")
    }
    clip = rows["clip-only"]
    assert clip["epsilon"] == "inf" and clip["delta.epsilon"] == "inf"
    assert clip["test"] == "none"
    assert clip["p_value"] is None and clip["p_adjusted"] is None
    assert clip["seeds_needed"] is None and clip["delta.epsilon.ci_low"] is None
    table = runner.invoke(
        app, ["compare", str(mixed), "--baseline", "name=dp", "--test-metric", "epsilon"]
    )
    assert "test none: a value is infinite" in table.stdout
    # the finite rows are still tested, against scipy
    assert rows["plain"]["test"] is None  # no epsilon at all
    df = load_runs([mixed])
    dp = df[df["name"] == "dp"].sort_values("seed")["final_train_loss"].to_numpy()
    plain = df[df["name"] == "plain"].sort_values("seed")["final_train_loss"].to_numpy()
    loss = {
        r["name"]: r
        for r in invoke_json(
            str(mixed), "--baseline", "name=plain", "--test-metric", "final_train_loss"
        )
    }
    assert math.isclose(loss["dp"]["p_value"], stats.ttest_rel(dp, plain).pvalue, rel_tol=1e-9)


def test_one_hidden_layer_written_two_ways_is_one_experiment(tmp_path: Path):
    assert load_config_text(tmp_path, "hidden: [100]").model.hidden == 100
    assert load_config_text(tmp_path, "hidden: [100, 50]").model.hidden == [100, 50]
    runs = tmp_path / "runs"
    train(config_from_dict(tiny(name="net", model={"hidden": 16})), runs)
    train(config_from_dict(tiny(name="net", model={"hidden": [16]})), runs)
    df = load_runs([runs])
    assert df["group"].nunique() == 1 and df["duplicate_of"].notna().sum() == 1
    # a run folder written before: its config.yaml says [16]
    older = next(runs.iterdir())
    text = (older / "config.yaml").read_text()
    assert "hidden: 16\n" in text
    (older / "config.yaml").write_text(text.replace("hidden: 16\n", "hidden:\n  - 16\n"))
    assert load_runs([runs])["group"].nunique() == 1
    assert len(comparison(load_runs([runs]))) == 1


def load_config_text(folder: Path, model: str):
    path = folder / "c.yaml"
    path.write_text(f"data: {{name: mnist-sample}}\nmodel: {{{model}}}\n")
    return load_config(path)


def corrupt(run: Path, **values) -> None:
    summary = json.loads((run / "summary.json").read_text())
    summary.update(values)
    (run / "summary.json").write_text(json.dumps(summary))


def test_impossible_summary_values_are_left_empty_and_named(mixed: Path, tmp_path: Path):
    runs = tmp_path / "runs"
    shutil.copytree(mixed, runs)
    private = sorted(p for p in runs.iterdir() if p.name.startswith("dp-"))
    corrupt(private[0], epsilon=-5)
    corrupt(private[1], epsilon=True, final_test_accuracy=1.5)
    df = load_runs([runs])
    by_run = df.set_index("run")
    assert math.isnan(by_run.at[private[0].name, "epsilon"])
    assert math.isnan(by_run.at[private[1].name, "epsilon"])
    assert math.isnan(by_run.at[private[1].name, "final_test_accuracy"])
    assert sorted(df.attrs["invalid"]) == [
        f"{private[0].name} (epsilon -5)",
        f"{private[1].name} (final_test_accuracy 1.5, epsilon true)",
    ]
    result = runner.invoke(app, ["compare", str(runs), "--no-group", "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert "warning: impossible values left empty in 2 summaries: " in result.stderr
    assert "-5" not in result.stdout.split("epsilon")[0]  # never shown as a number
    rows = {r["run"]: r for r in invoke_json(str(runs), "--no-group")}
    assert rows[private[0].name]["epsilon"] is None and rows[private[1].name]["epsilon"] is None


def test_a_killed_run_counts_its_steps_as_a_whole_number(mixed: Path):
    run = next(p for p in mixed.iterdir() if p.name.startswith("plain-"))
    figures = figures_from_logs(run)
    assert figures["steps"] == 12 and isinstance(figures["steps"], int)


def test_inspect_says_why_grads_csv_is_missing(tmp_path: Path):
    on = train(config_from_dict(tiny(name="on")), tmp_path).path
    off = train(config_from_dict(tiny(name="off", diagnostics={"every": 0})), tmp_path).path
    (on / "grads.csv").unlink()
    result = runner.invoke(app, ["inspect", str(on)])
    assert result.exit_code == 2
    assert "no grads.csv (missing, although the run had diagnostics.every: 50" in result.stderr
    assert "diagnostics.every: 0" not in result.stderr
    result = runner.invoke(app, ["inspect", str(off)])
    assert "no grads.csv (the run had diagnostics.every: 0)" in result.stderr


def read_only_folder(tmp_path: Path, monkeypatch) -> Path:
    """A folder on a read-only file system: a real read-only mount where this process may
    mount one (root), else the kernel's answers for one (statvfs says ST_RDONLY, access
    refuses)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(folder)], capture_output=True
        )
        if mounted.returncode == 0:
            return folder
    real_statvfs, real_access = os.statvfs, os.access

    class ReadOnly:
        def __init__(self, info):
            self._info = info
            self.f_flag = info.f_flag | os.ST_RDONLY

    monkeypatch.setattr(
        os, "statvfs", lambda p: ReadOnly(real_statvfs(p)) if Path(p) == folder else real_statvfs(p)
    )
    monkeypatch.setattr(
        os,
        "access",
        lambda p, mode, **kw: False if Path(p) == folder else real_access(p, mode, **kw),
    )
    return folder


def test_an_output_on_a_read_only_file_system_says_so(mixed: Path, tmp_path: Path, monkeypatch):
    folder = read_only_folder(tmp_path, monkeypatch)
    try:
        for args in (["-o", str(folder / "t.txt")], ["--plot", str(folder / "p.png")]):
            result = runner.invoke(app, ["compare", str(mixed), *args])
            assert result.exit_code == 2, result.output
            assert f"{folder}/" in result.stderr and "cannot write (a read-only file system)" in (
                result.stderr
            )
        result = runner.invoke(app, ["report", str(mixed), "-o", str(folder / "r.html")])
        assert "cannot write (a read-only file system)" in result.stderr
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_a_long_name_is_refused_with_its_length(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text("data: {name: mnist-sample}\n")
    result = runner.invoke(app, ["validate", str(config), "--set", "name=" + "a" * 101])
    assert result.exit_code == 2
    assert "name: 101 characters:" in result.stderr and "at most 100 characters" in result.stderr
