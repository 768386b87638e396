"""Real processes in a harsh environment: signals, killed processes, a full disk. Every way
a run can end leaves a final, truthful status."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import tiny

from gradlab.reading import load_runs

LONG = {"optim": {"max_steps": 10_000_000, "batch_size": 10}}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def start_training(tmp_path: Path, extra_args=(), preexec=None, **sections) -> subprocess.Popen:
    config_path = tmp_path / "long.yaml"
    config_path.write_text(yaml.safe_dump(tiny(**{**LONG, **sections})))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gradlab.cli",
            "train",
            str(config_path),
            "--runs-dir",
            str(tmp_path / "runs"),
            "-q",
            *extra_args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        preexec_fn=preexec,
    )


def wait_for_steps(folder_glob: Path, pattern: str, rows: int = 20, timeout: float = 60) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for steps in folder_glob.glob(pattern):
            if len(steps.read_text().splitlines()) > rows:
                return steps.parent
        time.sleep(0.1)
    raise AssertionError("the run never logged steps")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_end_a_run_like_ctrl_c(tmp_path: Path, sig, code):
    proc = start_training(tmp_path)
    try:
        run = wait_for_steps(tmp_path / "runs", "tiny-*/steps.csv")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, err.decode()
    assert b"Traceback" not in err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["signal"] == sig.name
    steps = read_csv(run / "steps.csv")
    assert [int(r["step"]) for r in steps] == list(range(1, summary["steps"] + 1))
    assert int(read_csv(run / "evals.csv")[-1]["step"]) == summary["steps"]


def test_a_killed_run_is_crashed_and_shows_what_it_logged(tmp_path: Path):
    proc = start_training(tmp_path, train={"flush_every": 5, "eval_every": 50})
    try:
        run = wait_for_steps(tmp_path / "runs", "tiny-*/evals.csv", rows=2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert json.loads((run / "summary.json").read_text())["status"] == "running"
    (row,) = load_runs([run]).to_dict("records")
    steps = read_csv(run / "steps.csv")
    evals = read_csv(run / "evals.csv")
    assert row["status"] == "crashed"
    assert row["steps"] == int(steps[-1]["step"])
    losses = [float(r["loss"]) for r in steps[-20:]]
    assert row["final_train_loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-6)
    assert row["final_test_accuracy"] == pytest.approx(float(evals[-1]["test_accuracy"]))
    assert row["best_test_accuracy"] == pytest.approx(max(float(e["test_accuracy"]) for e in evals))


def test_a_stale_heartbeat_is_crashed_from_any_host(tmp_path: Path, tiny_config):
    from gradlab.runlog import STALE_SECONDS
    from gradlab.train import train

    run = train(tiny_config(), tmp_path).path
    summary = run / "summary.json"
    meta = json.loads((run / "meta.json").read_text())
    meta["host"] = "another-host"  # its PID means nothing here
    (run / "meta.json").write_text(json.dumps(meta))
    summary.write_text(json.dumps({"status": "running", "pid": 1}))
    assert load_runs([run])["status"].item() == "running"  # fresh: maybe alive elsewhere
    old = time.time() - STALE_SECONDS - 5
    os.utime(summary, (old, old))
    assert load_runs([run])["status"].item() == "crashed"


def _limit_file_size():
    import resource

    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG


def test_a_full_disk_ends_the_run_as_failed_with_the_error(tmp_path: Path):
    proc = start_training(tmp_path, preexec=_limit_file_size, train={"flush_every": 5})
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err.decode()
    assert b"Traceback" not in err and b"error: the run failed: OSError" in err
    (run,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and "File too large" in summary["error"]
    assert "OSError" in (run / "traceback.txt").read_text()
