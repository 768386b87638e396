"""How long `gradlab compare` takes over many small run folders.

Creates N run folders (default 500: 25 configurations x 20 seeds, 400 steps each) with
gradlab's own run writer, then times the whole command (`gradlab compare DIR`, a fresh
process each time, so start-up is included) in each output format. Prints the median of
several repetitions. No network, no training: the metric values are synthetic.

    python benchmarks/compare_runs.py [--runs 500] [--repeat 5]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gradlab.config import config_from_dict
from gradlab.runlog import RunWriter
from gradlab.steplog import metric_columns, step_columns

PARAMS = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]


def write_runs(root: Path, count: int, steps: int) -> None:
    rng = random.Random(0)
    columns = step_columns(
        metric_columns(PARAMS, "full", use_scaler=False),
        ["edit0.clip_norm.norm", "edit0.clip_norm.scale", "edit0.clip_norm.changed"],
    )
    for i in range(count):
        config = config_from_dict(
            {
                "name": f"cfg{i % 25}",
                "seed": i // 25,
                "data": {"name": "mnist-sample"},
                "optim": {"lr": 0.01 * (1 + i % 25)},
                "edit": [{"type": "clip_norm", "max_norm": 1.0}],
            }
        )
        meta = {"edits": "clip_norm(1.0)", "dataset": {"name": "mnist-sample"}, "host": "bench"}
        run = RunWriter.create(root, config.name, config.to_yaml(), meta, columns)
        rows = [
            [s, 1 + s // 40, 0.01, *(rng.random() for _ in columns[3:-1]), s * 1e-3]
            for s in range(1, steps + 1)
        ]
        run.steps.append(rows)
        run.evals.append([[steps, 10, 0.5, 0.8 + rng.random() / 10, 1.0]])
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


def time_command(args: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="gradlab-bench-"))
    try:
        start = time.perf_counter()
        write_runs(root, args.runs, args.steps)
        print(
            f"wrote {args.runs} run folders of {args.steps} steps in {time.perf_counter() - start:.1f} s"
        )
        gradlab = [sys.executable, "-m", "gradlab.cli"]
        print(f"{'command':<52} {'median s':>9}")
        for extra in (
            [],
            ["--format", "csv"],
            ["--format", "json"],
            ["--no-group"],
            ["--baseline", "cfg0"],
            ["--baseline", "cfg0", "--power"],
        ):
            seconds = time_command([*gradlab, "compare", str(root), *extra], args.repeat)
            print(f"{'gradlab compare DIR ' + ' '.join(extra):<52} {seconds:>9.2f}")
        seconds = time_command([*gradlab, "--help"], args.repeat)
        print(f"{'gradlab --help':<52} {seconds:>9.2f}")
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
