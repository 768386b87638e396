"""Sweeps shaped like studies: --set and --grid on the command line, comma lists, grids and
seeds per arm, names that say what varies, their errors, and the default study's effect."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import tiny
from typer.testing import CliRunner

from gradlab.cli import app
from gradlab.errors import ConfigError
from gradlab.study.compare import comparison
from gradlab.sweeps.plan import load_sweep
from gradlab.sweeps.run import run_sweep
from gradlab.sweeps.syntax import run_name, short_keys, split_values, value_text

runner = CliRunner()
ROOT = Path(__file__).parents[2]
CLIP = [{"type": "clip_norm", "max_norm": 1.0}]


def write_sweep(folder: Path, **sweep) -> Path:
    (folder / "base.yaml").write_text(yaml.safe_dump(tiny(optim={"max_steps": 6})))
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "base": "base.yaml", **sweep}, sort_keys=False))
    return path


def names(sweep) -> list[str]:
    return list(dict.fromkeys(r.name for r in sweep.runs))


def test_comma_lists_split_outside_brackets_and_quotes():
    assert split_values("0.1,0.5", "x") == [0.1, 0.5]
    assert split_values("[],[{type: clip_norm, max_norm: 1}]", "x") == [
        [],
        CLIP[:1] and [{"type": "clip_norm", "max_norm": 1}],
    ]
    assert split_values("'a,b',c", "x") == ["a,b", "c"]
    assert split_values("relu", "x") == ["relu"]
    for bad in ("", "0.1,", ",0.1", "0.1,,0.5"):
        with pytest.raises(ConfigError, match="separated by commas"):
            split_values(bad, "x")


def test_set_and_grid_on_the_command_line(tmp_path: Path):
    path = write_sweep(
        tmp_path,
        list=[{"name": "sgd", "edit": []}, {"name": "clip", "edit": CLIP}],
        grid={"optim.lr": "0.1,0.5"},  # a comma list in the file
        seeds=[0, 1],
    )
    sweep = load_sweep(path)
    assert names(sweep) == ["sgd-lr=0.1", "sgd-lr=0.5", "clip-lr=0.1", "clip-lr=0.5"]
    # --set: every run, over the entries; --grid: an axis replaced and one added
    sweep = load_sweep(
        path, sets=["optim.momentum=0.9"], grids=["optim.lr=1,2,3", "model.hidden=8,16"]
    )
    assert len(sweep.runs) == 2 * 3 * 2 * 2
    assert {r.config["optim"]["momentum"] for r in sweep.runs} == {0.9}
    assert {r.config["optim"]["lr"] for r in sweep.runs} == {1.0, 2.0, 3.0}
    assert {r.config["model"]["hidden"] for r in sweep.runs} == {8, 16}
    assert names(sweep)[:2] == ["sgd-lr=1-hidden=8", "sgd-lr=1-hidden=16"]
    with pytest.raises(ConfigError, match="--set optim.lr: grid axis optim.lr sets it too"):
        load_sweep(path, sets=["optim.lr=0.3"])


def test_an_arm_can_carry_its_own_grid_and_seeds(tmp_path: Path):
    path = write_sweep(
        tmp_path,
        list=[
            {"name": "sgd", "edit": []},
            {"name": "clip", "edit": CLIP, "grid": {"edit.0.max_norm": [0.25, 1.0, 4.0]}},
            {"name": "agc", "edit": [{"type": "agc"}], "seeds": [7]},
        ],
        seeds=[0, 1],
    )
    sweep = load_sweep(path)
    by_name = {}
    for run in sweep.runs:
        by_name.setdefault(run.name, []).append(run)
    assert list(by_name) == [
        "sgd",
        "clip-max_norm=0.25",
        "clip-max_norm=1",
        "clip-max_norm=4",
        "agc",
    ]  # the arm's grid is not applied to the baseline, whose edit list is empty
    assert [r.seed for r in by_name["sgd"]] == [0, 1] and [r.seed for r in by_name["agc"]] == [7]
    assert [r.config["edit"][0]["max_norm"] for r in sweep.runs if r.name.startswith("clip")] == [
        0.25,
        0.25,
        1.0,
        1.0,
        4.0,
        4.0,
    ]
    # the names are stable: the same file gives the same names and experiments
    again = load_sweep(path)
    assert [(r.name, r.hash, r.seed) for r in again.runs] == [
        (r.name, r.hash, r.seed) for r in sweep.runs
    ]
    result = runner.invoke(app, ["sweep", str(path), "--dry-run"])
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0].startswith(
        "# 9 runs = entries x grid points x seeds: sgd 1x2, clip 3x2, agc 1x1; 5 experiments"
    )
    assert "# varies: edit, seed" in result.stdout


def test_the_naming_rule():
    assert value_text(0.25) == "0.25" and value_text(1e-05) == "1e-05" and value_text(3) == "3"
    assert value_text([]) == "none" and value_text(True) == "true"
    assert value_text(CLIP + [{"type": "noise", "sigma": 0.01}]) == "clip_norm_1+noise_0.01"
    assert value_text("a b/c") == "a_b_c"
    assert short_keys(["optim.lr", "edit.0.max_norm", "edit.1.max_norm", "edit"]) == {
        "optim.lr": "lr",
        "edit.0.max_norm": "edit.0.max_norm",  # two keys would both read max_norm
        "edit.1.max_norm": "edit.1.max_norm",
        "edit": "edit",
    }
    assert short_keys(["model.hidden", "edit.0"]) == {"model.hidden": "hidden", "edit.0": "edit.0"}
    assert run_name("clip", {"edit.0.max_norm": 0.25}) == "clip-max_norm=0.25"
    assert run_name("baseline", {"optim.lr": 0.5}) == "baseline-lr=0.5"
    assert len(run_name("x", {"optim.lr": 0.5, "edit": [{"type": "noise"}] * 40})) == 100


def test_an_explicit_name_wins(tmp_path: Path):
    path = write_sweep(tmp_path, seeds=[0, 1])
    assert names(load_sweep(path)) == ["s"]  # one entry: the sweep's name
    assert names(load_sweep(path, sets=["name=mine"])) == ["mine"]
    path = write_sweep(tmp_path, list=[{"name": "a"}], grid={"optim.lr": [0.1, 0.9]})
    assert names(load_sweep(path)) == ["a-lr=0.1", "a-lr=0.9"]
    with pytest.raises(ConfigError, match="run 0 and run 1 are both named 'mine'"):
        load_sweep(path, sets=["name=mine"])


def test_command_line_axes_reach_the_entries_that_have_them(tmp_path: Path):
    path = write_sweep(
        tmp_path,
        list=[
            {"name": "sgd", "edit": []},
            {"name": "clip", "edit": CLIP, "grid": {"edit.0.max_norm": [0.25, 1.0]}},
            {"name": "slow", "optim.lr": 0.05},  # its own value wins over the top axis
        ],
        grid={"optim.lr": "0.1,0.5"},
        seeds="0,1",  # a comma list works for seeds too
    )
    sweep = load_sweep(path, grids=["edit.0.max_norm=4,8"], seeds="3")
    assert names(sweep) == [
        "sgd-lr=0.1",
        "sgd-lr=0.5",
        "clip-lr=0.1-max_norm=4",
        "clip-lr=0.1-max_norm=8",
        "clip-lr=0.5-max_norm=4",
        "clip-lr=0.5-max_norm=8",
        "slow",
    ]
    assert {r.seed for r in sweep.runs} == {3}  # --seeds replaces every entry's seeds
    assert [r.config["optim"]["lr"] for r in sweep.runs if r.name == "slow"] == [0.05]
    with pytest.raises(ConfigError, match="--set edit: grid axis edit.0.max_norm sets it too"):
        load_sweep(path, sets=["edit=[]"])
    for bad in (["--set", "seed=1"], ["--grid", "seed=1,2"]):
        result = runner.invoke(app, ["sweep", str(path), "--dry-run", *bad])
        assert result.exit_code == 2 and "--seeds 0,1" in result.stderr, result.stderr
    dry = runner.invoke(app, ["sweep", str(path), "--dry-run"]).stdout.splitlines()
    assert dry[1] == "# varies: edit, optim.lr, seed"
    assert dry[6].split(maxsplit=4)[1:] == [
        "clip-lr=0.1-max_norm=0.25",
        "seed",
        "0",
        'edit=[{"type": "clip_norm", "max_norm": 0.25}] optim.lr=0.1',
    ]


def test_made_up_names_never_collide_and_unnamed_entries_say_what_differs(tmp_path: Path):
    globs = (
        [{"type": "clip_norm", "params": ["fc?.bias"]}],
        [{"type": "clip_norm", "params": ["fc*.bias"]}],
    )
    path = write_sweep(tmp_path, grid={"edit": list(globs), "optim.lr": [0.1234567, 0.1234568]})
    sweep = load_sweep(path)  # both globs read fc_.bias: a stable hash tells them apart
    assert len(set(names(sweep))) == 4 and all(len(n) <= 100 for n in names(sweep))
    assert names(load_sweep(path)) == names(sweep)
    assert any("lr=0.1234567" in n for n in names(sweep))
    path = write_sweep(
        tmp_path, list=[{"optim.lr": 0.1}, {"optim.lr": 0.5}, {"model.activation": "tanh"}]
    )
    assert names(load_sweep(path)) == ["s-lr=0.1", "s-lr=0.5", "s-activation=tanh"]
    with pytest.raises(ConfigError, match="Hydra's choice\\(...\\) is not supported"):
        load_sweep(path, grids=["optim.lr=choice(0.1,0.5)"])


@pytest.mark.parametrize(
    ("sweep", "args", "message"),
    [
        ({}, ["--grid", "optim.lr="], "--grid 'optim.lr=': expected KEY=VALUE1,VALUE2"),
        ({}, ["--grid", "optim.lr"], "--grid 'optim.lr': expected KEY=VALUE1,VALUE2"),
        ({}, ["--grid", "optim.lr=0.1,,0.2"], "--grid optim.lr: expected values separated"),
        ({"grid": {"optim.lr": []}}, [], "grid.optim.lr: expected a non-empty list"),
        (
            {"list": [{"name": "sgd", "edit": []}], "grid": {"edit.0.max_norm": [1.0, 2.0]}},
            [],
            "2 of 2 runs are invalid: edit.0.max_norm: '0' is not an index of a list of 0 "
            "(runs 0-1: sgd-max_norm=1, sgd-max_norm=2)",
        ),
        (
            {"list": [{"name": "a", "seeds": [1, 1]}]},
            [],
            "list[0].seeds: [1] appear more than once",
        ),
        (
            {"list": [{"name": "a", "optim.lr": 0.1}, {"name": "a", "optim.lr": 0.2}]},
            [],
            "1 name would be shared by different experiments: run 0 and run 1 are both named 'a'",
        ),
    ],
)
def test_bad_designs_end_in_one_error_and_create_nothing(tmp_path, sweep, args, message):
    path = write_sweep(tmp_path, **sweep)
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["sweep", str(path), "--runs-dir", str(runs), *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert "Traceback" not in result.output and not runs.exists()


def test_the_default_study_shows_its_effect(tmp_path: Path):
    """A small version of `make run`'s study (one epoch, three seeds, three arms): plain
    SGD at lr 2 collapses, clipping the norm to 0.25 and AGC keep learning, and the paired
    tests say so."""
    sweep = load_sweep(ROOT / "configs/sweeps/lr-rescue.yaml", sets=["optim.epochs=1"])
    assert names(sweep) == [
        "sgd",
        "clip-max_norm=0.25",
        "clip-max_norm=1",
        "clip-max_norm=4",
        "agc",
        "normalize",
    ]
    assert all(len(set(r.seed for r in sweep.runs if r.name == n)) >= 5 for n in names(sweep))
    sweep.runs = [
        r for r in sweep.runs if r.name in ("sgd", "clip-max_norm=0.25", "agc") and r.seed < 3
    ]
    run_sweep(sweep, tmp_path, jobs=2)
    assert {r.status for r in sweep.runs} == {"done"}
    table = comparison([tmp_path / "lr-rescue"], baseline="edits=none")
    rows = {row["name"]: row for row in table.to_dict("records")}
    assert rows["sgd"]["final_test_accuracy"] < 0.5  # collapsed
    for arm in ("clip-max_norm=0.25", "agc"):
        assert rows[arm]["delta.final_test_accuracy"] > 0.3  # the sign (and size) of the effect
        assert rows[arm]["delta.final_test_accuracy.ci_low"] > 0
        assert rows[arm]["test"] == "paired" and rows[arm]["p_adjusted"] < 0.05


# --------------------------------------------------------------------------- Ray


def test_a_ray_task_copies_its_run_back_unless_it_sees_the_sweep_folder(tmp_path: Path):
    from gradlab.runlog import create_run_folder
    from gradlab.sweeps.ray_executor import train_task, write_files

    config = load_sweep(write_sweep(tmp_path)).runs[0].config
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    probe = sweep_dir / ".ray-probe-x"
    # not visible (another node): trained elsewhere, the files come back
    claimed = create_run_folder(sweep_dir, "s")
    result = train_task(config, str(sweep_dir), claimed.name, str(probe), None)
    assert result["status"] == "completed" and result["where"] != "shared"
    assert not Path(result["where"]).exists()  # the temporary folder is gone
    assert list(claimed.iterdir()) == []  # nothing was written here by the task
    assert {"config.yaml", "meta.json", "steps.csv", "summary.json"} <= set(result["files"])
    write_files(claimed, result["files"])
    assert (claimed / "steps.csv").read_bytes() == result["files"]["steps.csv"]
    with pytest.raises(OSError, match="outside the run folder"):
        write_files(claimed, {"../escape.txt": b"x"})
    # visible: trained in place, nothing to copy
    probe.write_text("probe")
    in_place = create_run_folder(sweep_dir, "s")
    result = train_task(config, str(sweep_dir), in_place.name, str(probe), None)
    assert result["where"] == "shared" and result["files"] is None
    assert (in_place / "summary.json").exists()
    # forced sharing where the folder cannot be seen: one clear failure
    probe.unlink()
    result = train_task(config, str(sweep_dir), "x", str(probe), True)
    assert result["status"] == "failed" and "--shared-dir" in result["error"]


def test_ray_without_a_shared_folder(tmp_path: Path, monkeypatch):
    """A local Ray whose tasks run in another working folder (Ray's working_dir, as on a
    cluster) and a relative --runs-dir: the run folders come back whole to the driver."""
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'gradlab[ray]')")
    path = write_sweep(tmp_path, grid={"optim.lr": [0.05, 0.2]})
    elsewhere = tmp_path / "task-cwd"
    elsewhere.mkdir()
    (elsewhere / "README").write_text("the tasks' working folder\n")
    monkeypatch.chdir(tmp_path)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"working_dir": str(elsewhere)},
    )
    try:

        @ray.remote
        def cwd() -> str:
            import os

            return os.getcwd()

        assert Path(ray.get(cwd.remote())).resolve() != tmp_path.resolve()
        folder = run_sweep(load_sweep(path), "runs", executor="ray", jobs=2, shared_dir=False)
    finally:
        ray.shutdown()
    local = run_sweep(load_sweep(path), tmp_path / "local", jobs=1)
    record = json.loads((folder / "sweep.json").read_text())
    assert [r["status"] for r in record["runs"]] == ["done", "done"]
    assert not list(folder.glob(".ray-probe-*"))
    twins = json.loads((local / "sweep.json").read_text())["runs"]
    for run, twin in zip(record["runs"], twins, strict=True):
        ray_steps = pd.read_csv(folder / run["folder"] / "steps.csv").drop(columns="elapsed_s")
        local_steps = pd.read_csv(local / twin["folder"] / "steps.csv").drop(columns="elapsed_s")
        assert list(ray_steps.columns) == list(local_steps.columns) and len(ray_steps) == 6
        assert np.allclose(ray_steps, local_steps, rtol=1e-5)  # the same training, copied whole
    rerun = run_sweep(load_sweep(path), "runs", executor="ray", jobs=2, shared_dir=False)
    assert {r["status"] for r in json.loads((rerun / "sweep.json").read_text())["runs"]} == {
        "skipped"
    }  # resume works on the copied folders
    assert not list((elsewhere).glob("runs"))  # nothing was written in the tasks' folder
