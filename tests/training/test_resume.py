"""Checkpoints and ``--resume``: a resumed run is the run that was never interrupted.

The fault tests kill real training processes with SIGKILL (they kill themselves from the
progress callback at random steps: no cleanup runs, as with the OOM killer or a lost node),
resume them, and compare every logged value, the summary and the weights with an
uninterrupted run of the same config, on data of Fashion-MNIST's size.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_idx_dataset, tiny
from typer.testing import CliRunner

from gradlab.checkpoint import CHECKPOINT_FILE, PREVIOUS_FILE, read_checkpoint_file
from gradlab.cli import app
from gradlab.config import config_from_dict
from gradlab.errors import GradlabError, RunFolderError
from gradlab.resume import ResumeError, prepare_resume, resume
from gradlab.runlog import write_json
from gradlab.train import Progress, train
from gradlab.weights import load_weights

TIMING = {"elapsed_s"}
SUMMARY_TIMING = {"wall_seconds", "steps_per_second", "resumed"}

# a training process that kills itself with SIGKILL once its logged step reaches KILL_AT
SCRIPT = """
import os, signal, sys, torch
torch.set_num_threads(1)
from gradlab.config import load_config
from gradlab.resume import resume
from gradlab.train import train
config, runs, folder, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def on_progress(p):
    if kill_at and p.step >= kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
if folder == "-":
    result = train(load_config(config), runs, on_progress=on_progress)
else:
    result = resume(folder, on_progress=on_progress)
print(result.path)
"""


@pytest.fixture(scope="module")
def fashion_sized(tmp_path_factory) -> Path:
    """Generated IDX files of Fashion-MNIST's size: 60,000 training and 10,000 test images."""
    root = tmp_path_factory.mktemp("fashion")
    make_idx_dataset(root / "FashionMNIST" / "raw", n_train=60_000, n_test=10_000, seed=5)
    return root


def _config_file(folder: Path, root: Path, **sections) -> Path:
    raw = {
        "name": "fault",
        "seed": 11,
        "data": {"name": "fashion-mnist", "root": str(root), "download": False},
        "model": {"hidden": 24},
        # 300 steps cross an epoch boundary (235 batches of 256)
        "optim": {"lr": 0.05, "batch_size": 256, "max_steps": 300, "momentum": 0.9},
        "edit": [{"type": "mask", "p": 0.8}, {"type": "noise", "sigma": 0.01}],
        "train": {
            "device": "cpu",
            "amp": "off",
            "checkpoint_every": 23,
            "flush_every": 9,
            "eval_every": 100,
            "eval_batch_size": 5000,
        },  # fmt: skip
        "diagnostics": {"every": 20},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    path = folder / "config.yaml"
    path.write_text(json.dumps(raw), encoding="utf-8")
    return path


def _run(
    config: Path, runs: Path, folder: str = "-", kill_at: int = 0
) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(config), str(runs), folder, str(kill_at)],
        capture_output=True, text=True, env=env, timeout=300,
        cwd=Path(__file__).parents[1],
    )  # fmt: skip


def assert_same_run(a: Path, b: Path) -> None:
    """Every logged value (timing aside), the summary and the weights are identical."""
    for name in ("steps.csv", "evals.csv", "grads.csv", "alerts.csv"):
        if not (a / name).exists():
            assert not (b / name).exists()
            continue
        x, y = pd.read_csv(a / name), pd.read_csv(b / name)
        keep = [c for c in x.columns if c not in TIMING]
        assert list(x.columns) == list(y.columns), name
        pd.testing.assert_frame_equal(x[keep], y[keep], check_exact=True, obj=name)
    sa, sb = (json.loads((p / "summary.json").read_text()) for p in (a, b))
    drop = lambda s: {k: v for k, v in s.items() if k not in SUMMARY_TIMING}  # noqa: E731
    assert drop(sa) == drop(sb)
    wa, wb = load_weights(a / "model.safetensors")[0], load_weights(b / "model.safetensors")[0]
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


CASES = {
    "analytic, mask + noise, a probe": {
        "train": {"engine": "analytic"},
        "diagnostics": {"every": 20, "probes": ["noise_scale"]},
    },
    "autograd, fp16 AMP on the CPU": {
        "train": {"engine": "autograd", "amp": "fp16", "amp_init_scale": 1024.0},
    },
    "DP-SGD, Poisson sampling": {
        "data": {"sampling": "poisson"},
        "edit": [{"type": "noise", "sigma": 0.01}],
        "privacy": {"noise_multiplier": 1.1, "max_grad_norm": 1.0, "accountant": "rdp"},
    },
}


@pytest.mark.parametrize("case", list(CASES))
def test_killed_runs_resume_to_the_uninterrupted_run(case, fashion_sized, tmp_path):
    config = _config_file(tmp_path, fashion_sized, **CASES[case])
    cfg = config_from_dict(json.loads(config.read_text()))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the killed processes train
    try:
        reference = train(cfg, tmp_path / "reference")
    finally:
        torch.set_num_threads(threads)
    total, every = cfg.optim.max_steps, cfg.train.checkpoint_every
    # three kills at random steps: early, middle, and in the second epoch (235 batches),
    # after a checkpoint there (a resume then draws that epoch's order again)
    rng = np.random.default_rng(sum(map(ord, case)))
    second = 235 + 2 * every
    kills = [
        int(rng.integers(30, 110)),
        int(rng.integers(110, 230)),
        int(rng.integers(second, total - 5)),
    ]
    first = _run(config, tmp_path / "killed", kill_at=kills[0])
    assert first.returncode == -signal.SIGKILL, first.stderr
    (folder,) = (tmp_path / "killed").iterdir()
    resumed_from = []
    for kill_at in [*kills[1:], 0]:
        checkpoint = read_checkpoint_file(folder / CHECKPOINT_FILE)
        resumed_from.append(checkpoint["step"])
        assert checkpoint["step"] <= kill_at or kill_at == 0
        again = _run(config, tmp_path / "killed", str(folder), kill_at)
        assert again.returncode == (-signal.SIGKILL if kill_at else 0), again.stderr
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["resumed"] == {"count": 3, "from_steps": resumed_from}  # each resume
    assert len(json.loads((folder / "meta.json").read_text())["resumed"]) == 3
    assert not (folder / CHECKPOINT_FILE).exists()  # a completed run keeps none
    assert_same_run(reference.path, folder)


# --------------------------------------------------------------------------- in process


def _signal_at(step: int, signum: int = signal.SIGTERM):
    def on_progress(p: Progress) -> None:
        if p.step >= step:
            os.kill(os.getpid(), signum)

    return on_progress


def _cfg(**sections):
    base = {"optim": {"max_steps": 60, "batch_size": 25, "momentum": 0.9}, "seed": 4}
    if sections.get("optim", {}).get("name") == "adam":
        del base["optim"]["momentum"]
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    raw = tiny(**base)
    raw["train"].update(checkpoint_every=10, eval_every=7)
    return config_from_dict(raw)


def test_a_sigterm_run_resumes_at_the_step_it_stopped(tmp_path):
    cfg = _cfg(edit=[{"type": "mask", "p": 0.5}], train={"save": "best"})
    reference = train(cfg, tmp_path / "a")
    stopped = train(cfg, tmp_path / "b", on_progress=_signal_at(23))
    assert stopped.summary["status"] == "interrupted" and stopped.summary["signal"] == "SIGTERM"
    step = stopped.summary["steps"]
    assert 23 <= step < 60
    assert read_checkpoint_file(stopped.path / CHECKPOINT_FILE)["step"] == step  # not a 10's
    result = resume(stopped.path)
    assert result.summary["resumed"] == {"count": 1, "from_steps": [step]}
    assert_same_run(reference.path, result.path)
    for name in ("model-best.safetensors",):
        best_a, best_b = load_weights(reference.path / name), load_weights(result.path / name)
        assert best_a[1]["step"] == best_b[1]["step"]
        assert all(torch.equal(best_a[0][k], best_b[0][k]) for k in best_a[0])


def test_a_stateful_plugin_edit_and_adam_resume_exactly(tmp_path):
    plugin = Path(__file__).parents[2] / "examples" / "edits" / "coordinate_clip.py"
    cfg = _cfg(optim={"name": "adam", "lr": 0.01}, edit=[{"type": f"{plugin}:CoordinateClip"}])
    reference = train(cfg, tmp_path / "a")
    stopped = train(cfg, tmp_path / "b", on_progress=_signal_at(31, signal.SIGINT))
    assert stopped.summary["status"] == "interrupted"
    state = read_checkpoint_file(stopped.path / CHECKPOINT_FILE)
    assert state["edits"][0]["state"]["seen"] > 0  # its running state is in the checkpoint
    assert_same_run(reference.path, resume(stopped.path).path)


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    cfg = _cfg()
    reference = train(cfg, tmp_path / "a")
    stopped = train(cfg, tmp_path / "b", on_progress=_signal_at(35))
    newest = stopped.path / CHECKPOINT_FILE
    data = bytearray(newest.read_bytes())
    data[-10] ^= 0xFF
    newest.write_bytes(bytes(data))
    heard = []
    result = resume(stopped.path, on_warning=heard.append)
    assert len(heard) == 1 and "damaged" in heard[0] and PREVIOUS_FILE in heard[0]
    previous_step = result.summary["resumed"]["from_steps"][0]
    assert previous_step < stopped.summary["steps"]
    assert_same_run(reference.path, result.path)


def test_a_crashed_run_resumes_from_its_last_periodic_checkpoint(tmp_path):
    """A run whose process died (summary still ``running``, its pid gone) goes on from its
    last checkpoint; the rows it logged after it are dropped and written again."""
    cfg = _cfg()
    reference = train(cfg, tmp_path / "a")
    stopped = train(cfg, tmp_path / "b", on_progress=_signal_at(44))
    state = read_checkpoint_file(stopped.path / PREVIOUS_FILE)
    os.replace(stopped.path / PREVIOUS_FILE, stopped.path / CHECKPOINT_FILE)  # the 40's
    write_json(stopped.path / "summary.json", {"status": "running", "pid": 2**31 - 2})
    result = resume(stopped.path)
    assert result.summary["resumed"]["from_steps"] == [state["step"]]
    assert_same_run(reference.path, result.path)


def test_refusals_are_one_line_and_change_nothing(tmp_path):
    cfg = _cfg()
    done = train(cfg, tmp_path / "a")
    with pytest.raises(ResumeError, match="completed .*nothing to resume"):
        prepare_resume(done.path)
    stopped = train(cfg, tmp_path / "b", on_progress=_signal_at(15))
    before = {p.name: p.read_bytes() for p in stopped.path.iterdir() if p.is_file()}
    other = _cfg(optim={"lr": 0.2})
    with pytest.raises(ResumeError, match=r"optim.lr \(run: 0.1, given: 0.2\)"):
        prepare_resume(stopped.path, other)
    summary = json.loads((stopped.path / "summary.json").read_text())
    write_json(stopped.path / "summary.json", {"status": "running", "pid": os.getpid()})
    with pytest.raises(ResumeError, match="still running"):
        prepare_resume(stopped.path)
    write_json(stopped.path / "summary.json", summary)
    # a setup that is another experiment: checked before any file changes
    own, prepared = prepare_resume(stopped.path)
    elsewhere = config_from_dict(
        {**own.to_dict(), "train": {**own.to_dict()["train"], "engine": "autograd"}}
    )
    with pytest.raises(ResumeError, match="engine analytic in the run, autograd here"):
        train(elsewhere, resume=prepared)
    after = {p.name: p.read_bytes() for p in stopped.path.iterdir() if p.is_file()}
    assert after == before
    # no usable checkpoint at all
    for name in (CHECKPOINT_FILE, PREVIOUS_FILE):
        (stopped.path / name).write_bytes(b"GRADLAB-CHECKPOINT 1 0\nxx")
    with pytest.raises(RunFolderError, match="damaged"):
        prepare_resume(stopped.path)
    for name in (CHECKPOINT_FILE, PREVIOUS_FILE):
        (stopped.path / name).unlink()
    with pytest.raises(RunFolderError, match="no checkpoint to resume from"):
        prepare_resume(stopped.path)
    with pytest.raises(RunFolderError, match="no such run folder"):
        prepare_resume(tmp_path / "nowhere")


def test_a_log_shorter_than_its_checkpoint_is_refused(tmp_path):
    stopped = train(_cfg(), tmp_path / "b", on_progress=_signal_at(25))
    steps = stopped.path / "steps.csv"
    steps.write_text(steps.read_text()[:200])
    _, prepared = prepare_resume(stopped.path)
    with pytest.raises(RunFolderError, match="steps.csv: shorter than at the checkpoint"):
        train(_cfg(), resume=prepared)


def test_cli_resume(tmp_path):
    runner = CliRunner()
    cfg = _cfg()
    stopped = train(cfg, tmp_path / "b", on_progress=_signal_at(20))
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps(cfg.to_dict()))
    result = runner.invoke(app, ["train", str(config), "--resume", str(stopped.path), "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads((stopped.path / "summary.json").read_text())["status"] == "completed"
    again = runner.invoke(app, ["train", "--resume", str(stopped.path), "-q"])
    assert again.exit_code == 2
    lines = again.output.strip().splitlines()
    assert len(lines) == 1 and "nothing to resume" in lines[0]
    bad = runner.invoke(app, ["train", "--resume", str(stopped.path), "--set", "optim.lr=1"])
    assert bad.exit_code == 2 and "keeps the run's own config" in bad.output
    assert runner.invoke(app, ["train"]).exit_code == 2


def test_diverged_runs_keep_no_checkpoint_and_the_default_one_is_small(tmp_path):
    raw = tiny(optim={"lr": 1e6, "max_steps": 40}, train={"checkpoint_every": 1})
    diverged = train(config_from_dict(raw), tmp_path / "a")
    assert diverged.summary["status"] == "diverged"
    assert not (diverged.path / CHECKPOINT_FILE).exists()
    default = tiny(model={"hidden": 100}, optim={"max_steps": 30})  # the study's 784-100-10
    stopped = train(config_from_dict(default), tmp_path / "b", on_progress=_signal_at(10))
    assert (stopped.path / CHECKPOINT_FILE).stat().st_size < 1_000_000


def test_a_plugin_state_a_checkpoint_cannot_save_is_refused_before_the_run(tmp_path):
    plugin = tmp_path / "odd.py"
    plugin.write_text(
        "import torch\nfrom gradlab import Edit\n"
        "class Odd(Edit):\n    name = 'odd'\n"
        "    def setup(self, weights):\n        self.keeper = object()\n"
        "    def edit(self, grads, weights, step):\n"
        "        return {'changed': torch.zeros(())}\n"
    )
    raw = tiny(edit=[{"type": f"{plugin}:Odd"}])
    with pytest.raises(GradlabError, match=r"self.keeper .*derived"):
        train(config_from_dict(raw), tmp_path / "runs")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_time_based_default(tmp_path, monkeypatch):
    """``checkpoint_every: 0``: a checkpoint at the first step CHECKPOINT_SECONDS after
    the last one (here 0 s: every step; then never but at the signal)."""
    training = sys.modules["gradlab.train"]  # the module (gradlab.train is the function)
    raw = tiny(optim={"max_steps": 30})
    raw["train"]["checkpoint_every"] = 0
    monkeypatch.setattr(training, "CHECKPOINT_SECONDS", 0.0)
    stopped = train(config_from_dict(raw), tmp_path / "a", on_progress=_signal_at(10))
    step = stopped.summary["steps"]
    assert read_checkpoint_file(stopped.path / PREVIOUS_FILE)["step"] == step - 1
    monkeypatch.setattr(training, "CHECKPOINT_SECONDS", 1e9)
    stopped = train(config_from_dict(raw), tmp_path / "b", on_progress=_signal_at(10))
    assert read_checkpoint_file(stopped.path / CHECKPOINT_FILE)["step"] == stopped.summary["steps"]
    assert not (stopped.path / PREVIOUS_FILE).exists()


# --------------------------------------------------------------------------- sweeps

KILLER = """
import os, signal, torch
from pathlib import Path
from gradlab import Edit, EditParams

class Params(EditParams):
    marker: str
    at: int

class Killer(Edit):
    '''Kills its own process with SIGKILL at step `at`, the first time only (a marker file).'''
    name = "killer"
    Params = Params

    def edit(self, grads, weights, step):
        marker = Path(self.params.marker)
        if step == self.params.at and not marker.exists():
            marker.write_text("killed")
            os.kill(os.getpid(), signal.SIGKILL)
        return {"changed": torch.zeros((), device=next(iter(grads.values())).device)}
"""


def test_a_sweep_resumes_the_run_whose_worker_was_killed(tmp_path):
    import yaml

    from gradlab.study.compare import comparison
    from gradlab.sweeps.plan import load_sweep
    from gradlab.sweeps.run import run_sweep

    (tmp_path / "killer.py").write_text(KILLER)
    killer = {"type": "killer.py:Killer", "marker": str(tmp_path / "killed"), "at": 33}
    base = tiny(optim={"max_steps": 60, "batch_size": 25}, train={"checkpoint_every": 10})
    base["edit"] = [{"type": "mask", "p": 0.6}]
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "name": "s", "base": "base.yaml", "seeds": [0],
        "list": [{"name": "plain"}, {"name": "killed", "edit": [{"type": "mask", "p": 0.6}, killer]}],
    }))  # fmt: skip
    runs = tmp_path / "runs"
    first = load_sweep(sweep_file)
    run_sweep(first, runs, jobs=2)
    status = {r.name: r.status for r in first.runs}
    assert status == {"plain": "done", "killed": "failed"}, [r.error for r in first.runs]
    killed = next(r for r in first.runs if r.name == "killed")
    folder = runs / "s" / str(killed.folder)
    assert read_checkpoint_file(folder / CHECKPOINT_FILE)["step"] == 30

    again = load_sweep(sweep_file)
    run_sweep(again, runs, jobs=2)
    resumed = next(r for r in again.runs if r.name == "killed")
    assert resumed.status == "done" and resumed.folder == killed.folder  # in its own folder
    assert [r.status for r in again.runs if r.name == "plain"] == ["skipped"]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed"]["from_steps"] == [30]
    table = comparison(runs / "s", group=False)
    row = table.set_index("name").loc["killed"]
    assert row["status"] == "completed" and row["resumed"] == 1

    # the same run never killed (the marker is there now) is the resumed one
    reference = config_from_dict(yaml.safe_load((folder / "config.yaml").read_text()))
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))  # as the sweep's 2 workers do
    try:
        alone = train(reference, tmp_path / "alone")
    finally:
        torch.set_num_threads(threads)
    assert_same_run(alone.path, folder)


def test_restart_trains_a_stopped_sweep_run_again(tmp_path):
    import yaml

    from gradlab.sweeps.plan import load_sweep
    from gradlab.sweeps.run import run_sweep

    (tmp_path / "killer.py").write_text(KILLER)
    killer = {"type": "killer.py:Killer", "marker": str(tmp_path / "killed"), "at": 15}
    base = tiny(optim={"max_steps": 30}, train={"checkpoint_every": 10})
    base["edit"] = [killer]
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({"name": "s", "base": "base.yaml", "seeds": [0]}))
    first = load_sweep(sweep_file)
    run_sweep(first, tmp_path / "runs", jobs=1)
    again = load_sweep(sweep_file)
    run_sweep(again, tmp_path / "runs", jobs=1, restart=True)
    assert again.runs[0].status == "done" and again.runs[0].folder != first.runs[0].folder
    summary = json.loads(
        (tmp_path / "runs" / "s" / str(again.runs[0].folder) / "summary.json").read_text()
    )
    assert "resumed" not in summary


def test_a_ray_sweep_without_a_shared_folder_resumes_from_the_checkpoint(tmp_path, monkeypatch):
    """The stopped run's files travel with its task and come back with the rest."""
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'gradlab[ray]')")
    if ray.is_initialized():
        pytest.skip("a Ray is already running in this process")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    import yaml

    from gradlab.sweeps.plan import load_sweep
    from gradlab.sweeps.run import run_sweep

    (tmp_path / "killer.py").write_text(KILLER)
    killer = {"type": "killer.py:Killer", "marker": str(tmp_path / "killed"), "at": 25}
    base = tiny(optim={"max_steps": 40}, train={"checkpoint_every": 10})
    base["edit"] = [{"type": "noise", "sigma": 0.01}, killer]
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({"name": "s", "base": "base.yaml", "seeds": [0]}))
    runs = tmp_path / "runs"
    first = load_sweep(sweep_file)
    run_sweep(first, runs, jobs=1)
    assert first.runs[0].status == "failed"
    folder = runs / "s" / str(first.runs[0].folder)
    again = load_sweep(sweep_file)
    run_sweep(again, runs, executor="ray", jobs=1, shared_dir=False)
    assert again.runs[0].status == "done", again.runs[0].error
    assert again.runs[0].folder == first.runs[0].folder
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed"]["from_steps"] == [20]
    assert not (folder / CHECKPOINT_FILE).exists() and not (folder / PREVIOUS_FILE).exists()
    steps = pd.read_csv(folder / "steps.csv")
    assert steps["step"].tolist() == list(range(1, 41))  # each step once


def test_a_run_resumes_from_another_working_directory(tmp_path, monkeypatch):
    """``data.root: data`` is relative to where the run trained (meta.json's cwd)."""
    work = tmp_path / "work"
    make_idx_dataset(work / "data" / "MNIST" / "raw", n_train=300, n_test=60)
    monkeypatch.chdir(work)
    raw = tiny(data={"name": "mnist", "root": "data", "download": False})
    raw["optim"].update(max_steps=30)
    raw["train"]["checkpoint_every"] = 10
    cfg = config_from_dict(raw)
    reference = train(cfg, tmp_path / "a")
    stopped = train(cfg, tmp_path / "b", on_progress=_signal_at(12))
    monkeypatch.chdir(tmp_path)
    assert_same_run(reference.path, resume(stopped.path).path)


def test_a_resumed_run_trains_with_the_threads_it_started_with(tmp_path):
    threads = torch.get_num_threads()
    cfg = _cfg(model={"hidden": 64}, optim={"batch_size": 100})
    try:
        torch.set_num_threads(1)
        reference = train(cfg, tmp_path / "a")
        stopped = train(cfg, tmp_path / "b", on_progress=_signal_at(20))
        torch.set_num_threads(2)  # a sweep's worker, say, with another --jobs
        result = resume(stopped.path)
        record = json.loads((result.path / "meta.json").read_text())["resumed"][0]
        assert record["torch_threads"] == 1 and record["after"] == "interrupted"
        assert_same_run(reference.path, result.path)
    finally:
        torch.set_num_threads(threads)


FAILS_ONCE = """
import torch
from pathlib import Path
from gradlab import Edit, EditParams

class Params(EditParams):
    marker: str

class FailsOnce(Edit):
    name = "fails_once"
    Params = Params

    def edit(self, grads, weights, step):
        marker = Path(self.params.marker)
        if step == 27 and not marker.exists():
            marker.write_text("failed")
            raise RuntimeError("a flaky file system")
        return {"changed": torch.zeros((), device=next(iter(grads.values())).device)}
"""


def test_a_failed_run_goes_on_and_keeps_the_failure_in_its_record(tmp_path):
    (tmp_path / "flaky.py").write_text(FAILS_ONCE)
    edit = {"type": f"{tmp_path / 'flaky.py'}:FailsOnce", "marker": str(tmp_path / "m")}
    cfg = _cfg(edit=[edit])
    failed = train(cfg, tmp_path / "b")
    assert failed.summary["status"] == "failed" and (failed.path / "traceback.txt").exists()
    result = resume(failed.path)
    assert result.summary["status"] == "completed" and result.summary["resumed"]["from_steps"] == [
        20
    ]
    assert not (result.path / "traceback.txt").exists()
    record = json.loads((result.path / "meta.json").read_text())["resumed"][0]
    assert record["after"] == "failed" and "a flaky file system" in record["error"]
    reference = train(cfg, tmp_path / "a")  # the marker is there: it never fails now
    assert_same_run(reference.path, result.path)


def test_a_sweep_run_stopped_in_setup_leaves_no_folder(tmp_path, monkeypatch):
    """A signal during a private run's setup accounting: the run never began (no folder)."""
    from gradlab.sweeps import worker
    from gradlab.train import SetupInterrupted

    def interrupted(*args, **kwargs):
        raise SetupInterrupted("SIGINT", solving=False)

    monkeypatch.setattr(sys.modules["gradlab.train"], "train", interrupted)
    folder = tmp_path / "s" / "claimed"
    folder.mkdir(parents=True)
    result = worker.run_one(tiny(), str(tmp_path / "s"), folder=str(folder))
    assert result["status"] == "interrupted" and result["started"] is False
    assert not folder.exists()


def test_cli_resume_messages(tmp_path):
    runner = CliRunner()
    raw = tiny(optim={"lr": 1e6, "max_steps": 40})
    diverged = train(config_from_dict(raw), tmp_path / "a")
    out = runner.invoke(app, ["train", "--resume", str(diverged.path)])
    assert (
        out.exit_code == 2
        and f"diverged (at step {diverged.summary['diverged_step']})" in out.output
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    out = runner.invoke(app, ["train", "--resume", str(empty)])
    assert out.exit_code == 2 and "not a run folder" in out.output
    out = runner.invoke(app, ["train", "--resume", "--quiet"])
    assert out.exit_code == 2 and "give the run folder" in out.output
    out = runner.invoke(app, ["train", "--resume", str(diverged.path), "--runs-dir", "x"])
    assert out.exit_code == 2 and "no --runs-dir" in out.output
