"""Sweeps: expansion, dry run, the local executor, failure isolation, resume, and Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import tiny
from typer.testing import CliRunner

from gradlab.cli import app
from gradlab.errors import ConfigError
from gradlab.sweeps.plan import load_sweep
from gradlab.sweeps.run import run_sweep

runner = CliRunner()


def write_sweep(folder: Path, **sweep) -> Path:
    base = folder / "base.yaml"
    base.write_text(yaml.safe_dump(tiny(optim={"max_steps": 6})))
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "base": "base.yaml", **sweep}))
    return path


def test_expansion_is_list_times_grid_times_seeds(tmp_path):
    path = write_sweep(
        tmp_path,
        set={"optim.momentum": 0.5},
        list=[{"name": "a"}, {"name": "b", "edit": [{"type": "clip_norm", "max_norm": 1.0}]}],
        grid={"optim.lr": [0.01, 0.1], "model.hidden": [8, 16, 32]},
        seeds=[0, 1],
    )
    sweep = load_sweep(path)
    assert len(sweep.runs) == 2 * (2 * 3) * 2
    first = sweep.runs[0]
    assert first.overrides == {
        "optim.momentum": 0.5,
        "name": "a-hidden=8-lr=0.01",  # the entry's name and the grid values that vary
        "optim.lr": 0.01,
        "model.hidden": 8,
        "seed": 0,
    }
    assert (
        first.config["optim"]["momentum"] == 0.5 and first.config["data"]["name"] == "mnist-sample"
    )
    assert [r.seed for r in sweep.runs[:4]] == [0, 1, 0, 1]
    assert len({(r.hash, r.seed) for r in sweep.runs}) == len(sweep.runs)  # distinct runs
    assert len({r.hash for r in sweep.runs}) == 12  # the experiments: one hash for both seeds
    b = [r for r in sweep.runs if r.name.startswith("b-")]
    assert all(r.config["edit"][0]["type"] == "clip_norm" for r in b) and len(b) == 12


def test_a_whole_pipeline_is_one_axis_and_names_default_to_the_sweep(tmp_path):
    pipelines = [[], [{"type": "clip_norm", "max_norm": 1.0}], [{"type": "noise", "sigma": 0.01}]]
    sweep = load_sweep(write_sweep(tmp_path, grid={"edit": pipelines}))
    assert [r.name for r in sweep.runs] == [
        "s-edit=none",
        "s-edit=clip_norm_1",
        "s-edit=noise_0.01",
    ]
    assert [len(r.config["edit"]) for r in sweep.runs] == [0, 1, 1]


def test_invalid_expansions_are_reported_together(tmp_path):
    path = write_sweep(tmp_path, grid={"optim.lr": [0.1, -1.0, 0.0], "optim.lrr": [1]}, seeds=[0])
    with pytest.raises(ConfigError) as info:
        load_sweep(path)
    message = str(info.value)
    assert "\n" not in message  # one line, each problem once with the runs it hits
    assert "3 of 3 runs are invalid: optim.lrr: unknown key" in message
    assert "(run 0: s-lr=0.1)" in message and "(run 2: s-lr=0)" in message
    path = write_sweep(tmp_path, grid={"optim.lr": [0.1, -1.0, -2.0]})
    with pytest.raises(
        ConfigError,
        match=r"2 of 3 runs are invalid: optim.lr: Input should be greater than 0 \(got -1.0\) "
        r"\(run 1: s-lr=-1\); optim.lr: Input should be greater than 0 \(got -2.0\) \(run 2: s-lr=-2\)",
    ):
        load_sweep(path)


def test_dry_run_prints_runs_and_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_sweep(tmp_path, grid={"optim.lr": [0.01, 0.1]}, seeds=[0, 1, 2])
    result = runner.invoke(app, ["sweep", str(path), "--dry-run"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "# 6 runs = 1 entry x 2 grid points x 3 seeds; 2 experiments -> runs/s/"
    assert lines[1] == "# varies: optim.lr, seed"
    assert [line.split()[1:4] for line in lines[2:]] == [
        [f"s-lr={lr}", "seed", str(seed)] for lr in ("0.01", "0.1") for seed in (0, 1, 2)
    ]
    assert not (tmp_path / "runs").exists()
    bad = write_sweep(tmp_path, grid={"optim.lr": [-1]})
    result = runner.invoke(app, ["sweep", str(bad), "--dry-run"])
    assert (
        result.exit_code == 2
        and "1 of 1 runs are invalid: optim.lr" in result.stderr
        and "Traceback" not in result.output
    )


def test_local_executor_with_two_jobs_isolates_failures_and_resumes(tmp_path):
    path = write_sweep(
        tmp_path,
        list=[
            {"name": "good"},
            {
                "name": "impossible",
                "data.name": "mnist",
                "data.root": str(tmp_path / "none"),
                "data.download": False,
            },
        ],
        seeds=[0, 1],
    )
    runs = tmp_path / "runs"
    result = runner.invoke(
        app, ["sweep", str(path), "--jobs", "2", "--runs-dir", str(runs)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 1, result.output
    folder = runs / "s"
    record = json.loads((folder / "sweep.json").read_text())
    statuses = {(r["name"], r["seed"]): r["status"] for r in record["runs"]}
    assert statuses == {
        ("good", 0): "done",
        ("good", 1): "done",
        ("impossible", 0): "failed",
        ("impossible", 1): "failed",
    }
    failed = next(r for r in record["runs"] if r["status"] == "failed")
    assert "IDX files were not found" in failed["error"]
    summary = json.loads((folder / failed["folder"] / "summary.json").read_text())
    assert summary["status"] == "failed" and "IDX files" in summary["error"]
    assert "2 done, 2 failed" in result.stdout and "good" in result.stdout

    again = runner.invoke(
        app, ["sweep", str(path), "--jobs", "2", "--runs-dir", str(runs)], env={"COLUMNS": "200"}
    )
    record = json.loads((folder / "sweep.json").read_text())
    assert [r["status"] for r in record["runs"] if r["name"] == "good"] == ["skipped", "skipped"]
    assert "2 skipped" in again.stdout
    folders_before = {p.name for p in folder.iterdir()}
    rerun = run_sweep(load_sweep(path), runs, jobs=2, rerun=True)
    assert len({p.name for p in rerun.iterdir()} - folders_before) == 4  # four new run folders
    table = runner.invoke(app, ["compare", str(folder), "--format", "json"])
    rows = json.loads(table.stdout)  # every run in the folder; seeds grouped, each seed once
    assert {r["name"]: r["n"] for r in rows} == {"good": 2, "impossible": 0}
    assert {r["name"]: r["status"] for r in rows} == {
        "good": "2 completed, 2 duplicate",
        "impossible": "failed",
    }
    assert "2 duplicate runs not counted" in table.stderr
    history = json.loads((folder / "sweep.json").read_text())["history"]
    assert len(history) == 2 and all(len(h["runs"]) == 4 for h in history)


def test_compare_reads_a_sweep_folder_again(tmp_path):
    path = write_sweep(tmp_path, grid={"optim.lr": [0.05, 0.2]}, seeds=[0, 1])
    folder = run_sweep(load_sweep(path), tmp_path / "runs", jobs=2)
    result = runner.invoke(app, ["compare", str(folder), "--format", "csv"])
    lines = result.stdout.strip().splitlines()
    assert result.exit_code == 0 and len(lines) == 3 and lines[0].startswith("run,name,edits")


def test_ray_executor_without_ray_is_one_line(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a)
    )
    path = write_sweep(tmp_path)
    result = runner.invoke(
        app, ["sweep", str(path), "--executor", "ray", "--runs-dir", str(tmp_path / "r")]
    )
    assert result.exit_code == 2 and "pip install 'gradlab[ray]'" in result.stderr


def test_ray_executor_on_a_local_ray(tmp_path):
    pytest.importorskip("ray", reason="ray is not installed (pip install 'gradlab[ray]')")
    path = write_sweep(tmp_path, grid={"optim.lr": [0.05, 0.2]}, seeds=[0, 1])
    runs = tmp_path / "runs"
    folder = run_sweep(load_sweep(path), runs, executor="ray", jobs=2)
    record = json.loads((folder / "sweep.json").read_text())
    assert [r["status"] for r in record["runs"]] == ["done"] * 4
    assert all((folder / r["folder"] / "summary.json").exists() for r in record["runs"])


def test_ctrl_c_stops_the_sweep_and_records_what_did_not_finish(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    path = write_sweep(
        tmp_path, set={"optim.max_steps": 10_000_000, "optim.batch_size": 10}, seeds=[0, 1, 2]
    )
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gradlab.cli",
            "sweep",
            str(path),
            "--jobs",
            "1",
            "--runs-dir",
            str(runs),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, like a terminal's foreground job
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            started = list((runs / "s").glob("s-2*/steps.csv"))  # named after the sweep
            if started and len(started[0].read_text().splitlines()) > 5:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the first run never started")
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the sweep and its workers
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err.decode()[-2000:]
    assert b"Traceback" not in err
    record = json.loads((runs / "s" / "sweep.json").read_text())
    assert [r["status"] for r in record["runs"]] == ["interrupted"] * 3
    first = record["runs"][0]
    assert (
        json.loads((runs / "s" / first["folder"] / "summary.json").read_text())["status"]
        == "interrupted"
    )
    assert record["runs"][1]["folder"] is None and "not started" in record["runs"][1]["error"]
    assert b"3 interrupted" in out


def test_the_shipped_study_expands():
    study = load_sweep(Path(__file__).parents[2] / "configs" / "sweeps" / "editing-study.yaml")
    assert len(study.runs) == 15 and len({(r.hash, r.seed) for r in study.runs}) == 15
    assert {r.config["data"]["name"] for r in study.runs} == {"mnist-sample"}
    assert [r.name for r in study.runs[::3]] == [
        "baseline",
        "clip-value-0.05",
        "mask-0.5-fc2.bias",
        "noise-0.1-fc2.bias",
        "replace-gaussian-0.1-fc2.bias",
    ]


def test_logging_settings_do_not_retrain_but_a_real_change_does(tmp_path):
    runs = tmp_path / "runs"
    first = run_sweep(load_sweep(write_sweep(tmp_path, seeds=[0, 1])), runs, jobs=1)
    assert len([p for p in first.iterdir() if p.is_dir()]) == 2
    quieter = write_sweep(
        tmp_path,
        seeds=[0, 1, 2],
        set={"train.flush_every": 3, "train.eval_every": 2, "diagnostics.every": 0},
    )
    sweep = load_sweep(quieter)
    run_sweep(sweep, runs, jobs=1)
    assert [r.status for r in sweep.runs] == ["skipped", "skipped", "done"]  # only seed 2 trains
    changed = load_sweep(write_sweep(tmp_path, seeds=[0], set={"optim.lr": 0.05}))
    run_sweep(changed, runs, jobs=1)
    assert [r.status for r in changed.runs] == ["done"]
    record = json.loads((first / "sweep.json").read_text())
    assert len(record["history"]) == 2 and len(record["runs"]) == 1  # earlier expansions kept
    table = runner.invoke(app, ["compare", str(first), "--format", "json"])
    rows = json.loads(table.stdout)
    assert sorted(r["n"] for r in rows) == [1, 3]  # seeds 0-2 of the first experiment, one group


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ({"name": "../../x"}, "name: '../../x' is not a valid sweep name"),
        ({"name": "/tmp/abs"}, "name: '/tmp/abs' is not a valid sweep name"),
        ({"name": "a\0b"}, "is not a valid sweep name"),
        ({"seeds": [0, 0, 1]}, "seeds: [0] appear more than once"),
        ({"seeds": [True]}, "seeds: expected a list of whole numbers"),
        (
            {"list": [{"name": "a"}, {"name": "b"}], "seeds": [0, 1]},
            "2 runs repeat another run (the same experiment and seed",
        ),
        (
            {"grid": {"train.flush_every": [5, 7]}},
            "1 run repeats another run",
        ),
        (
            {
                "grid": {
                    "optim.lr": [0.1] * 100,
                    "optim.momentum": [0.0] * 100,
                    "model.hidden": [8] * 100,
                }
            },
            "the sweep expands to 1,000,000 runs, more than the limit of 10,000",
        ),
    ],
)
def test_hostile_sweeps_end_in_one_line_and_create_nothing(tmp_path, sweep, message):
    path = write_sweep(tmp_path, **sweep)
    result = runner.invoke(app, ["sweep", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists() and not (tmp_path.parent / "x").exists()


def test_max_runs_can_be_raised(tmp_path):
    path = write_sweep(tmp_path, grid={"optim.lr": [0.1, 0.2, 0.3]}, seeds=[0, 1])
    result = runner.invoke(app, ["sweep", str(path), "--dry-run", "--max-runs", "5"])
    assert result.exit_code == 2 and "expands to 6 runs, more than the limit of 5" in result.stderr
    result = runner.invoke(app, ["sweep", str(path), "--dry-run", "--max-runs", "6"])
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 2 + 6


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"executor": "Ray"}, "executor 'Ray': use local or ray"),
        ({"jobs": 0}, "jobs 0: runs at a time, a whole number from 1"),
        ({"jobs": -1}, "jobs -1: runs at a time"),
    ],
)
def test_run_sweep_refuses_bad_arguments_before_anything_exists(tmp_path: Path, options, message):
    from gradlab.errors import GradlabError

    sweep = load_sweep(write_sweep(tmp_path, seeds=[0]))
    with pytest.raises(GradlabError) as error:
        run_sweep(sweep, tmp_path / "runs", **options)
    assert str(error.value).startswith(message)
    assert not (tmp_path / "runs").exists()
