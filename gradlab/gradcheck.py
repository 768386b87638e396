"""Gradient checking: does each gradient engine compute the true gradient of the loss?

For every checked entry ``i`` of the flattened parameters (in float64)::

    approx[i] = (J(theta + eps * e_i) - J(theta - eps * e_i)) / (2 * eps)

and per parameter (and over all of them) the relative error
``||approx - g|| / (||approx|| + ||g||)``, read with the usual thresholds: at most 1e-5 is
good, around 1e-3 suspicious, larger wrong. ``J`` is the mean cross-entropy of a small batch.
Perturbations are evaluated many at a time with ``torch.func.vmap``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from gradlab.config import Config
from gradlab.engines import AnalyticEngine, AutogradEngine
from gradlab.model import TwoLayerNet

GOOD, SUSPICIOUS = 1e-5, 1e-3
CHUNK = 16  # perturbed copies of one parameter evaluated at once (larger is slower here)

Engine = Callable[[TwoLayerNet, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


def autograd_gradients(
    model: TwoLayerNet, x: torch.Tensor, y: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The gradient of the mean cross-entropy by the autograd engine."""
    return AutogradEngine(model).gradients(x, y)


def analytic_gradients(
    model: TwoLayerNet, x: torch.Tensor, y: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The gradient of the mean cross-entropy by the hand-derived engine."""
    return AnalyticEngine(model).gradients(x, y)


# every gradient engine gradlab trains with
ENGINES: dict[str, Engine] = {"autograd": autograd_gradients, "analytic": analytic_gradients}


def verdict(error: float) -> str:
    if error <= GOOD:
        return "good"
    return "suspicious" if error <= SUSPICIOUS else "wrong"


def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    denominator = (approx.norm() + exact.norm()).item()
    return 0.0 if denominator == 0 else (approx - exact).norm().item() / denominator


def check_inputs(config: Config, samples: int, inputs: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch to check on: the first ``samples`` training examples, or random pixels."""
    if inputs == "random":
        generator = torch.Generator().manual_seed(config.seed)
        x = torch.rand(samples, 784, generator=generator, dtype=torch.float64)
        return x, torch.randint(0, 10, (samples,), generator=generator)
    from gradlab.data import load_dataset

    data = load_dataset(config.data, torch.device("cpu"))
    return data.train_x[:samples].double(), data.train_y[:samples]


def finite_differences(
    model: TwoLayerNet, x: torch.Tensor, y: torch.Tensor, name: str, index: torch.Tensor, eps: float
) -> torch.Tensor:
    """Two-sided differences of the loss for the entries ``index`` of parameter ``name``."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    base = params[name]

    def loss_with(flat: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            functional_call(model, {**params, name: flat.view_as(base)}, (x,)), y
        )

    batched = vmap(loss_with)
    out = []
    for chunk in index.split(CHUNK):
        rows = torch.arange(len(chunk))
        plus = base.flatten().repeat(len(chunk), 1)
        minus = plus.clone()
        plus[rows, chunk] += eps
        minus[rows, chunk] -= eps
        out.append((batched(plus) - batched(minus)) / (2 * eps))
    return torch.cat(out)


def gradcheck(
    config: Config,
    samples: int = 8,
    eps: float = 1e-5,
    entries: int | None = None,
    inputs: str = "dataset",
    engines: dict[str, Engine] | None = None,
) -> dict:
    """Check every engine's gradient against finite differences.

    Args:
        config: the model (and, for ``inputs="dataset"``, the data) to check.
        samples: examples in the batch.
        eps: the perturbation.
        entries: K random entries per parameter tensor; None = every entry.
        inputs: ``dataset`` (the first training examples) or ``random`` (uniform pixels).
        engines: name -> function giving the gradients; default :data:`ENGINES`.

    Returns:
        A report: per engine, per parameter ``entries``, ``rel_error``, ``max_abs_diff`` and
        ``verdict``, an ``overall`` entry, and ``passed`` (every parameter good).
    """
    torch.manual_seed(config.seed)
    model = TwoLayerNet(config.model).double()
    x, y = check_inputs(config, samples, inputs)
    pick = torch.Generator().manual_seed(config.seed)
    chosen = {}
    for name, p in model.named_parameters():
        n = p.numel()
        chosen[name] = (
            torch.arange(n)
            if entries is None or entries >= n
            else torch.randperm(n, generator=pick)[:entries]
        )
    approx = {
        name: finite_differences(model, x, y, name, index, eps) for name, index in chosen.items()
    }

    report = {"samples": samples, "eps": eps, "inputs": inputs, "engines": {}, "passed": True}
    for engine, compute in (engines or ENGINES).items():
        exact = compute(model, x, y)
        rows = {}
        for name, index in chosen.items():
            g = exact[name].flatten()[index].double()
            error = relative_error(approx[name], g)
            rows[name] = {
                "entries": len(index),
                "rel_error": error,
                "max_abs_diff": (approx[name] - g).abs().max().item(),
                "verdict": verdict(error),
            }
        all_approx = torch.cat(list(approx.values()))
        all_exact = torch.cat([exact[n].flatten()[i].double() for n, i in chosen.items()])
        overall = relative_error(all_approx, all_exact)
        passed = all(r["verdict"] == "good" for r in rows.values())
        report["engines"][engine] = {
            "params": rows,
            "overall": {
                "entries": len(all_approx),
                "rel_error": overall,
                "max_abs_diff": (all_approx - all_exact).abs().max().item(),
                "verdict": verdict(overall),
            },
            "passed": passed,
        }
        report["passed"] = report["passed"] and passed
    return report
