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

from gradlab.study.reading import load_runs

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


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)]
)
def test_a_stop_signal_finishes_the_step_flushes_and_exits_128_plus_its_number(
    tmp_path: Path, sig, code
):
    proc = start_training(tmp_path)
    try:
        run = wait_for_steps(tmp_path / "runs", "tiny-*/steps.csv")
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, err.decode()
    assert b"Traceback" not in err
    assert out.decode().strip() == str(run)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["signal"] == sig.name
    steps = read_csv(run / "steps.csv")
    assert [int(r["step"]) for r in steps] == list(range(1, summary["steps"] + 1))
    assert all(r["elapsed_s"] for r in steps)  # no half-written row
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


# --------------------------------------------------------------------------- sweeps


def children(pid: int) -> list[int]:
    """Live child processes of ``pid`` that are sweep workers (not multiprocessing's
    resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        state = stat.rsplit(")", 1)[1].split()[0]
        if ppid == pid and state != "Z" and b"resource_tracker" not in cmdline:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start_sweep(tmp_path: Path, steps: int, seeds=(0, 1), jobs: int = 2) -> subprocess.Popen:
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(tiny(optim={"max_steps": steps, "batch_size": 10})))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "base": "base.yaml", "seeds": list(seeds)}))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gradlab.cli",
            "sweep",
            str(path),
            "--jobs",
            str(jobs),
            "--runs-dir",
            str(tmp_path / "runs"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200"),
    )


def wait_for_runs(tmp_path: Path, count: int, rows: int = 5, timeout: float = 90) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        started = [
            p.parent
            for p in (tmp_path / "runs" / "s").glob("s-*/steps.csv")
            if len(p.read_text().splitlines()) > rows
        ]
        if len(started) >= count:
            return sorted(started)
        time.sleep(0.2)
    raise AssertionError("the runs never started")


@pytest.mark.parametrize(
    ("sig", "name"),
    [(signal.SIGKILL, "SIGKILL"), (signal.SIGRTMIN + 2, f"signal {signal.SIGRTMIN + 2}")],
)
def test_a_dying_worker_fails_only_its_own_run(tmp_path: Path, sig, name):
    proc = start_sweep(tmp_path, steps=6000)
    try:
        wait_for_runs(tmp_path, 2)
        workers = children(proc.pid)
        assert len(workers) == 2
        os.kill(workers[0], sig)  # the OOM killer, a segfault, a signal without a name
        out, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 1, err.decode()[-2000:]
    assert b"Traceback" not in err
    record = json.loads((tmp_path / "runs" / "s" / "sweep.json").read_text())
    statuses = sorted(r["status"] for r in record["runs"])
    assert statuses == ["done", "failed"]
    failed = next(r for r in record["runs"] if r["status"] == "failed")
    assert f"killed by {name}" in failed["error"]
    folder = tmp_path / "runs" / "s" / failed["folder"]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "failed" and name in summary["error"]
    assert summary["steps"] == int(read_csv(folder / "steps.csv")[-1]["step"]) > 0  # kept
    assert b"1 done, 1 failed" in out and b"2 runs" in out  # the comparison is printed


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_signal_to_the_sweep_stops_its_workers_and_records_the_truth(tmp_path, sig, code):
    proc = start_sweep(tmp_path, steps=10_000_000, seeds=(0, 1, 2))
    try:
        wait_for_runs(tmp_path, 2)
        workers = children(proc.pid)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, err.decode()[-2000:]
    assert b"Traceback" not in err
    time.sleep(1)
    assert not [w for w in workers if alive(w)], "a worker outlived the sweep"
    record = json.loads((tmp_path / "runs" / "s" / "sweep.json").read_text())
    assert [r["status"] for r in record["runs"]] == ["interrupted"] * 3
    for run in record["runs"][:2]:
        summary = json.loads((tmp_path / "runs" / "s" / run["folder"] / "summary.json").read_text())
        assert summary["status"] == "interrupted"
    assert record["runs"][2]["folder"] is None


def test_a_python_caller_of_a_sweep_gets_the_same_clean_stop(tmp_path: Path):
    """SIGTERM to a Python program running gradlab.run_sweep: the sweep stops as the CLI's
    does (runs interrupted with their logs, the queued one not started) and returns, with
    the signal's name in sweep.signal."""
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(tiny(optim={"max_steps": 10_000_000, "batch_size": 10})))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "base": "base.yaml", "seeds": [0, 1, 2]}))
    code = (
        "import json, gradlab\n"
        f"sweep = gradlab.load_sweep({str(path)!r})\n"
        f"gradlab.run_sweep(sweep, {str(tmp_path / 'runs')!r}, jobs=2)\n"
        "print(json.dumps([sweep.signal, [r.status for r in sweep.runs]]))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_for_runs(tmp_path, 2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert json.loads(out) == ["SIGTERM", ["interrupted"] * 3]
    record = json.loads((tmp_path / "runs" / "s" / "sweep.json").read_text())
    for run in record["runs"][:2]:
        summary = json.loads((tmp_path / "runs" / "s" / run["folder"] / "summary.json").read_text())
        assert summary["status"] == "interrupted" and summary["steps"] > 0
    assert record["runs"][2]["folder"] is None


def test_workers_do_not_outlive_a_killed_sweep(tmp_path: Path):
    proc = start_sweep(tmp_path, steps=10_000_000)
    try:
        folders = wait_for_runs(tmp_path, 2)
        workers = children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 60
        while any(alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        proc.kill()
        for w in children(proc.pid):
            os.kill(w, signal.SIGKILL)
    assert not [w for w in workers if alive(w)], "a worker outlived the sweep"
    for folder in folders:  # each worker stopped its run cleanly before it left
        assert json.loads((folder / "summary.json").read_text())["status"] == "interrupted"


def test_a_second_sweep_of_the_same_folder_stops_with_one_line(tmp_path: Path):
    proc = start_sweep(tmp_path, steps=10_000_000, seeds=(0,), jobs=1)
    try:
        wait_for_runs(tmp_path, 1)
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "gradlab.cli",
                "sweep",
                str(tmp_path / "sweep.yaml"),
                "--runs-dir",
                str(tmp_path / "runs"),
            ],
            capture_output=True,
            timeout=60,
        )
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert second.returncode == 2
    (line,) = second.stderr.decode().strip().splitlines()
    assert (
        line.startswith("error: another gradlab sweep is running in") and f"pid {proc.pid}" in line
    )
    assert len(list((tmp_path / "runs" / "s").glob("s-*"))) == 1  # nothing trained twice


# --------------------------------------------------------------------------- hostile files


def test_type_corrupt_run_files_are_warnings_never_tracebacks(tmp_path: Path, tiny_config):
    from typer.testing import CliRunner

    from gradlab.cli import app
    from gradlab.train import train

    runner = CliRunner()
    good = train(tiny_config(), tmp_path / "runs").path
    corruptions = {
        "meta-dataset": ("meta.json", lambda m: {**m, "dataset": "x", "amp": 3}),
        "alerts-strings": ("summary.json", lambda s: {**s, "alerts": {"vanishing": "many"}}),
        "summary-list": ("summary.json", lambda s: [1, 2]),
        "seed-text": ("config.yaml", None),
    }
    import shutil

    for name, (file, change) in corruptions.items():
        folder = tmp_path / "runs" / name
        shutil.copytree(good, folder)
        if change is None:
            text = (folder / file).read_text().replace("seed: 0", "seed: zero")
            (folder / file).write_text(text)
        else:
            (folder / file).write_text(json.dumps(change(json.loads((folder / file).read_text()))))
    (tmp_path / "runs" / "sweep.json").write_text(
        json.dumps({"runs": [{"folder": 5}], "history": 7})
    )
    result = runner.invoke(
        app, ["compare", str(tmp_path / "runs"), "--format", "json", "--no-group"]
    )
    assert result.exit_code == 0, result.output
    rows = {r["run"]: r for r in json.loads(result.stdout)}
    assert rows["alerts-strings"]["alerts"] is None  # a count that is not a number: unknown
    assert rows["meta-dataset"]["dataset"] == "mnist-sample"
    assert "Traceback" not in result.output
    warning = result.stderr
    assert "summary-list" in warning and "seed-text" in warning

    grads = good / "grads.csv"
    grads.write_text("step,param,what\n1,fc1.weight,3\n")
    result = runner.invoke(app, ["inspect", str(good)])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "unexpected columns (missing mean" in line


def test_concurrent_json_writers_never_show_a_reader_half_a_file(tmp_path: Path):
    """Writers in several processes replace one file while a reader reads it."""
    target = tmp_path / "sweep.json"
    code = (
        "import sys\nfrom pathlib import Path\nfrom gradlab.runlog import write_json\n"
        "for i in range(300):\n"
        "    write_json(Path(sys.argv[1]), {'writer': sys.argv[2], 'i': i, 'pad': 'x' * 20000})\n"
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", code, str(target), str(n)], stderr=subprocess.PIPE)
        for n in range(3)
    ]
    reads = broken = 0
    while any(w.poll() is None for w in writers):
        try:
            text = target.read_text()
        except FileNotFoundError:
            continue
        reads += 1
        try:
            json.loads(text)
        except ValueError:
            broken += 1
    errors = [w.stderr.read() for w in writers]
    assert [w.returncode for w in writers] == [0, 0, 0], errors
    assert reads > 0 and broken == 0
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def _tiny_file_limit():
    import resource

    resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def test_a_disk_full_from_the_start_is_one_error_line(tmp_path: Path):
    proc = start_training(tmp_path, preexec=_tiny_file_limit)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err.decode()
    (line,) = err.decode().strip().splitlines()
    assert line.startswith("error: cannot write the run folder") and "File too large" in line


def test_odd_files_in_run_folders_never_hang_or_crash(tmp_path: Path, tiny_config):
    import shutil

    from gradlab.train import train

    good = train(tiny_config(diagnostics={"every": 5}), tmp_path / "runs").path
    fifo = tmp_path / "runs" / "fifo-steps"
    shutil.copytree(good, fifo)
    (fifo / "summary.json").write_text(json.dumps({"status": "running", "pid": 10**30}))
    (fifo / "steps.csv").unlink()
    os.mkfifo(fifo / "steps.csv")
    huge = tmp_path / "runs" / "huge-numbers"
    shutil.copytree(good, huge)
    summary = json.loads((huge / "summary.json").read_text())
    (huge / "summary.json").write_text(
        json.dumps({**summary, "steps": 10**400, "alerts": {"vanishing": 10**400}})
    )
    zero = tmp_path / "runs" / "dev-zero"
    shutil.copytree(good, zero)
    (zero / "config.yaml").unlink()
    (zero / "config.yaml").symlink_to("/dev/zero")
    grads = (good / "grads.csv").read_text().splitlines()
    (good / "grads.csv").write_text("\n".join([*grads, "1e400" + grads[1][grads[1].index(",") :]]))
    code = "import sys\nfrom gradlab.cli import app\napp(sys.argv[1:])\n"
    outputs = {}
    for command, *args in (
        ["compare", str(tmp_path / "runs"), "--no-group", "-f", "json"],
        ["inspect", str(good)],
    ):
        out = subprocess.run(
            [sys.executable, "-c", code, command, *args], capture_output=True, timeout=60, text=True
        )
        assert "Traceback" not in out.stderr, out.stderr
        assert out.returncode == 0, out.stderr
        outputs[command] = out.stdout
    rows = json.loads(outputs["compare"])
    statuses = {r["run"]: r["status"] for r in rows}
    assert statuses["fifo-steps"] == "crashed"  # an impossible PID is no live process
    assert "dev-zero" not in statuses
