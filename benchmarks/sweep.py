"""Wall time of a 12-run sweep with 1 and 2 local jobs, and Ray's overhead per run.

12 runs = 4 configurations x 3 seeds on the offline MNIST sample, 400 steps each. Each sweep
starts from an empty folder (nothing to resume). Ray: the same sweep on a local Ray
(`ray.init(num_cpus=2)`), and 12 one-step runs to isolate the cost per task.

    python benchmarks/sweep.py
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import yaml

from gradlab.sweeps.plan import load_sweep
from gradlab.sweeps.run import run_sweep

SWEEP = {
    "name": "bench",
    "base": {
        "data": {"name": "mnist-sample"},
        "optim": {"lr": 0.1, "batch_size": 100, "epochs": 10},
        "train": {"device": "cpu"},
    },
    "list": [
        {"edit": []},
        {"edit": [{"type": "clip_norm", "max_norm": 1.0}]},
        {"edit": [{"type": "mask", "p": 0.5}]},
        {"edit": [{"type": "noise", "sigma": 0.01}]},
    ],
    "seeds": [0, 1, 2],
}


def timed_sweep(root: Path, spec: dict, **kwargs) -> float:
    path = root / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    runs = root / f"runs-{time.monotonic_ns()}"
    start = time.perf_counter()
    folder = run_sweep(load_sweep(path), runs, **kwargs)
    seconds = time.perf_counter() - start
    shutil.rmtree(folder.parent)
    return seconds


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="gradlab-sweep-bench-"))
    try:
        one = timed_sweep(root, SWEEP, jobs=1)
        two = timed_sweep(root, SWEEP, jobs=2)
        print("12 runs of 400 steps (mnist-sample), local executor, 2-core machine:")
        print(f"  --jobs 1: {one:6.1f} s")
        print(f"  --jobs 2: {two:6.1f} s   ({one / two:.2f}x faster)")
        try:
            import ray  # noqa: F401
        except ImportError:
            print("Ray: not installed (pip install 'gradlab[ray]')")
            return
        ray_full = timed_sweep(root, SWEEP, executor="ray", jobs=2)
        tiny = {**SWEEP, "base": {**SWEEP["base"], "optim": {"max_steps": 1}}}
        ray_tiny = timed_sweep(root, tiny, executor="ray", jobs=2)
        local_tiny = timed_sweep(root, tiny, jobs=2)
        print(f"  ray (local, 2 CPUs): {ray_full:6.1f} s")
        print("12 one-step runs (the cost around a run, not the training):")
        print(
            f"  local --jobs 2: {local_tiny:5.1f} s  ({local_tiny / 12:.2f} s per run, worker start-up included)"
        )
        print(
            f"  ray, 2 CPUs:    {ray_tiny:5.1f} s  ({ray_tiny / 12:.2f} s per run, Ray start-up included)"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
