"""Gradient checking: does each gradient engine compute the true gradient of the loss?

For every checked entry ``i`` of the flattened parameters (in float64)::

    approx[i] = (J(theta + eps * e_i) - J(theta - eps * e_i)) / (2 * eps)

``J`` is the mean cross-entropy of a small batch. Perturbations are evaluated many at a time
with ``torch.func.vmap``.

The floor. A difference quotient carries an error of its own, so each entry gets the absolute
floor below which finite differences cannot tell two gradients apart (both terms are
computed from the losses alone, never from the engine being checked)::

    floor[i] = ROUNDOFF * machine_eps * |J(theta)| / eps + 2 * |approx[i] - half[i]|

- round-off: ``J(theta +- eps)`` are computed in the model's dtype to within a few units of
  ``machine_eps * |J|`` (2.2e-16 for float64); their difference over ``2 * eps`` carries
  about ``machine_eps * |J| / eps``. Measured on the networks of the shipped configs
  (about 280,000 entries, 8 to 512 samples, dataset and random inputs): at most 1.4 times
  that; :data:`ROUNDOFF` allows 4 times.
- truncation: the central difference is off by ``eps**2 / 6 * J'''`` (plus higher orders).
  ``half[i]`` is the same quotient with ``eps / 2``, whose truncation error is a quarter of
  it, so ``approx - half`` is 3/4 of approx's and twice it is 1.5 times the estimate.

The criterion, numpy.isclose's ``|a - b| <= atol + rtol * |b|`` with the floor as ``atol``:
an entry passes when ``|g[i] - approx[i]| <= floor[i] + RTOL * (|g[i]| + |approx[i]|)``
(``RTOL`` = :data:`GOOD` = 1e-5). Per parameter, ``entry_error`` is the worst entry's
relative error beyond its floor, ``max(|g - approx| - floor, 0) / (|g| + |approx|)``, read
with the usual thresholds: at most 1e-5 is good, around 1e-3 suspicious, larger wrong. So a
gradient off by 1 % where finite differences resolve it (``|approx|`` well above the floor)
is wrong, while differences of 3e-11 against a floor of 2e-10 are not. An entry whose
``|approx|`` is within its floor is below what finite differences resolve: its gradient
cannot be told from 0 at this eps and it is compared by absolute difference alone; a
parameter of only such entries gets a ``note`` saying so. The relative error over the
parameter, ``||approx - g|| / (||approx|| + ||g||)``, is still reported (``rel_error``); on
such a parameter it measures the noise of finite differences, not the engine.

Kinks: a ReLU is not differentiable at 0. When moving entry ``i`` by ``+-eps`` (or by the
``+-eps / 2`` of ``half``, inside that interval) puts some ReLU input (a hidden
pre-activation, or a logit under the output ReLU) on the other side of 0 than at ``theta``,
the difference quotient straddles the kink and measures neither one-sided slope, so it says
nothing about the engine's gradient (CS231n's gradient-check notes). Such entries are
reported as kinks and left out of the errors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from gradlab.config import Config
from gradlab.engines import AnalyticEngine, AutogradEngine
from gradlab.errors import GradlabError
from gradlab.model import MLP

GOOD, SUSPICIOUS = 1e-5, 1e-3
RTOL = GOOD  # the relative part of the criterion: an entry is good within floor + RTOL
ROUNDOFF = 4.0  # the round-off floor in units of machine_eps * |J| / eps (measured: <= 1.4)
ALL_KINKS = "all kinks"  # the verdict of a parameter whose every checked entry is a kink
CHUNK = 8  # entries of one parameter evaluated at once: 4 * 8 + 1 copies (more is slower here)

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
    """``good`` up to :data:`GOOD`, ``suspicious`` up to :data:`SUSPICIOUS`, else (NaN
    included) ``wrong``."""
    if error <= GOOD:
        return "good"
    return "suspicious" if error <= SUSPICIOUS else "wrong"


def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """``||approx - exact|| / (||approx|| + ||exact||)``, 0 when both are 0."""
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


class Differences(NamedTuple):
    """The difference quotients of some entries of one parameter."""

    approx: torch.Tensor
    """``(J(theta + eps e_i) - J(theta - eps e_i)) / (2 eps)``."""
    half: torch.Tensor
    """The same with ``eps / 2``: for the truncation part of the floor."""
    kink: torch.Tensor
    """Whether one of the perturbations puts some ReLU input on another side of 0."""


def finite_differences(
    model: MLP, x: torch.Tensor, y: torch.Tensor, name: str, index: torch.Tensor, eps: float
) -> Differences:
    """Two-sided differences of the loss for the entries ``index`` of parameter ``name``,
    with ``eps`` and with ``eps / 2``; an entry is a kink when ``theta +- eps`` or
    ``theta +- eps / 2`` puts some ReLU input on another side of 0 than ``theta`` does."""
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
    approx, half, kink = [], [], []
    try:
        flat = base.flatten()
        for chunk in index.split(CHUNK):
            # one batch: [theta + eps e_i for i in chunk, theta - eps e_i ..., the same with
            # eps / 2, theta]; theta goes through the same kernel so its sides round exactly
            # as the others' do
            n = len(chunk)
            copies = flat.repeat(4 * n + 1, 1)
            for row, step in enumerate((eps, -eps, eps / 2, -eps / 2)):
                copies[torch.arange(n) + row * n, chunk] += step
            loss, sides = batched(copies)
            plus, minus, half_plus, half_minus = loss[:-1].view(4, n)
            approx.append((plus - minus) / (2 * eps))
            half.append((half_plus - half_minus) / eps)
            kink.append((sides[:-1] != sides[-1]).view(4, n, -1).any(dim=2).any(dim=0))
    finally:
        for hook in hooks:
            hook.remove()
    return Differences(torch.cat(approx), torch.cat(half), torch.cat(kink))


def roundoff_floor(model: MLP, x: torch.Tensor, y: torch.Tensor, eps: float) -> dict:
    """The round-off part of the floor, ``ROUNDOFF * machine_eps * |J(theta)| / eps``, with
    what it is made of (for the report)."""
    with torch.no_grad():
        loss = F.cross_entropy(model(x), y)
    machine_eps = torch.finfo(loss.dtype).eps
    return {
        "rtol": RTOL,
        "roundoff": ROUNDOFF * machine_eps * abs(loss.item()) / eps,
        "roundoff_units": ROUNDOFF,
        "machine_eps": machine_eps,
        "dtype": str(loss.dtype).removeprefix("torch."),
        "loss": loss.item(),
    }


def entry_errors(approx: torch.Tensor, exact: torch.Tensor, floor: torch.Tensor) -> torch.Tensor:
    """Per entry, the relative error beyond the floor:
    ``max(|exact - approx| - floor, 0) / (|exact| + |approx|)`` (0 within the floor)."""
    excess = ((exact - approx).abs() - floor).clamp(min=0)
    # an excess other than 0 means a difference above 0, so the denominator is too; a NaN
    # (a non-finite gradient or loss) stays NaN, which no verdict calls good
    return torch.where(excess == 0, 0.0, excess / (exact.abs() + approx.abs()))


def report_row(
    approx: torch.Tensor,
    exact: torch.Tensor,
    kink: torch.Tensor,
    floor: torch.Tensor | None = None,
    eps: float | None = None,
) -> dict:
    """One report row: the entries, the kinks, and over the entries that are not kinks the
    relative error, the largest difference, the largest floor (``floor``: per entry; None =
    0), the worst entry's error beyond its floor (the verdict's measure), how many entries
    are within their floor (``unresolved``) and a ``note`` when all are (naming ``eps``)."""
    keep = ~kink
    row: dict[str, Any] = {"entries": len(approx), "kinks": int(kink.sum())}
    if not keep.any():
        unchecked = ("rel_error", "max_abs_diff", "floor", "entry_error")
        empty = {**dict.fromkeys(unchecked), "unresolved": 0, "note": None}
        return {**row, **empty, "verdict": ALL_KINKS}
    approx, exact = approx[keep], exact[keep]
    floor = torch.zeros_like(approx) if floor is None else floor[keep]
    error = entry_errors(approx, exact, floor).max().item()
    unresolved = int((approx.abs() <= floor).sum())
    note = None
    if unresolved == len(approx):
        at = "" if eps is None else f" at eps={eps:g}"
        note = f"below what finite differences resolve{at}; compared by absolute difference"
    return {
        **row,
        "rel_error": relative_error(approx, exact),
        "max_abs_diff": (approx - exact).abs().max().item(),
        "floor": floor.max().item(),
        "entry_error": error,
        "unresolved": unresolved,
        "note": note,
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
        ``criterion`` (``rtol``; the round-off part of every entry's floor, ``roundoff``,
        and what it is made of: ``roundoff_units``, ``machine_eps``, ``dtype``, ``loss``
        = ``J(theta)``), ``engines`` (per engine, per parameter and ``overall``: the rows of
        :func:`report_row`, over the entries that are not kinks; ``passed`` per engine) and
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
    criterion = roundoff_floor(model, x, y, eps)
    # the floor: round-off (the same for every entry) plus truncation (1.5 x its estimate)
    floors = {
        n: criterion["roundoff"] + 2 * (d.approx - d.half).abs() for n, d in differences.items()
    }
    all_approx = torch.cat([d.approx for d in differences.values()])
    all_kinks = torch.cat([d.kink for d in differences.values()])
    all_floors = torch.cat(list(floors.values()))

    report: dict[str, Any] = {
        "kinks": {name: chosen[name][d.kink].tolist() for name, d in differences.items()},
        "criterion": criterion,
        "engines": {},
        "passed": True,
    }
    for engine, compute in (engines or ENGINES).items():
        gradients = compute(model, x, y)
        exact = {n: gradients[n].flatten()[i].double() for n, i in chosen.items()}
        rows = {
            n: report_row(d.approx, exact[n], d.kink, floors[n], eps)
            for n, d in differences.items()
        }
        all_exact = torch.cat(list(exact.values()))
        overall = report_row(all_approx, all_exact, all_kinks, all_floors, eps)
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
