"""What packing buys per run (issue 24, first part: the batched step): the time of one
training step per run, forward, backward and the SGD update, for R replicas packed into one
batched program against one run's step with gradlab's analytic engine and SGD, and the
single-run GEMM floor (the five matrix products a step needs, nothing else).

The 784-100-10 ReLU net, batch 256, float32, each replica's batch gathered from its own
permutation of a Fashion-MNIST-sized training set in memory (60,000 x 784). No logging, no
evaluation: the step alone. Every setting is timed in turn, round after round, and the table
shows medians over --reps rounds of --steps steps.

    python benchmarks/pack.py [--reps 5] [--steps 200] [--replicas 1,4,16,64] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from dp import machine

from gradlab.config import ModelConfig, OptimConfig
from gradlab.engines.analytic import AnalyticEngine
from gradlab.engines.packed import PackedAnalyticEngine, PackedSGD, stack_models
from gradlab.model import MLP
from gradlab.optimizers import make_optimizer

N, BATCH = 60_000, 256


def floor_step(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, d2: torch.Tensor):
    def step(idx: torch.Tensor) -> None:
        xb = x.index_select(0, idx)
        h = xb @ w1.t()
        _ = h @ w2.t()
        _ = d2.t() @ h
        d1 = d2 @ w2
        _ = d1.t() @ xb

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--replicas", default="1,4,16,64")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    counts = [int(r) for r in args.replicas.split(",")]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(N, 784, generator=g)
    y = torch.randint(0, 10, (N,), generator=g)
    cfg = ModelConfig(hidden=100)
    print(machine())
    print(
        f"784-100-10 ReLU, batch {BATCH}, float32; median of {args.reps} rounds of {args.steps} steps"
    )

    torch.manual_seed(0)
    single = MLP(cfg)
    engine = AnalyticEngine(single)
    optimizer = make_optimizer(dict(single.named_parameters()), OptimConfig(lr=0.01, momentum=0.9))
    perm = torch.randperm(N, generator=g)

    def single_step(step: int) -> None:
        idx = perm[(step * BATCH) % (N - BATCH) :][:BATCH]
        engine.step(x.index_select(0, idx), y.index_select(0, idx))
        optimizer.step()

    w1, w2 = torch.randn(100, 784), torch.randn(10, 100)
    floor = floor_step(x, w1, w2, torch.randn(BATCH, 10))

    packs = {}
    for r in counts:
        models = []
        for seed in range(r):
            torch.manual_seed(seed)
            models.append(MLP(cfg))
        weights, biases = stack_models(models)
        packed = PackedAnalyticEngine(weights, biases)
        params = [t for pair in zip(weights, biases, strict=True) for t in pair]
        grads = [
            t for pair in zip(packed.weight_grads, packed.bias_grads, strict=True) for t in pair
        ]
        lrs = torch.full((r,), 0.01)
        sgd = PackedSGD(params, lrs, torch.full((r,), 0.9), torch.zeros(r), torch.zeros(r))
        perms = torch.stack([torch.randperm(N, generator=g)[: BATCH * 50] for _ in range(r)])

        def packed_step(step: int, packed=packed, sgd=sgd, grads=grads, perms=perms) -> None:
            idx = perms[:, (step % 50) * BATCH :][:, :BATCH]
            packed.step(packed.gather(x, idx), y[idx])
            sgd.step(grads)

        packs[r] = packed_step

    def timed(fn, runs: int = 1) -> float:
        for step in range(5):
            fn(step)
        start = time.perf_counter()
        for step in range(args.steps):
            fn(step)
        return (time.perf_counter() - start) / args.steps / runs * 1e6

    results: dict[str, list[float]] = {
        "floor": [],
        "single": [],
        **{f"packed {r}": [] for r in counts},
    }
    for _ in range(args.reps):
        results["floor"].append(timed(lambda s: floor(perm[(s * BATCH) % (N - BATCH) :][:BATCH])))
        results["single"].append(timed(single_step))
        for r in counts:
            results[f"packed {r}"].append(timed(packs[r], r))
    base = statistics.median(results["floor"])
    print(f"\n{'loop':<12} {'us/step/run':>12} {'x floor':>8}")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"{name:<12} {median:12.0f} {median / base:8.2f}")


if __name__ == "__main__":
    main()
