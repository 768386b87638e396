"""How long `gradlab compare`, its plot and `gradlab report` take over many run folders.

Creates run folders (25 configurations x N/25 seeds, 400 steps each, with the grads.csv of
default diagnostics and an evals.csv per epoch) with gradlab's own run writer, then times
whole commands (a fresh process each time, so start-up is included):

- over ``--runs`` folders (default 500): `gradlab compare DIR` in each output format;
- over ``--large`` folders (default 2,000; 0 skips it): `gradlab compare DIR`, with
  `--plot FILE.png`, and `gradlab report DIR`, each with its peak memory (the process's
  maximum resident set).

Prints the median of several repetitions. No network, no training: the values are synthetic.

    python benchmarks/compare_runs.py [--runs 500] [--large 2000] [--repeat 5] [--large-repeat 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PARAMS = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
CONFIGS = 25
STEPS_PER_EPOCH = 40
CHECK_EVERY = 50  # diagnostics.every's default


def write_runs(root: Path, count: int, steps: int) -> None:
    """``count`` completed run folders of ``steps`` steps under ``root``: CONFIGS
    configurations, each with count / CONFIGS seeds. (Its imports load torch: they are
    here, so that the process that times the commands stays small; see write_apart.)"""
    from gradlab.config import config_from_dict
    from gradlab.diagnostics import GRADS_COLUMNS
    from gradlab.runlog import ALERTS_COLUMNS, ALERTS_FILE, GRADS_FILE, RunWriter
    from gradlab.steplog import metric_columns, step_columns

    rng = random.Random(0)
    columns = step_columns(
        metric_columns(PARAMS, "full", use_scaler=False),
        ["edit0.clip_norm.norm", "edit0.clip_norm.scale", "edit0.clip_norm.changed"],
    )
    checks = sorted({2**k for k in range(12) if 2**k < CHECK_EVERY} | set(range(50, steps + 1, 50)))
    for i in range(count):
        config = config_from_dict(
            {
                "name": f"cfg{i % CONFIGS}",
                "seed": i // CONFIGS,
                "data": {"name": "mnist-sample"},
                "optim": {"lr": 0.01 * (1 + i % CONFIGS)},
                "edit": [{"type": "clip_norm", "max_norm": 1.0}],
            }
        )
        meta = {"edits": "clip_norm(1.0)", "dataset": {"name": "mnist-sample"}, "host": "bench"}
        run = RunWriter.create(root, config.name, config.to_yaml(), meta, columns)
        grads = run.add_log(GRADS_FILE, GRADS_COLUMNS)
        alerts = run.add_log(ALERTS_FILE, ALERTS_COLUMNS)
        rows = [
            [s, 1 + s // STEPS_PER_EPOCH, 0.01, *(rng.random() for _ in columns[3:-1]), s * 1e-3]
            for s in range(1, steps + 1)
        ]
        run.steps.append(rows)
        grads.append(
            [
                [s, p, *(rng.random() for _ in GRADS_COLUMNS[2:])]
                for s in checks
                if s <= steps
                for p in PARAMS
            ]
        )
        if i % 10 == 0:
            alerts.append([[checks[-1], "exploding", "fc1.weight", 120.0, 100.0, "norm 120"]])
        epochs = range(STEPS_PER_EPOCH, steps + 1, STEPS_PER_EPOCH)
        run.evals.append(
            [
                [s, s // STEPS_PER_EPOCH, rng.random(), 0.8 + rng.random() / 10, s * 1e-3]
                for s in epochs
            ]
        )
        run.write_summary(
            {
                "status": "completed",
                "steps": steps,
                "final_test_accuracy": 0.8 + rng.random() / 10,
                "best_test_accuracy": 0.9,
                "final_train_loss": rng.random(),
                "grad_norm_mean": rng.random(),
                "grad_norm_max": 2 * rng.random(),
                "edit_changed_frac": rng.random(),
                "steps_per_second": 1000 * rng.random(),
            }
        )
        run.close()


def write_apart(root: Path, count: int, steps: int) -> None:
    """:func:`write_runs` in a process of its own: a command's peak memory (``ru_maxrss``)
    starts from that of the process that forked it, so this one must stay small."""
    writer = multiprocessing.get_context("spawn").Process(
        target=write_runs, args=(root, count, steps)
    )
    writer.start()
    writer.join()
    if writer.exitcode:
        raise SystemExit(f"writing the run folders failed (exit code {writer.exitcode})")


def run_once(args: list[str]) -> tuple[float, float]:
    """Seconds and peak resident memory (MB) of one run of the command ``args``."""
    start = time.perf_counter()
    child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise subprocess.CalledProcessError(child.returncode, args)
    return seconds, usage.ru_maxrss / 1024  # kilobytes on Linux


def time_command(args: list[str], repeat: int) -> tuple[float, float]:
    """Median seconds and median peak MB over ``repeat`` runs of ``args``."""
    runs = [run_once(args) for _ in range(repeat)]
    return statistics.median(s for s, _ in runs), statistics.median(m for _, m in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--large", type=int, default=2000, help="0: skip the large study")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--large-repeat", type=int, default=3)
    args = parser.parse_args()

    gradlab = [sys.executable, "-m", "gradlab.cli"]
    tmp = Path(tempfile.mkdtemp(prefix="gradlab-bench-"))
    try:
        root = tmp / "runs"
        start = time.perf_counter()
        write_apart(root, args.runs, args.steps)
        print(
            f"wrote {args.runs} run folders of {args.steps} steps "
            f"in {time.perf_counter() - start:.1f} s"
        )
        print(f"{'command':<52} {'median s':>9}")
        for extra in (
            [],
            ["--format", "csv"],
            ["--format", "json"],
            ["--no-group"],
            ["--baseline", "cfg0"],
            ["--baseline", "cfg0", "--power"],
        ):
            seconds, _ = time_command([*gradlab, "compare", str(root), *extra], args.repeat)
            print(f"{'gradlab compare DIR ' + ' '.join(extra):<52} {seconds:>9.2f}")
        seconds, _ = time_command([*gradlab, "--help"], args.repeat)
        print(f"{'gradlab --help':<52} {seconds:>9.2f}")
        if args.large > 0:
            large = tmp / "large"
            start = time.perf_counter()
            write_apart(large, args.large, args.steps)
            print(
                f"\nwrote {args.large} run folders of {args.steps} steps "
                f"in {time.perf_counter() - start:.1f} s"
            )
            print(f"{'command':<52} {'median s':>9} {'peak MB':>8}")
            for name, command in (
                ("gradlab compare DIR", ["compare", str(large)]),
                ("gradlab compare DIR --plot FILE.png", ["compare", str(large), "--plot", str(tmp / "plot.png")]),
                ("gradlab report DIR -o FILE.html", ["report", str(large), "-o", str(tmp / "report.html")]),
            ):  # fmt: skip
                seconds, peak = time_command([*gradlab, *command], args.large_repeat)
                print(f"{name:<52} {seconds:>9.2f} {peak:>8.0f}")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
