"""Gradient checking: does each gradient engine compute the true gradient of the loss?

For every checked entry ``i`` of the flattened parameters (in float64)::

    approx[i] = (J(theta + eps * e_i) - J(theta - eps * e_i)) / (2 * eps)

and per parameter (and over all of them) the relative error
``||approx - g|| / (||approx|| + ||g||)``, read with the usual thresholds: at most 1e-5 is
good, around 1e-3 suspicious, larger wrong. ``J`` is the mean cross-entropy of a small batch.
Perturbations are evaluated many at a time with ``torch.func.vmap``.

Kinks: a ReLU is not differentiable at 0. When moving entry ``i`` by ``+eps`` or ``-eps``
puts some ReLU input (a hidden pre-activation, or a logit under the output ReLU) on the
other side of 0 than at ``theta``, the difference quotient straddles the kink and measures
neither one-sided slope, so it says nothing about the engine's gradient (CS231n's
gradient-check notes). Such entries are reported as kinks and left out of the errors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from gradlab.config import Config
from gradlab.engines import AnalyticEngine, AutogradEngine
from gradlab.errors import GradlabError
from gradlab.model import MLP

GOOD, SUSPICIOUS = 1e-5, 1e-3
ALL_KINKS = "all kinks"  # the verdict of a parameter whose every checked entry is a kink
CHUNK = 16  # perturbed copies of one parameter evaluated at once (larger is slower here)

Engine = Callable[[MLP, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


def autograd_gradients(model: MLP, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """The gradient of the mean cross-entropy by the autograd engine."""
    return AutogradEngine(model).gradients(x, y)


def analytic_gradients(model: MLP, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
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


def relu_inputs(model: MLP) -> list[nn.Linear]:
    """The layers whose outputs go into a ReLU: the hidden ones (hidden ReLU), the last one
    (output ReLU)."""
    *hidden, last = model.layers
    layers = list(hidden) if model.cfg.activation == "relu" else []
    if model.output_relu:
        layers.append(last)
    return layers


def finite_differences(
    model: MLP, x: torch.Tensor, y: torch.Tensor, name: str, index: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-sided differences of the loss for the entries ``index`` of parameter ``name``.

    Returns:
        ``(approx, kink)``: the difference quotients, and per entry whether ``theta + eps``
        or ``theta - eps`` puts some ReLU input on another side of 0 than ``theta`` does.
    """
    params = {n: p.detach() for n, p in model.named_parameters()}
    base = params[name]
    seen: list[torch.Tensor] = []  # the outputs of relu_inputs(model) in one forward

    def loss_with(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen.clear()
        logits = functional_call(model, {**params, name: flat.view_as(base)}, (x,))
        # the side of 0 of every ReLU input, as one vector (empty without ReLUs)
        sides = torch.cat([z.flatten() > 0 for z in seen]) if seen else flat[:0] > 0
        return F.cross_entropy(logits, y), sides

    batched = vmap(loss_with)
    hooks = [
        layer.register_forward_hook(lambda m, i, out: seen.append(out))
        for layer in relu_inputs(model)
    ]
    approx, kink = [], []
    try:
        flat = base.flatten()
        for chunk in index.split(CHUNK):
            # one batch: [theta + eps e_i for i in chunk, theta - eps e_i ..., theta]; theta
            # goes through the same kernel so its sides round exactly as the others' do
            rows = torch.arange(len(chunk))
            copies = flat.repeat(2 * len(chunk) + 1, 1)
            copies[rows, chunk] += eps
            copies[rows + len(chunk), chunk] -= eps
            loss, sides = batched(copies)
            plus, minus = loss[: len(chunk)], loss[len(chunk) : -1]
            approx.append((plus - minus) / (2 * eps))
            moved = sides[:-1] != sides[-1]
            kink.append((moved[: len(chunk)] | moved[len(chunk) :]).any(dim=1))
    finally:
        for hook in hooks:
            hook.remove()
    return torch.cat(approx), torch.cat(kink)


def report_row(approx: torch.Tensor, exact: torch.Tensor, kink: torch.Tensor) -> dict:
    """One report row: the entries, the kinks, and the error over the entries that are not."""
    keep = ~kink
    row = {"entries": len(approx), "kinks": int(kink.sum())}
    if not keep.any():
        return {**row, "rel_error": None, "max_abs_diff": None, "verdict": ALL_KINKS}
    error = relative_error(approx[keep], exact[keep])
    return {
        **row,
        "rel_error": error,
        "max_abs_diff": (approx[keep] - exact[keep]).abs().max().item(),
        "verdict": verdict(error),
    }


def check_model(
    model: MLP,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float = 1e-5,
    entries: int | None = None,
    engines: dict[str, Engine] | None = None,
    seed: int = 0,
) -> dict:
    """Check every engine's gradient on ``model`` (float64) and the batch ``x, y``.

    Args:
        model: the network, in float64.
        x, y: the batch.
        eps: the perturbation.
        entries: K random entries per parameter tensor; None = every entry.
        engines: name -> function giving the gradients; default :data:`ENGINES`.
        seed: picks the random entries.

    Returns:
        ``kinks`` (parameter -> the flat indices of the entries that crossed a ReLU kink),
        ``engines`` (per engine, per parameter and ``overall``: ``entries``, ``kinks``,
        ``rel_error``, ``max_abs_diff`` and ``verdict``, the errors over the entries that
        are not kinks; ``None`` and verdict ``all kinks`` when there are none) and
        ``passed``: no parameter suspicious or wrong, and some entry not a kink.
    """
    pick = torch.Generator().manual_seed(seed)
    chosen = {}
    for name, p in model.named_parameters():
        n = p.numel()
        chosen[name] = (
            torch.arange(n)
            if entries is None or entries >= n
            else torch.randperm(n, generator=pick)[:entries]
        )
    differences = {
        name: finite_differences(model, x, y, name, index, eps) for name, index in chosen.items()
    }
    all_approx = torch.cat([approx for approx, _ in differences.values()])
    all_kinks = torch.cat([kink for _, kink in differences.values()])

    report: dict[str, Any] = {
        "kinks": {name: chosen[name][kink].tolist() for name, (_, kink) in differences.items()},
        "engines": {},
        "passed": True,
    }
    for engine, compute in (engines or ENGINES).items():
        gradients = compute(model, x, y)
        exact = {n: gradients[n].flatten()[i].double() for n, i in chosen.items()}
        rows = {n: report_row(approx, exact[n], kink) for n, (approx, kink) in differences.items()}
        overall = report_row(all_approx, torch.cat(list(exact.values())), all_kinks)
        passed = overall["verdict"] != ALL_KINKS and all(
            r["verdict"] in ("good", ALL_KINKS) for r in rows.values()
        )
        report["engines"][engine] = {"params": rows, "overall": overall, "passed": passed}
        report["passed"] = report["passed"] and passed
    return report


MAX_SAMPLES = 10_000
"""Most examples in the checked batch (the check is exact on a few)."""
INPUTS = ("dataset", "random")


def check_options(samples: int, eps: float, entries: int | None, inputs: str) -> None:
    """Refuse options :func:`gradcheck` cannot honour, with one line naming the argument."""
    if not (isinstance(samples, int) and 1 <= samples <= MAX_SAMPLES):
        raise GradlabError(
            f"samples {samples}: from 1 to {MAX_SAMPLES} (the check is exact on a few examples)",
            argument="samples",
        )
    if not 1e-10 <= eps <= 0.1:  # nan and inf fail this too; smaller drowns in round-off
        raise GradlabError(
            f"eps {eps}: must be a number greater than 0 and at most 0.1, "
            "at least 1e-10 (typically 1e-5)",
            argument="eps",
        )
    if entries is not None and not (isinstance(entries, int) and entries > 0):
        raise GradlabError(
            f"entries {entries!r}: use a positive whole number (or None: every entry)",
            argument="entries",
        )
    if inputs not in INPUTS:
        raise GradlabError(f"inputs {inputs!r}: use dataset or random", argument="inputs")


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
        ``samples``, ``eps``, ``inputs`` and the report of :func:`check_model`.

    Raises:
        GradlabError: an option out of its range (:func:`check_options`).
    """
    check_options(samples, eps, entries, inputs)
    torch.manual_seed(config.seed)
    model = MLP(config.model).double()
    x, y = check_inputs(config, samples, inputs)
    report = check_model(model, x, y, eps, entries, engines, seed=config.seed)
    return {"samples": samples, "eps": eps, "inputs": inputs, **report}
