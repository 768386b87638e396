"""Seconds per epoch of DP-SGD in gradlab, side by side with training without privacy and
with Opacus.

Full-size Fashion-MNIST (60,000 training images, already in memory), the 784-100-10 ReLU
MLP, SGD, batch 256: one epoch = ceil(60,000 / 256) = 235 steps. Every setting is measured
once per round, round after round (A, B, C, A, B, C, ...), so all of them see the same
machine conditions; the table shows the median over --reps rounds (and the range).

    python benchmarks/dp.py [--reps 5] [--epochs 1] [--threads N] [--data FOLDER] [--quick]

Settings:
  gradlab ...        `gradlab.train.train` itself (run folder, buffered steps.csv, no
                     diagnostics, no evaluation until the end), per engine, logging mode,
                     sampling and clipping. Each run trains --warm-steps steps, then the
                     timed --epochs epochs; the time is the difference of steps.csv's
                     elapsed_s at those two steps, so the run's setup, the final evaluation
                     and the privacy accounting are not in it (they are reported apart).
  PyTorch ...        a plain loop, nn.Sequential + torch.optim.SGD, no privacy: over
                     in-memory index batches (the floor), and over the DataLoader of a
                     TensorDataset that the Opacus rows read too.
  Opacus ...         PrivacyEngine().make_private(noise_multiplier=1.0, max_grad_norm=1.0)
                     over DataLoader(TensorDataset, batch_size=256) (Opacus turns it into
                     Poisson sampling), per grad_sample_mode. Opacus is slow: each round
                     times --opacus-steps steps and extrapolates to an epoch.

Private settings: noise_multiplier 1.0, max_grad_norm 1.0 (C), Poisson sampling; the
non-private gradlab runs use the same config with `privacy: null` (and Poisson sampling too,
so that only the privacy differs; one row with shuffled batches for reference).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gradlab.config import DataConfig, config_from_dict
from gradlab.data import Dataset, load_dataset

BATCH, HIDDEN, LR = 256, 100, 0.01
NOISE, CLIP = 1.0, 1.0
DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"
GOAL = 1.6  # DP-SGD should cost at most this many times a step without privacy

Measure = Callable[[], dict[str, float]]
"""Runs one measurement; returns at least ``s_epoch`` (seconds per epoch)."""


# --------------------------------------------------------------------------- data


def load(args: argparse.Namespace) -> Dataset:
    if args.quick:
        cfg = DataConfig(name="mnist-sample")
    else:
        cfg = DataConfig(name="fashion-mnist", root=args.data, download=False)
    return load_dataset(cfg, torch.device("cpu"))


# --------------------------------------------------------------------------- gradlab


def gradlab_config(
    data: Dataset,
    args: argparse.Namespace,
    engine: str,
    log: str,
    sampling: str,
    clipping: str | None,
) -> dict:
    """The run's config as plain data: ``clipping`` None = no privacy section."""
    steps_per_epoch = math.ceil(len(data.train_x) / BATCH)
    privacy = None
    if clipping is not None:
        privacy = {"noise_multiplier": NOISE, "max_grad_norm": CLIP, "clipping": clipping}
    return {
        "name": f"bench-{engine}-{log}-{sampling}-{clipping or 'nodp'}",
        "seed": 0,
        # data= is passed to train(): only the sampling is read from this section
        "data": {"name": data.info.get("name", "fashion-mnist"), "sampling": sampling},
        "model": {"hidden": HIDDEN, "activation": "relu"},
        "optim": {
            "name": "sgd",
            "lr": LR,
            "batch_size": BATCH,
            "max_steps": args.warm_steps + args.epochs * steps_per_epoch,
        },
        "train": {
            "device": "cpu",
            "amp": "off",
            "engine": engine,
            "log": log,
            "eval_every": 10**9,  # only the evaluation at the end, outside the timed steps
        },
        "diagnostics": {"every": 0},
        "edit": [],
        "privacy": privacy,
    }


def gradlab_measure(data: Dataset, runs: Path, args: argparse.Namespace, **setting) -> Measure:
    """One `train` run per call: seconds per epoch of its timed steps (steps.csv), plus what
    the run spends before its first step (``setup``) and after its last (``tail``: the
    final evaluation, the summary and, with privacy, the accountant)."""
    from gradlab.train import train

    config = config_from_dict(gradlab_config(data, args, **setting))
    steps_per_epoch = math.ceil(len(data.train_x) / BATCH)
    first, last = args.warm_steps, args.warm_steps + args.epochs * steps_per_epoch

    def measure() -> dict[str, float]:
        start = time.perf_counter()
        result = train(config, runs, data=data)
        call = time.perf_counter() - start
        summary = result.summary
        if summary["status"] != "completed" or summary["steps"] != last:
            raise RuntimeError(f"{config.name}: {summary['status']} after {summary['steps']}")
        with open(result.path / "steps.csv") as f:
            rows = f.read().splitlines()
        shutil.rmtree(result.path)
        header = rows[0].split(",")
        step_col, elapsed_col = header.index("step"), header.index("elapsed_s")
        elapsed = {}
        for row in (rows[first], rows[last]):
            cells = row.split(",")
            elapsed[int(cells[step_col])] = float(cells[elapsed_col])
        seconds = elapsed[last] - elapsed[first]
        wall = summary["wall_seconds"]
        return {
            "s_epoch": seconds / args.epochs,
            "setup": call - wall,
            "tail": wall - elapsed[last],
        }

    return measure


# --------------------------------------------------------------------------- PyTorch, Opacus


def torch_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(784, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 10))


def tensor_loader(data: Dataset, shuffle: bool) -> torch.utils.data.DataLoader:
    dataset = torch.utils.data.TensorDataset(data.train_x, data.train_y)
    return torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=shuffle)


def torch_index_measure(data: Dataset) -> Measure:
    """Plain PyTorch, no privacy, batches cut from the in-memory tensors: the floor."""
    model = torch_model()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    generator = torch.Generator().manual_seed(0)
    n = len(data.train_x)

    def measure() -> dict[str, float]:
        start = time.perf_counter()
        for idx in torch.randperm(n, generator=generator).split(BATCH):
            loss = F.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return {"s_epoch": time.perf_counter() - start}

    return measure


def torch_loader_measure(data: Dataset) -> Measure:
    """Plain PyTorch, no privacy, over DataLoader(TensorDataset, shuffle=True)."""
    model = torch_model()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loader = tensor_loader(data, shuffle=True)

    def measure() -> dict[str, float]:
        start = time.perf_counter()
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return {"s_epoch": time.perf_counter() - start}

    return measure


class Batches:
    """Endless batches from a loader: a new pass (epoch) starts when one ends."""

    def __init__(self, loader) -> None:
        self.loader, self.it = loader, iter(loader)

    def next(self):
        try:
            return next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            return next(self.it)


def opacus_measure(data: Dataset, args: argparse.Namespace, mode: str | None) -> Measure:
    """Opacus DP-SGD (``mode`` its grad_sample_mode), or with ``mode`` None only its
    DataLoader (Poisson batches of the TensorDataset, no training): --opacus-steps steps
    timed per call, extrapolated to an epoch."""
    from opacus import PrivacyEngine

    model = torch_model()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    kwargs = {
        "module": model,
        "optimizer": opt,
        "data_loader": tensor_loader(data, shuffle=False),
        "noise_multiplier": NOISE,
        "max_grad_norm": CLIP,
        "noise_generator": torch.Generator().manual_seed(0),
    }
    criterion = nn.CrossEntropyLoss()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # secure_mode, full backward hooks
        engine = PrivacyEngine(accountant="rdp")
        if mode == "ghost":
            model, opt, criterion, loader = engine.make_private(
                **kwargs, criterion=criterion, grad_sample_mode=mode
            )
        else:
            model, opt, loader = engine.make_private(**kwargs, grad_sample_mode=mode or "hooks")
    batches = Batches(loader)
    steps_per_epoch = len(loader)  # 1 / sample rate = ceil(N / 256)

    def step() -> None:
        x, y = batches.next()
        if mode is None:
            return
        loss = criterion(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(3):  # warm-up
            step()

    def measure() -> dict[str, float]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            for _ in range(args.opacus_steps):
                step()
            seconds = time.perf_counter() - start
        return {"s_epoch": seconds / args.opacus_steps * steps_per_epoch}

    return measure


# --------------------------------------------------------------------------- the table

REFERENCE = "gradlab analytic, no privacy, poisson, loss log"
SHUFFLED = "gradlab analytic, no privacy, shuffle, loss log"
DP_FLAT = "gradlab analytic, DP flat, loss log"


def settings(data: Dataset, runs: Path, args: argparse.Namespace) -> dict[str, tuple]:
    """Row name -> (factory of its Measure, the name of its non-private reference row)."""
    table: dict[str, tuple] = {}
    logs = ["loss", "full"] if not args.no_full_log else ["loss"]

    def gradlab(engine, log, sampling, clipping):
        return lambda: gradlab_measure(
            data, runs, args, engine=engine, log=log, sampling=sampling, clipping=clipping
        )

    for log in logs:
        for engine in ("analytic", "autograd"):
            base = f"gradlab {engine}, no privacy, poisson, {log} log"
            table[base] = (gradlab(engine, log, "poisson", None), None)
            table[f"gradlab {engine}, DP flat, {log} log"] = (
                gradlab(engine, log, "poisson", "flat"),
                base,
            )
    table[SHUFFLED] = (gradlab("analytic", "loss", "shuffle", None), None)
    table["gradlab analytic, DP flat, shuffle, loss log"] = (
        gradlab("analytic", "loss", "shuffle", "flat"),
        SHUFFLED,
    )
    table["gradlab analytic, DP per_layer, loss log"] = (
        gradlab("analytic", "loss", "poisson", "per_layer"),
        REFERENCE,
    )
    table["gradlab analytic, DP automatic, loss log"] = (
        gradlab("analytic", "loss", "poisson", "automatic"),
        REFERENCE,
    )
    table["PyTorch, no privacy, in-memory batches (floor)"] = (
        lambda: torch_index_measure(data),
        None,
    )
    table["PyTorch, no privacy, DataLoader(TensorDataset)"] = (
        lambda: torch_loader_measure(data),
        None,
    )
    if opacus_version() is not None:
        n = args.opacus_steps
        table[f"Opacus DPDataLoader alone (no training; {n} steps, extrapolated)"] = (
            lambda: opacus_measure(data, args, None),
            None,
        )
        for mode in ("hooks", "functorch", "ghost"):
            table[f"Opacus DP flat, grad_sample_mode={mode} ({n} steps, extrapolated)"] = (
                lambda mode=mode: opacus_measure(data, args, mode),
                None,
            )
    return table


def opacus_version() -> str | None:
    try:
        import opacus
    except ImportError:
        return None
    return opacus.__version__


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """The machine line every benchmark prints first: CPU, cores, platform, torch, threads."""
    return (
        f"machine: {cpu_name()}, {os.cpu_count()} cores ({platform.platform()}); torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, help="measured rounds (default 5; --quick 3)")
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs per gradlab run")
    parser.add_argument("--warm-steps", type=int, default=20, help="untimed steps first")
    parser.add_argument("--opacus-steps", type=int, help="timed Opacus steps (default 50)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--data", default=DEFAULT_DATA, help="folder of Fashion-MNIST IDX files")
    parser.add_argument("--no-full-log", action="store_true", help="only train.log: loss")
    parser.add_argument("--json", help="also write the raw timings to this file")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: mnist-sample, 3 rounds, 10 Opacus steps"
    )
    args = parser.parse_args()
    args.reps = args.reps or (3 if args.quick else 5)
    args.opacus_steps = args.opacus_steps or (10 if args.quick else 50)
    if args.threads:
        torch.set_num_threads(args.threads)

    began = time.perf_counter()
    data = load(args)
    n = len(data.train_x)
    steps_per_epoch = math.ceil(n / BATCH)
    print(f"{machine()}; opacus {opacus_version() or 'not installed'}")
    print(
        f"data: {data.info.get('name')} ({n:,} training images, in memory); 784-{HIDDEN}-10 "
        f"ReLU, SGD lr {LR}, batch {BATCH}: {steps_per_epoch} steps per epoch; DP: sigma "
        f"{NOISE}, C {CLIP}; median of {args.reps} rounds, settings interleaved; gradlab: "
        f"{args.epochs} timed epoch(s) after {args.warm_steps} warm-up steps per run; Opacus: "
        f"{args.opacus_steps} timed steps per round x {steps_per_epoch} / {args.opacus_steps}"
    )

    runs = Path(tempfile.mkdtemp(prefix="gradlab-dp-bench-"))
    try:
        table = settings(data, runs, args)
        measures = {name: make() for name, (make, _) in table.items()}
        results: dict[str, list[dict[str, float]]] = {name: [] for name in measures}
        for _ in range(args.reps):
            for name, measure in measures.items():
                results[name].append(measure())
    finally:
        shutil.rmtree(runs, ignore_errors=True)

    def median(name: str, key: str = "s_epoch") -> float:
        return statistics.median(r[key] for r in results[name])

    base = median(REFERENCE)
    print(
        f"\n| setting | s/epoch (median) | steps/s | x non-private (same engine, log, sampling) "
        f"| x {REFERENCE} | range s/epoch |"
    )
    print("|---|---|---|---|---|---|")
    for name, (_, reference) in table.items():
        seconds = median(name)
        values = [r["s_epoch"] for r in results[name]]
        ratio = f"{seconds / median(reference):.2f}" if reference else "-"
        print(
            f"| {name} | {seconds:.3f} | {steps_per_epoch / seconds:,.0f} | {ratio} "
            f"| {seconds / base:.2f} | {min(values):.3f}-{max(values):.3f} |"
        )

    print()
    for name, (_, reference) in table.items():
        if reference and "flat" in name and "shuffle" not in name:
            ratio = median(name) / median(reference)
            verdict = "met" if ratio <= GOAL else "NOT met"
            print(f"goal DP <= {GOAL}x non-DP: {name}: {ratio:.2f}x, {verdict}")
    print(
        f"{DP_FLAT} against {SHUFFLED} (gradlab's default sampling without privacy): "
        f"{median(DP_FLAT) / median(SHUFFLED):.2f}x; Poisson sampling alone costs "
        f"{median(REFERENCE) / median(SHUFFLED):.2f}x shuffled batches without privacy"
    )
    gradlab_rows = [name for name in table if name.startswith("gradlab")]
    private = [name for name in gradlab_rows if ", DP " in name]
    public = [name for name in gradlab_rows if name not in private]
    for label, names in (("without privacy", public), ("with privacy", private)):
        setup = statistics.median(median(name, "setup") for name in names)
        tail = statistics.median(median(name, "tail") for name in names)
        print(
            f"not in the table, per gradlab run {label}: {setup:.2f} s before the first step "
            f"(run folder, model{', accountant' if label == 'with privacy' else ''}), "
            f"{tail:.2f} s after the last (final evaluation, summary"
            f"{', epsilon' if label == 'with privacy' else ''}) (medians)"
        )
    noisy = [
        name
        for name, rows in results.items()
        if max(r["s_epoch"] for r in rows) > 2 * min(r["s_epoch"] for r in rows)
    ]
    if noisy:
        print(
            f"warning: {len(noisy)} of {len(results)} rows vary more than 2x between rounds "
            "(a busy machine; with other work on the cores, try --threads 1 and more --reps)"
        )
    print(
        "Opacus rows: extrapolated from "
        f"{args.opacus_steps} steps per round to {steps_per_epoch} steps"
    )
    print(f"benchmark took {time.perf_counter() - began:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
