"""What the probes cost: seconds per epoch with `diagnostics.probes` on, beside the same run
without them.

Full-size Fashion-MNIST (60,000 training images, in memory), the 784-100-10 ReLU MLP, SGD,
batch 256 (235 steps per epoch), `gradlab.train.train` itself (run folder, buffered
steps.csv, no gradient health, evaluation only at the end). Each run trains --warm-steps
steps, then the timed --epochs epochs (the difference of steps.csv's elapsed_s). Every
setting runs once per round, round after round, so all see the same machine; the table
shows the median over --reps rounds and the median of each probe's ratio to the run
without probes of its engine and logging mode, measured in the same rounds, then the best
(least) time of each and their ratio: on a shared machine noise only adds time.

    python benchmarks/probes.py [--reps 5] [--batch 256] [--threads N] [--data FOLDER] [--quick]
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from dp import DEFAULT_DATA, load, machine

from gradlab.config import config_from_dict
from gradlab.data import Dataset
from gradlab.train import train

GOAL = 1.10  # a probe costs at most 10% of a step
PROBES = {
    "none": [],
    "noise_scale": ["noise_scale"],
    "diversity": ["diversity"],
    "both": ["noise_scale", "diversity"],
}


def config(data: Dataset, args: argparse.Namespace, engine: str, log: str, probes: list[str]):
    steps = args.warm_steps + args.epochs * math.ceil(len(data.train_x) / args.batch)
    return config_from_dict(
        {
            "name": f"bench-{engine}-{log}-{'-'.join(probes) or 'none'}",
            "data": {"name": data.info.get("name", "fashion-mnist")},
            "model": {"hidden": 100, "activation": "relu"},
            "optim": {"lr": 0.01, "batch_size": args.batch, "max_steps": steps},
            "train": {"device": "cpu", "amp": "off", "engine": engine, "log": log,
                      "eval_every": 10**9},
            "diagnostics": {"every": 0, "probes": probes},
        }
    )  # fmt: skip


def seconds_per_epoch(data: Dataset, runs: Path, args: argparse.Namespace, cfg) -> float:
    result = train(cfg, runs, data=data)
    if result.summary["status"] != "completed":
        raise RuntimeError(f"{cfg.name}: {result.summary['status']}")
    rows = (result.path / "steps.csv").read_text().splitlines()
    shutil.rmtree(result.path)
    header = rows[0].split(",")
    elapsed = header.index("elapsed_s")
    last = args.warm_steps + args.epochs * math.ceil(len(data.train_x) / args.batch)
    first_t = float(rows[args.warm_steps].split(",")[elapsed])
    last_t = float(rows[last].split(",")[elapsed])
    return (last_t - first_t) / args.epochs


def step_costs(data: Dataset, args: argparse.Namespace) -> None:
    """The probes' own cost, measured inside one process: blocks of 20 steps with and without
    each probe, alternated 200 times (the same batches, model and machine moments), the
    median of the blocks' paired ratios of CPU time. The step is the loop's: the batch, the
    engine's forward and backward, the probes before the edits, the SGD update."""
    from gradlab.engines import make_engine
    from gradlab.model import MLP
    from gradlab.probes import ProbeSet, ProbeView

    cfg = config(data, args, "analytic", "loss", [])
    x_norms = torch.linalg.vector_norm(data.train_x, dim=1)
    print(f"\nper step, in one process (CPU time; {args.batch} examples a batch):")
    print(f"{'engine':<9} {'probes':<12} {'us/step':>8} {'+probe':>8} {'x none':>7}  (IQR)")
    for engine_name in ("analytic", "autograd"):
        torch.manual_seed(0)
        model = MLP(cfg.model)
        engine = make_engine(engine_name, model, torch.amp.GradScaler("cpu", enabled=False), None)
        weights = dict(model.named_parameters())
        names = list(weights)
        generator = torch.Generator().manual_seed(0)

        def block(
            probes: ProbeSet | None,
            steps: int = 20,
            engine=engine,
            weights=weights,
            generator=generator,
        ) -> float:
            start = time.process_time()
            for step in range(1, steps + 1):
                idx = torch.randint(0, len(data.train_x), (args.batch,), generator=generator)
                xb, yb = data.train_x.index_select(0, idx), data.train_y.index_select(0, idx)
                if probes is None:
                    engine.step(xb, yb)
                    values: list[torch.Tensor] = []
                else:
                    _, _, per_example = engine.measured_step(xb, yb, x_norms.index_select(0, idx))
                    grads = {n: w.grad for n, w in weights.items()}
                    view = ProbeView(
                        step, 0.01, torch.zeros(()), len(idx), grads, weights, per_example
                    )
                    probes.measure("before", view)
                    values = probes.values()
                if values:
                    torch.cat(values)
                with torch.no_grad():
                    torch._foreach_add_(
                        list(weights.values()), [w.grad for w in weights.values()], alpha=-0.01
                    )
            return (time.process_time() - start) / steps * 1e6

        for name, chosen in PROBES.items():
            if not chosen:
                continue
            from gradlab.probes import parse_probe

            probes = ProbeSet(
                [parse_probe(i, p) for i, p in enumerate(chosen)], names, torch.device("cpu")
            )
            plain, probed = [], []
            for _ in range(5):  # warm up
                block(None), block(probes)
            for _ in range(200):
                plain.append(block(None))
                probed.append(block(probes))
            ratios = sorted(b / a for a, b in zip(plain, probed, strict=True))
            base = statistics.median(plain)
            print(
                f"{engine_name:<9} {name:<12} {base:8.0f} {statistics.median(probed) - base:8.0f} "
                f"{statistics.median(ratios):7.3f}  ({ratios[50]:.3f}-{ratios[150]:.3f})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, help="measured rounds (default 5; --quick 3)")
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs per run")
    parser.add_argument("--warm-steps", type=int, default=20, help="untimed steps first")
    parser.add_argument("--batch", type=int, default=256, help="batch size (default 256)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--data", default=DEFAULT_DATA, help="folder of Fashion-MNIST IDX files")
    parser.add_argument("--quick", action="store_true", help="smoke test: mnist-sample, 3 rounds")
    args = parser.parse_args()
    args.reps = args.reps or (3 if args.quick else 5)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load(args)
    print(machine())
    print(
        f"data: {data.info.get('name')} ({len(data.train_x):,} training images); 784-100-10 "
        f"ReLU, SGD, batch {args.batch}; median of {args.reps} interleaved rounds"
    )
    settings = {
        (engine, log, name): config(data, args, engine, log, probes)
        for engine in ("analytic", "autograd")
        for log in ("loss", "full")
        for name, probes in PROBES.items()
    }
    times: dict[tuple[str, str, str], list[float]] = {key: [] for key in settings}
    ratios: dict[tuple[str, str, str], list[float]] = {key: [] for key in settings}
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.reps):
            measured = {
                key: seconds_per_epoch(data, Path(tmp), args, cfg) for key, cfg in settings.items()
            }
            for key, seconds in measured.items():
                times[key].append(seconds)
                ratios[key].append(seconds / measured[(key[0], key[1], "none")])
    print(
        f"\n{'engine':<9} {'log':<5} {'probes':<12} {'s/epoch':>8} {'x none':>7}  (range)"
        f"  {'best':>6} {'x none':>7}"
    )
    worst = 0.0
    for (engine, log, name), values in times.items():
        ratio = statistics.median(ratios[(engine, log, name)])
        low, high = min(ratios[(engine, log, name)]), max(ratios[(engine, log, name)])
        best = min(values)
        if name != "none":
            worst = max(worst, ratio)
        print(
            f"{engine:<9} {log:<5} {name:<12} {statistics.median(values):8.3f} {ratio:7.3f}"
            f"  ({low:.3f}-{high:.3f})  {best:6.3f} {best / min(times[(engine, log, 'none')]):7.3f}"
        )
    verdict = "met" if worst <= GOAL else "NOT met"
    print(f"\nworst median ratio {worst:.3f}: goal <= {GOAL} {verdict}")
    step_costs(data, args)
    print(f"benchmark time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
