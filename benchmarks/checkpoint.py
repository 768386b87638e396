"""What checkpoints cost: the time one takes inside a run, its size, and what the default
interval (``train.checkpoint_every: 0``, about once a minute) costs a run.

Full-size Fashion-MNIST (60,000 training images, in memory), the 784-100-10 ReLU MLP, SGD
with momentum (its buffers are in the checkpoint), batch 256, full logging, gradient health
every 50 steps; ``gradlab.train.train`` itself. Each round trains the same --steps twice,
with the default interval (no checkpoint falls in so short a run) and with a checkpoint
every --every steps, and times the loop (steps.csv's elapsed_s at the last step). The cost
of one checkpoint is the median over --reps rounds of the difference per checkpoint; the
default's share of training time is that cost over 60 s. The file's size and the time of
``write_checkpoint`` alone (serialize, fsync, rename) are measured too.

    python benchmarks/checkpoint.py [--reps 5] [--steps 1000] [--every 20] [--data FOLDER] [--quick]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

import torch
from dp import DEFAULT_DATA, load, machine

from gradlab.checkpoint import CHECKPOINT_SECONDS, read_checkpoint_file, write_checkpoint
from gradlab.config import config_from_dict
from gradlab.data import Dataset
from gradlab.train import train

GOAL = 0.02  # the default interval costs at most 2% of training time


def config(data: Dataset, args: argparse.Namespace, every: int):
    return config_from_dict(
        {
            "name": f"bench-checkpoint-{every}",
            "data": {"name": data.info.get("name", "fashion-mnist")},
            "model": {"hidden": 100, "activation": "relu"},
            "optim": {"lr": 0.01, "momentum": 0.9, "batch_size": 256, "max_steps": args.steps},
            "train": {"device": "cpu", "amp": "off", "eval_every": 10**9,
                      "checkpoint_every": every},
        }
    )  # fmt: skip


def loop_seconds(data: Dataset, runs: Path, cfg) -> tuple[float, Path]:
    """The loop's time (elapsed_s of the last step) and the run folder."""
    result = train(cfg, runs, data=data)
    rows = (result.path / "steps.csv").read_text().splitlines()
    elapsed = rows[0].split(",").index("elapsed_s")
    return float(rows[-1].split(",")[elapsed]), result.path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, help="measured rounds (default 5; --quick 3)")
    parser.add_argument("--steps", type=int, default=1000, help="steps per run")
    parser.add_argument("--every", type=int, default=20, help="the dense interval, in steps")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--data", default=DEFAULT_DATA, help="folder of Fashion-MNIST IDX files")
    parser.add_argument("--quick", action="store_true", help="smoke test: mnist-sample, 3 rounds")
    args = parser.parse_args()
    args.reps = args.reps or (3 if args.quick else 5)
    if args.quick:
        args.steps = min(args.steps, 200)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load(args)
    print(machine())
    print(
        f"data: {data.info.get('name')} ({len(data.train_x):,} training images); 784-100-10 "
        f"ReLU, SGD + momentum, batch 256, {args.steps} steps; median of {args.reps} rounds"
    )
    plain_cfg, dense_cfg = config(data, args, 0), config(data, args, args.every)
    checkpoints = (args.steps - 1) // args.every  # none at the last step: the run ends there
    plain, dense, per_checkpoint = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        loop_seconds(data, Path(tmp), plain_cfg)  # warm up
        for _ in range(args.reps):
            a, _ = loop_seconds(data, Path(tmp), plain_cfg)
            b, _ = loop_seconds(data, Path(tmp), dense_cfg)
            plain.append(a)
            dense.append(b)
            per_checkpoint.append((b - a) / checkpoints)
        # the file itself: a run stopped by hand keeps one
        stopped = train(config(data, args, args.every), Path(tmp), data=data,
                        on_progress=lambda p: os.kill(os.getpid(), signal.SIGINT) if p.step > 50 else None)  # fmt: skip
        size = (stopped.path / "checkpoint.pt").stat().st_size
        state = read_checkpoint_file(stopped.path / "checkpoint.pt")
        writes = []
        for _ in range(20):
            start = time.perf_counter()
            write_checkpoint(Path(tmp), state)
            writes.append(time.perf_counter() - start)
    cost = statistics.median(per_checkpoint)
    share = max(cost, 0.0) / CHECKPOINT_SECONDS
    print(f"\ncheckpoint file: {size / 1024:.0f} KB (weights, momentum, every generator, logs)")
    print(f"write_checkpoint alone: {statistics.median(writes) * 1e3:.1f} ms (median of 20)")
    print(
        f"loop, default interval: {statistics.median(plain):.3f} s; every {args.every} steps "
        f"({checkpoints} checkpoints): {statistics.median(dense):.3f} s "
        f"(x{statistics.median(dense) / statistics.median(plain):.3f})"
    )
    print(
        f"one checkpoint in a run: {cost * 1e3:.1f} ms (range {min(per_checkpoint) * 1e3:.1f}-"
        f"{max(per_checkpoint) * 1e3:.1f})"
    )
    verdict = "met" if share <= GOAL else "NOT met"
    print(
        f"default interval (one per {CHECKPOINT_SECONDS:.0f} s of training): {share:.3%} of "
        f"training time; goal <= {GOAL:.0%}: {verdict}"
    )


if __name__ == "__main__":
    main()
