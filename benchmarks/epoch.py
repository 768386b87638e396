"""Seconds per epoch of the 784-100-10 network, side by side, against the compute floor.

One epoch = 600 steps of batch 100 over synthetic full-size data (60,000 x 784, already in
memory; no download). Every loop runs one epoch per round, round after round (one warm-up
round, then --rounds measured ones), so all loops see the same machine conditions; the
table shows the median. Then, in a fresh process per loop, the resident memory an epoch adds on top of the data and
the model (sampled every millisecond, after a warm-up epoch).

    python benchmarks/epoch.py [--rounds 5] [--no-memory] [--quick]

Loops:
  floor              the matrix products one step needs, nothing else
  tutorial           torchvision-style Dataset + ToTensor + DataLoader, autograd, optim.SGD
  autograd           plain PyTorch: in-memory batches, autograd, optim.SGD
  autograd+item      the same with loss.item() logged every step
  gradlab ...        `gradlab train` itself (run folder, buffered logging, evaluation at the
                     end excluded), per engine, per logging mode, with and without clip_norm
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gradlab.config import ModelConfig, config_from_dict
from gradlab.data import Dataset
from gradlab.model import TwoLayerNet

N_TRAIN, N_TEST, BATCH, HIDDEN = 60_000, 10_000, 100, 100
STEPS = N_TRAIN // BATCH


def synthetic_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N_TRAIN + N_TEST, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, N_TRAIN + N_TEST)
    return images, labels


def as_dataset(images: np.ndarray, labels: np.ndarray) -> Dataset:
    x = torch.from_numpy(images).reshape(len(images), -1).float().div_(255)
    y = torch.from_numpy(labels)
    return Dataset(x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:], {"name": "synthetic"})


# --------------------------------------------------------------------------- loops
# each factory returns a function that runs one epoch and returns its seconds


def floor_loop(data: Dataset):
    """Forward: two addmm; backward: the three products for dW2, dh and dW1."""
    W1, b1 = torch.randn(HIDDEN, 784) * 0.03, torch.zeros(HIDDEN)
    W2, b2 = torch.randn(10, HIDDEN) * 0.1, torch.zeros(10)
    x = data.train_x[:BATCH].clone()
    dz2, dz1 = torch.randn(BATCH, 10), torch.randn(BATCH, HIDDEN)

    def epoch() -> float:
        start = time.perf_counter()
        for _ in range(STEPS):
            h = torch.addmm(b1, x, W1.t())
            torch.addmm(b2, h, W2.t())
            torch.mm(dz2.t(), h)
            torch.mm(dz2, W2)
            torch.mm(dz1.t(), x)
        return time.perf_counter() - start

    return epoch


def tutorial_loop(images: np.ndarray, labels: np.ndarray):
    """The reference tutorial's input pipeline: a Dataset of PIL images, ToTensor, DataLoader."""
    from PIL import Image
    from torch.utils.data import DataLoader
    from torchvision import transforms

    class Digits(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return N_TRAIN

        def __getitem__(self, i: int):
            return transforms.ToTensor()(Image.fromarray(images[i], mode="L")), int(labels[i])

    loader = DataLoader(Digits(), batch_size=BATCH, shuffle=True)
    model = TwoLayerNet(ModelConfig(hidden=HIDDEN))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def epoch() -> float:
        start = time.perf_counter()
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return time.perf_counter() - start

    return epoch


def autograd_loop(data: Dataset, log_item: bool, device: torch.device | None = None):
    device = device or torch.device("cpu")
    model = TwoLayerNet(ModelConfig(hidden=HIDDEN)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    generator = torch.Generator().manual_seed(0)

    def epoch() -> float:
        start = time.perf_counter()
        losses = []
        for idx in torch.randperm(N_TRAIN, generator=generator).to(device).split(BATCH):
            loss = F.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if log_item:
                losses.append(loss.item())
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return epoch


def gradlab_loop(
    data: Dataset,
    runs: Path,
    engine: str,
    log: str,
    clip: bool,
    diagnostics: int = 50,
    device: str = "cpu",
    amp: str = "off",
):
    """The second epoch of a 2-epoch `gradlab train` run (the first warms the run up), from
    the elapsed_s of the last step of each epoch in steps.csv (no evaluation in between)."""
    from gradlab.train import train

    raw = {
        "name": f"bench-{engine}-{log}",
        "optim": {"lr": 0.01, "batch_size": BATCH, "epochs": 2},
        "train": {
            "device": device,
            "amp": amp,
            "engine": engine,
            "log": log,
            "eval_every": 10**9,
        },
        "diagnostics": {"every": diagnostics},
        "edit": [{"type": "clip_norm", "max_norm": 1.0}] if clip else [],
    }
    config = config_from_dict(raw)

    def epoch() -> float:
        result = train(config, runs, data=data)
        with open(result.path / "steps.csv") as f:
            rows = f.read().splitlines()
        shutil.rmtree(result.path)
        elapsed = [float(rows[s].rsplit(",", 1)[-1]) for s in (STEPS, 2 * STEPS)]
        return elapsed[1] - elapsed[0]

    return epoch


def loops(data: Dataset, images, labels, runs: Path, quick: bool) -> dict:
    """Loop name -> a factory that builds it (so --only builds just one)."""
    table = {
        "floor (matrix products only)": lambda: floor_loop(data),
        "tutorial (Dataset+ToTensor+DataLoader)": lambda: tutorial_loop(images, labels),
        "plain autograd + optim.SGD": lambda: autograd_loop(data, log_item=False),
        "plain autograd + .item() every step": lambda: autograd_loop(data, log_item=True),
        "gradlab autograd, full log, clip_norm": lambda: gradlab_loop(
            data, runs, "autograd", "full", True
        ),
        "gradlab analytic, full log, clip_norm": lambda: gradlab_loop(
            data, runs, "analytic", "full", True
        ),
        "gradlab analytic, full log, no edit": lambda: gradlab_loop(
            data, runs, "analytic", "full", False
        ),
        "gradlab analytic, full log, clip, no diagnostics": lambda: gradlab_loop(
            data, runs, "analytic", "full", True, diagnostics=0
        ),
        "gradlab analytic, loss log, clip_norm": lambda: gradlab_loop(
            data, runs, "analytic", "loss", True
        ),
        "gradlab analytic, loss log, no edit": lambda: gradlab_loop(
            data, runs, "analytic", "loss", False
        ),
    }
    if quick:
        del table["tutorial (Dataset+ToTensor+DataLoader)"]
    return table


# --------------------------------------------------------------------------- CUDA


def cuda_graph_report() -> str:
    """Steps/s of the analytic step captured in a CUDA graph vs plain autograd on the GPU,
    or why it was skipped."""
    if not torch.cuda.is_available():
        return "skipped: no CUDA device on this machine"
    from gradlab.engines import AnalyticEngine

    device = torch.device("cuda")
    x = torch.rand(BATCH, 784, device=device)
    y = torch.randint(0, 10, (BATCH,), device=device)
    model = TwoLayerNet(ModelConfig(hidden=HIDDEN)).to(device)
    engine = AnalyticEngine(model)
    params = list(model.parameters())

    @torch.no_grad()
    def step():
        engine.step(x, y)
        grads = [p.grad for p in params]
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        torch._foreach_mul_(grads, torch.clamp(1.0 / (norm + 1e-6), max=1.0))
        torch._foreach_add_(params, grads, alpha=-0.01)

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()

    def rate(fn, n=2000) -> float:
        fn()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
        return n / (time.perf_counter() - start)

    reference = TwoLayerNet(ModelConfig(hidden=HIDDEN)).to(device)
    opt = torch.optim.SGD(reference.parameters(), lr=0.01)

    def autograd_step():
        loss = F.cross_entropy(reference(x), y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
        opt.step()

    graphed, plain = rate(graph.replay), rate(autograd_step)
    name = torch.cuda.get_device_name(device)
    return f"{name}: CUDA graph of the analytic step {graphed:,.0f} steps/s, plain autograd {plain:,.0f} steps/s ({graphed / plain:.1f}x)"


def cuda_train_report(runs: Path, rounds: int) -> str:
    """Seconds per epoch of `gradlab train` itself on the GPU (data already on the device),
    per engine and AMP mode, against a plain autograd loop on the same GPU."""
    if not torch.cuda.is_available():
        return "skipped: no CUDA device on this machine"
    images, labels = synthetic_data()
    data = as_dataset(images, labels)
    device = torch.device("cuda")
    data = Dataset(
        data.train_x.to(device),
        data.train_y.to(device),
        data.test_x.to(device),
        data.test_y.to(device),
        data.info,
    )
    table = {
        "plain autograd + optim.SGD (cuda)": autograd_loop(data, log_item=False, device=device),
        "gradlab fp16 autograd (auto), full log, clip_norm": gradlab_loop(
            data, runs, "autograd", "full", True, device="cuda", amp="fp16"
        ),
        "gradlab fp32 autograd, full log, clip_norm": gradlab_loop(
            data, runs, "autograd", "full", True, device="cuda"
        ),
        "gradlab fp32 analytic, full log, clip_norm": gradlab_loop(
            data, runs, "analytic", "full", True, device="cuda"
        ),
        "gradlab fp32 analytic, loss log, no edit": gradlab_loop(
            data, runs, "analytic", "loss", False, device="cuda"
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in table}
    for round_ in range(rounds + 1):
        for name, epoch in table.items():
            seconds = epoch()
            if round_:
                times[name].append(seconds)
    lines = [f"{torch.cuda.get_device_name(device)}, median of {rounds} epochs"]
    lines += ["| loop (cuda) | s/epoch | steps/s |", "|---|---|---|"]
    for name, values in times.items():
        median = statistics.median(values)
        lines.append(f"| {name} | {median:.3f} | {STEPS / median:,.0f} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- extras


def resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def extra_memory_during(epoch) -> float:
    """Highest resident memory while ``epoch`` runs, above what the process held before it
    (data and model excluded), sampled every millisecond."""
    import threading

    before, peak, running = resident_mib(), [0.0], [True]

    def sample() -> None:
        while running[0]:
            peak[0] = max(peak[0], resident_mib())
            time.sleep(0.001)

    thread = threading.Thread(target=sample)
    thread.start()
    try:
        epoch()
    finally:
        running[0] = False
        thread.join()
    return max(0.0, peak[0] - before)


def peak_memory_mib(name: str, quick: bool) -> float:
    """Resident memory a loop's epoch adds, in a fresh process (after a warm-up epoch)."""
    out = subprocess.run(
        [sys.executable, __file__, "--only", name] + (["--quick"] if quick else []),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


def run_folder_bytes_per_1000_steps(data: Dataset, runs: Path) -> float:
    from gradlab.train import train

    config = config_from_dict(
        {
            "optim": {"batch_size": BATCH, "max_steps": 1000},
            "train": {"device": "cpu"},
            "edit": [{"type": "clip_norm", "max_norm": 1.0}],
        }
    )
    result = train(config, runs, data=data)
    size = sum(f.stat().st_size for f in result.path.iterdir())
    shutil.rmtree(result.path)
    return size


def evaluation_report(data: Dataset, rounds: int) -> str:
    """One evaluation of the 10,000 test examples, as ``gradlab train`` runs it (inference
    mode), against the same function with autograd on (what it did before the decorator
    moved onto it): median seconds and the resident memory it adds, side by side, for the
    study's network and a wide one, whose graph held over smaller batches shows in memory."""
    from gradlab.train import evaluate

    lines = []
    for hidden, batch in ((HIDDEN, 10_000), (2048, 10_000), (2048, 1000)):
        model = TwoLayerNet(ModelConfig(hidden=hidden))
        model.eval()

        def inference(model=model, batch=batch) -> None:
            evaluate(model, data.test_x, data.test_y, batch, None)

        def with_autograd(model=model, batch=batch) -> None:
            with torch.enable_grad():
                evaluate.__wrapped__(model, data.test_x, data.test_y, batch, None)

        cases = {"inference mode (now)": inference, "autograd on (before)": with_autograd}
        for run in cases.values():
            run()  # warm-up
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(max(3, rounds)):
            for name, run in cases.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
        memory = {name: extra_memory_during(run) for name, run in cases.items()}
        lines.append(
            f"784-{hidden}-10, batches of {batch:,}: "
            + "; ".join(
                f"{name} {statistics.median(times[name]) * 1000:.1f} ms, "
                f"+{memory[name]:.0f} MiB RSS"
                for name in cases
            )
        )
    return "\n  ".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--quick", action="store_true", help="no tutorial loop, no extras")
    parser.add_argument("--only", help=argparse.SUPPRESS)  # one loop, one epoch, print peak memory
    args = parser.parse_args()

    images, labels = synthetic_data()
    data = as_dataset(images, labels)
    runs = Path(tempfile.mkdtemp(prefix="gradlab-epoch-"))
    try:
        factories = loops(data, images, labels, runs, args.quick)
        if args.only:
            epoch = factories[args.only]()
            epoch()  # warm-up: lazily allocated work tensors, worker pools
            print(json.dumps({"peak_mib": extra_memory_during(epoch)}))
            return

        print(
            f"machine: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads; "
            f"{STEPS} steps of batch {BATCH}, 784-{HIDDEN}-10, median of {args.rounds} epochs after 1 warm-up"
        )
        table = {name: make() for name, make in factories.items()}
        times: dict[str, list[float]] = {name: [] for name in table}
        for round_ in range(args.rounds + 1):
            for name, epoch in table.items():
                seconds = epoch()
                if round_:
                    times[name].append(seconds)
        floor = statistics.median(times["floor (matrix products only)"])
        memory = {} if args.no_memory else {n: peak_memory_mib(n, args.quick) for n in table}
        print("\n| loop | s/epoch | x floor | steps/s | extra RSS MiB |\n|---|---|---|---|---|")
        for name, values in times.items():
            median = statistics.median(values)
            mib = f"{memory[name]:.0f}" if name in memory else "-"
            print(
                f"| {name} | {median:.3f} | {median / floor:.2f} | {STEPS / median:,.0f} | {mib} |"
            )
        print(
            f"\nevaluation of the test set (10,000 examples): {evaluation_report(data, args.rounds)}"
        )
        print(f"\nCUDA graph: {cuda_graph_report()}")
        print(f"\ngradlab train on CUDA: {cuda_train_report(runs, args.rounds)}")
        if not args.quick:
            sys.path.insert(0, str(Path(__file__).parent))
            from compare_runs import time_command

            help_s = time_command([sys.executable, "-m", "gradlab.cli", "--help"], repeat=5)
            print(f"gradlab --help: {help_s:.2f} s")
            size = run_folder_bytes_per_1000_steps(data, runs)
            print(
                f"run folder (full logging, clip_norm, default diagnostics): {size / 1024:.0f} KiB per 1,000 steps"
            )
            bench = Path(__file__).with_name("compare_runs.py")
            out = subprocess.run(
                [sys.executable, str(bench), "--repeat", "3"],
                capture_output=True,
                text=True,
                check=True,
            )
            print("gradlab compare over 500 run folders:\n" + out.stdout)
    finally:
        shutil.rmtree(runs, ignore_errors=True)


if __name__ == "__main__":
    main()
