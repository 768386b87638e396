"""SIGTERM to a Ray sweep stops it as it stops a local one: exit 143, the running runs end
``interrupted`` with every step they logged, in their run folders (copied back when the
tasks train in a temporary folder), and the queued runs leave no folder. The pieces of it
that need no Ray: the driver keeps its SIGTERM handler across ``ray.init``, a task stopped
before or after its training, and how the driver records a task it stopped."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import tiny

from gradlab.runlog import create_run_folder
from gradlab.sweeps import ray_executor
from gradlab.sweeps.spec import PlannedRun
from gradlab.sweeps.worker import NOT_STARTED, run_one


def start_ray_sweep(tmp_path: Path, scratch: Path, *flags: str) -> subprocess.Popen:
    """A sweep of 4 endless runs, 2 at a time, on a local Ray that it starts; the tasks'
    temporary folders go to ``scratch`` (TMPDIR), Ray's own files where they always do."""
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(tiny(optim={"max_steps": 10_000_000, "batch_size": 10})))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "base": "base.yaml", "seeds": [0, 1, 2, 3]}))
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200", TMPDIR=str(scratch))
    env.setdefault("RAY_TMPDIR", "/tmp")  # Ray's socket paths must stay short
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "gradlab.cli", "sweep", str(path), "--executor", "ray"]
    return subprocess.Popen(
        [*command, "--jobs", "2", "--runs-dir", str(tmp_path / "runs"), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,  # the test can end the local Ray with the sweep
    )


def wait_for_training(where: Path, count: int = 2, rows: int = 20, timeout: float = 240) -> None:
    """Until ``count`` runs below ``where`` have logged more than ``rows`` steps."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = [p for p in where.glob("**/steps.csv") if len(p.read_text().splitlines()) > rows]
        if len(logs) >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"{count} runs never trained below {where}")


@pytest.mark.parametrize("flags", [(), ("--no-shared-dir",)], ids=["shared", "copied-back"])
def test_sigterm_stops_a_ray_sweep_with_every_logged_step_kept(tmp_path: Path, flags):
    pytest.importorskip("ray", reason="ray is not installed (pip install 'gradlab[ray]')")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    proc = start_ray_sweep(tmp_path, scratch, *flags)
    try:
        # with --no-shared-dir the runs train in the tasks' temporary folders
        wait_for_training(scratch if flags else tmp_path / "runs")
        proc.send_signal(signal.SIGTERM)  # kill, timeout, docker stop: the sweep's process only
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stderr = err.decode(errors="replace")
    assert proc.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr and "SIGTERM received" not in stderr, stderr[-3000:]

    sweep_dir = tmp_path / "runs" / "s"
    record = json.loads((sweep_dir / "sweep.json").read_text())
    assert [r["status"] for r in record["runs"]] == ["interrupted"] * 4
    started = [r for r in record["runs"] if r["folder"]]
    assert len(started) == 2, record["runs"]
    for run in started:
        folder = sweep_dir / run["folder"]
        summary = json.loads((folder / "summary.json").read_text())
        with open(folder / "steps.csv") as f:
            logged = list(csv.DictReader(f))
        assert summary["status"] == "interrupted", summary
        assert summary["steps"] == int(logged[-1]["step"]) > 20
    for run in record["runs"]:
        if not run["folder"]:
            assert run["error"] == "not started: the sweep was interrupted"
    folders = {p.name for p in sweep_dir.iterdir() if p.is_dir()}
    assert folders == {r["folder"] for r in started}  # no empty folder of a queued run
    assert list(scratch.glob("gradlab-ray-*")) == []  # nothing left behind on the node
    assert b"4 interrupted" in out


# --------------------------------------------------------------------------- without Ray


class FakeRay:
    """What the driver uses of Ray: ``init`` does what the test gives it."""

    class TaskCancelledError(Exception):
        pass

    class GetTimeoutError(TimeoutError):
        pass

    exceptions = SimpleNamespace(
        TaskCancelledError=TaskCancelledError, GetTimeoutError=GetTimeoutError
    )

    def __init__(self, init=None, get=None) -> None:
        self._init, self._get = init, get
        self.calls: list[str] = []

    def is_initialized(self) -> bool:
        return False

    def init(self, **kwargs) -> None:
        self.calls.append("init")
        if self._init:
            self._init()

    def shutdown(self) -> None:
        self.calls.append("shutdown")

    def get(self, ref, timeout=None):
        return self._get(ref)

    def cancel(self, ref, force=False) -> None:
        self.calls.append(f"cancel force={force}")


def test_the_sweeps_sigterm_handler_outlives_ray_init():
    def ours(signum, frame):
        raise KeyboardInterrupt

    def rays(signum, frame):  # what ray.init installs
        raise SystemExit(signum)

    previous = signal.signal(signal.SIGTERM, ours)
    try:
        ray = FakeRay(init=lambda: signal.signal(signal.SIGTERM, rays))
        assert ray_executor._start_ray(ray, None, "--address x", 1) is True
        assert signal.getsignal(signal.SIGTERM) is ours

        def terminated_during_init():
            signal.signal(signal.SIGTERM, rays)
            rays(signal.SIGTERM, None)

        ray = FakeRay(init=terminated_during_init)
        with pytest.raises(KeyboardInterrupt):  # handed to ours: the sweep stops cleanly
            ray_executor._start_ray(ray, None, "--address x", 1)
        assert ray.calls == ["init", "shutdown"]
        assert signal.getsignal(signal.SIGTERM) is ours
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("shared", [True, False])
def test_a_task_stopped_before_its_run_began_says_so(tmp_path: Path, monkeypatch, shared):
    def stopped(*args):
        raise KeyboardInterrupt  # ray.cancel while the task still imports torch

    monkeypatch.setattr(ray_executor, "run_one", stopped)
    monkeypatch.setattr(ray_executor.tempfile, "tempdir", str(tmp_path))
    claimed = create_run_folder(tmp_path, "tiny")
    probe = tmp_path / ".probe"
    probe.write_text("probe")
    result = ray_executor.train_task(tiny(), str(tmp_path), claimed.name, str(probe), shared)
    assert result["started"] is False and result["error"] == NOT_STARTED
    assert list(claimed.iterdir()) == [] and list(tmp_path.glob("gradlab-ray-*")) == []


def test_a_stop_that_comes_as_a_run_ends_keeps_its_files(tmp_path: Path, monkeypatch):
    def ends_then_stopped(*args):
        result = run_one(*args)
        signal.raise_signal(signal.SIGINT)  # ray.cancel just after training
        return result

    monkeypatch.setattr(ray_executor, "run_one", ends_then_stopped)
    claimed = create_run_folder(tmp_path, "tiny")
    config = tiny(optim={"max_steps": 2})
    result = ray_executor.train_task(config, str(tmp_path), claimed.name, "none", False)
    assert result["status"] == "completed" and "started" not in result
    assert json.loads(result["files"]["summary.json"])["status"] == "completed"


def test_the_stopping_driver_records_dropped_and_stuck_tasks(tmp_path: Path):
    def planned(index: int) -> tuple[PlannedRun, Path]:
        run = PlannedRun(index, "tiny", index, {}, tiny(), "hash", status="running")
        folder = create_run_folder(tmp_path, "tiny")
        run.folder = folder.name
        return run, folder

    def get(ref):
        if ref == "queued":
            raise FakeRay.TaskCancelledError()
        raise FakeRay.GetTimeoutError()

    ray, done = FakeRay(get=get), []
    tasks = {"queued": planned(0), "stuck": planned(1)}
    (queued, _), (stuck, stuck_folder) = tasks.values()
    ray_executor._stop(ray, tasks, [queued, stuck], tmp_path, done.append)
    assert done == [queued, stuck]
    assert (queued.status, queued.folder, queued.error) == ("interrupted", None, NOT_STARTED)
    assert sorted(p.name for p in tmp_path.iterdir()) == [stuck_folder.name]  # removed
    assert ray.calls[-1] == "cancel force=True" and stuck.status == "interrupted"
    assert "did not stop within" in stuck.error
    summary = json.loads((stuck_folder / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "did not stop within" in summary["error"]
