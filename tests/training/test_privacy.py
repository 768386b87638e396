"""DP-SGD against independent references.

- per-example gradients from ``torch.func`` (vmap of grad) and the clipping formulas written
  out here, in float64, for both engines;
- Opacus: ``GradSampleModule`` + ``DPOptimizer`` / ``DPPerLayerOptimizer`` for one step and a
  few training steps, and Opacus's own ``RDPAccountant`` / ``PRVAccountant`` for epsilon;
- the binomial statistics of Poisson sampling and the Gaussian statistics of the noise;
- the command line's one-line errors for bad ``privacy`` sections.

Nothing here compares gradlab with a number gradlab produced before.
"""

from __future__ import annotations

import collections
import copy
import csv
import functools
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import tiny
from typer.testing import CliRunner

from gradlab.cli import app
from gradlab.config import Config, ModelConfig, PrivacyConfig, config_from_dict, load_config
from gradlab.data import batch_order, load_dataset, poisson_order
from gradlab.engines import AnalyticEngine, AutogradEngine
from gradlab.environment import seed_everything
from gradlab.errors import ConfigError
from gradlab.identity import experiment_key
from gradlab.model import MLP
from gradlab.privacy import STAT_COLUMNS, Privatizer
from gradlab.train import train

CPU = torch.device("cpu")
N_SAMPLE = 4000  # mnist-sample's training set
OPACUS = "Opacus is the reference implementation of DP-SGD here"
RESOLVED = {"device": "cpu", "amp": "off", "grad_scaler": False, "engine": "analytic"}


def opacus_or_skip():
    return pytest.importorskip("opacus", reason=OPACUS)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def private(privacy: dict | None = None, **sections) -> dict:
    """A tiny run on the CPU (the references below run there) with a ``privacy`` section."""
    raw = tiny(**sections)
    raw["train"]["device"] = "cpu"
    raw["privacy"] = {"noise_multiplier": 1.0, **(privacy or {})}
    return raw


def make_privatizer(cfg: PrivacyConfig, names, batch_size: int, n_train: int, seed: int = 0):
    """A Privatizer on the CPU for ``batch_size`` expected examples out of ``n_train``."""
    return Privatizer(cfg, names, batch_size, n_train, total_steps=10, seed=seed, device=CPU)


def f32(value: float) -> float:
    """``value`` rounded to float32: a threshold that is the same in both precisions."""
    return float(torch.tensor(value, dtype=torch.float32))


def make_engine(kind: str, model):
    return AnalyticEngine(model) if kind == "analytic" else AutogradEngine(model, None, None)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).norm() / want.norm().clamp_min(1e-300)).item()


# --------------------------------------------------------------------------- 1. clipped sums


def per_example_gradients(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    """Each example's gradient of its own cross-entropy: ``{name: (B, *shape)}``."""
    from torch.func import functional_call, grad, vmap

    params = {name: p.detach() for name, p in model.named_parameters()}

    def loss(p, xi, yi):
        return F.cross_entropy(functional_call(model, p, (xi[None],)), yi[None])

    return vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)


@functools.cache
def float64_case(activation: str, hidden, output: str):
    """A float64 network, a batch of 9 and its per-example gradients (computed once)."""
    torch.manual_seed(len(activation) * 7 + len(output) + (2 if isinstance(hidden, tuple) else 0))
    widths = list(hidden) if isinstance(hidden, tuple) else hidden
    cfg = ModelConfig(hidden=widths, activation=activation, output_activation=output)
    model = MLP(cfg).double()
    x = torch.rand(9, 784, dtype=torch.float64)
    y = torch.randint(0, 10, (9,))
    grads = per_example_gradients(model, x, y)
    return cfg, model.state_dict(), x, y, grads


def reference_clipping(grads: dict[str, torch.Tensor], clipping: str, thresholds):
    """The clipped sums, the (B, K) squared norms and the dp.* statistics, by the formulas:
    flat ``min(1, C / (||g_i|| + 1e-6))``; per_layer the same per tensor with C_k;
    automatic ``C / (||g_i|| + 0.01)``."""
    names = list(grads)
    flat = {n: g.flatten(1) for n, g in grads.items()}
    squared = torch.stack([flat[n].pow(2).sum(1) for n in names], 1)
    norms = squared.sum(1).sqrt()
    if clipping == "per_layer":
        limit = torch.tensor(thresholds, dtype=torch.float64)
        factors = (limit / (squared.sqrt() + 1e-6)).clamp(max=1.0)
        clipped = (factors < 1).any(1)
    else:
        if clipping == "flat":
            factor = (thresholds / (norms + 1e-6)).clamp(max=1.0)
        else:
            factor = thresholds / (norms + 0.01)
        clipped = factor < 1
        factors = factor[:, None].expand(-1, len(names))
    sums = {
        n: (factors[:, k, None] * flat[n]).sum(0).view(grads[n].shape[1:])
        for k, n in enumerate(names)
    }
    ordered = norms.sort().values
    stats = [clipped.double().mean().item(), ordered[(len(norms) - 1) // 2].item(), norms.max()]
    return sums, squared, factors, stats


MODELS = list(itertools.product(["relu", "tanh", "sigmoid"], [16, (16, 8)], ["none", "relu"]))
MODEL_IDS = [
    f"{a}-{'x'.join(map(str, h)) if isinstance(h, tuple) else h}-out_{o}" for a, h, o in MODELS
]


@pytest.mark.parametrize("clipping", ["flat", "per_layer", "automatic"])
@pytest.mark.parametrize("engine", ["analytic", "autograd"])
@pytest.mark.parametrize(("activation", "hidden", "output"), MODELS, ids=MODEL_IDS)
def test_clipped_sums_match_per_example_gradients(activation, hidden, output, engine, clipping):
    cfg, state, x, y, grads = float64_case(activation, hidden, output)
    names = list(grads)
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads.values()], 1)
    if clipping == "per_layer":  # about half of each tensor's examples above its threshold
        thresholds = [f32(max(v, 1e-3)) for v in norms.median(0).values.tolist()]
    else:
        thresholds = f32(norms.norm(dim=1).median().item())
    sums, squared, factors, stats = reference_clipping(grads, clipping, thresholds)
    if clipping != "automatic":  # the case clips some examples and leaves others alone
        assert (factors < 1).any() and (factors == 1).any()

    model = MLP(cfg).double()
    model.load_state_dict(state)
    privacy = PrivacyConfig(noise_multiplier=0, max_grad_norm=thresholds, clipping=clipping)
    privatizer = make_privatizer(privacy, names, 9, 100)
    privatizer.thresholds = torch.tensor(thresholds, dtype=torch.float64)
    seen = []

    def clip(sq):
        seen.append(sq.clone())
        return privatizer.clip(sq)

    loss, logits = make_engine(engine, model).clipped_step(x, y, clip)

    # the ghost norms are the per-example gradients' norms, per tensor, in parameter order
    (got_squared,) = seen
    assert got_squared.shape == (9, len(names))
    assert relative_error(got_squared, squared) < 1e-10
    for name, p in model.named_parameters():
        tol = 1e-10 * sums[name].norm().item() + 1e-14
        assert (p.grad - sums[name]).norm().item() <= tol, (
            name,
            relative_error(p.grad, sums[name]),
        )
    with torch.no_grad():
        want_logits = model(x)
    torch.testing.assert_close(logits, want_logits, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loss, F.cross_entropy(want_logits, y), rtol=1e-12, atol=0)
    clipped_frac, median, largest = (s.item() for s in privatizer.step_stats())
    assert clipped_frac == pytest.approx(stats[0], abs=1e-7)
    assert median == pytest.approx(stats[1], rel=1e-10)
    assert largest == pytest.approx(stats[2].item(), rel=1e-10)


def test_clipped_and_plain_steps_share_the_analytic_engine():
    """The clipped step reuses the plain step's work tensors: alternating them changes
    neither (the plain one still gives the mean gradient, the clipped one the clipped sum)."""
    cfg, state, x, y, grads = float64_case("relu", (16, 8), "none")
    threshold = f32(1.0)
    sums = reference_clipping(grads, "flat", threshold)[0]
    mean = {n: g.mean(0) for n, g in grads.items()}
    model = MLP(cfg).double()
    model.load_state_dict(state)
    cfg = PrivacyConfig(noise_multiplier=0, max_grad_norm=threshold)
    privatizer = make_privatizer(cfg, list(grads), 9, 100)
    privatizer.thresholds = privatizer.thresholds.double()
    engine = AnalyticEngine(model)
    for clipped in (False, True, False, True):
        if clipped:
            engine.clipped_step(x, y, privatizer.clip)
        else:
            engine.step(x, y)
        want = sums if clipped else mean
        for name, p in model.named_parameters():
            assert relative_error(p.grad, want[name]) < 1e-10, (clipped, name)


# --------------------------------------------------------------------------- 2. Opacus


def opacus_step(model, x, y, clipping: str, thresholds, expected_batch: int, sigma=0.0):
    """One DPOptimizer (or DPPerLayerOptimizer) pre_step on a copy of ``model``: its p.grad
    (clipped sum + noise, / expected batch size) and the optimizer."""
    opacus_or_skip()
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer, DPPerLayerOptimizer

    ref = copy.deepcopy(model)
    gsm = GradSampleModule(ref)
    sgd = torch.optim.SGD(gsm.parameters(), lr=0.1)
    kind = DPPerLayerOptimizer if clipping == "per_layer" else DPOptimizer
    opt = kind(
        sgd, noise_multiplier=sigma, max_grad_norm=thresholds, expected_batch_size=expected_batch
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        F.cross_entropy(gsm(x), y).backward()
        assert opt.pre_step()
    return {name: p.grad.detach().clone() for name, p in ref.named_parameters()}, opt


@pytest.mark.parametrize("clipping", ["flat", "per_layer_list", "per_layer_split"])
@pytest.mark.parametrize("engine", ["analytic", "autograd"])
def test_one_step_matches_opacus(engine, clipping):
    """noise_multiplier 0: gradlab's clipped sum / expected batch size is Opacus's p.grad
    after pre_step (the drawn batch, 37, differs from the expected one, 40)."""
    torch.manual_seed(11)
    model = MLP(ModelConfig(hidden=[16, 8], activation="tanh"))
    names = [n for n, _ in model.named_parameters()]
    x, y = torch.rand(37, 784), torch.randint(0, 10, (37,))
    norms = torch.stack(
        [g.flatten(1).norm(dim=1) for g in per_example_gradients(model, x, y).values()], 1
    )
    if clipping == "flat":
        mode, setting = "flat", f32(norms.norm(dim=1).median().item())
        thresholds = setting
    elif clipping == "per_layer_list":
        mode, setting = "per_layer", [f32(v) for v in norms.median(0).values.tolist()]
        thresholds = setting
    else:  # one number split evenly: C / sqrt(K) per tensor
        mode, setting = "per_layer", f32(norms.norm(dim=1).median().item())
        thresholds = [setting / math.sqrt(len(names))] * len(names)
    want, _ = opacus_step(model, x, y, mode, thresholds, expected_batch=40)

    cfg = PrivacyConfig(noise_multiplier=0, max_grad_norm=setting, clipping=mode)
    privatizer = make_privatizer(cfg, names, 40, N_SAMPLE)
    assert privatizer.expected_batch_size == pytest.approx(40)
    ours = copy.deepcopy(model)
    make_engine(engine, ours).clipped_step(x, y, privatizer.clip)
    grads = [p.grad for p in ours.parameters()]
    privatizer.add_noise(grads)
    # some norms above their threshold, some below
    if mode == "per_layer":
        over = norms + 1e-6 > torch.tensor(thresholds)
    else:
        over = norms.norm(dim=1) + 1e-6 > setting
    assert over.any() and not over.all()
    assert privatizer.step_stats()[0].item() == over.reshape(37, -1).any(1).float().mean().item()
    for name, p in ours.named_parameters():
        assert relative_error(p.grad, want[name]) <= 1e-6, name


def test_noise_std_is_opacus_sensitivity():
    """The noise std is sigma times Opacus's max_grad_norm: C (flat) or the norm of the
    per-layer thresholds (DPPerLayerOptimizer)."""
    torch.manual_seed(0)
    model = MLP(ModelConfig(hidden=16))
    names = [n for n, _ in model.named_parameters()]
    x, y = torch.rand(4, 784), torch.randint(0, 10, (4,))
    for mode, setting, thresholds in [
        ("flat", 0.7, 0.7),
        ("automatic", 0.7, 0.7),
        ("per_layer", [0.5, 0.1, 0.3, 0.2], [0.5, 0.1, 0.3, 0.2]),
        ("per_layer", 0.8, [0.4] * 4),
    ]:
        _, opt = opacus_step(
            model, x, y, "flat" if mode == "automatic" else mode, thresholds, 4, 1.3
        )
        cfg = PrivacyConfig(noise_multiplier=1.3, max_grad_norm=setting, clipping=mode)
        privatizer = make_privatizer(cfg, names, 4, 100)
        assert privatizer.noise_std == pytest.approx(
            opt.noise_multiplier * opt.max_grad_norm, rel=1e-6
        )


def opacus_training(config, steps: int, sampling: str):
    """The same initial weights and batches through GradSampleModule + DPOptimizer(SGD):
    (the trained network, the initial one, the losses, the batch sizes)."""
    opacus_or_skip()
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    seed_everything(config.seed)
    data = load_dataset(config.data, CPU)
    ref = MLP(config.model)
    init = copy.deepcopy(ref)
    gsm = GradSampleModule(ref)
    opt = DPOptimizer(
        torch.optim.SGD(gsm.parameters(), lr=config.optim.lr, momentum=config.optim.momentum),
        noise_multiplier=0.0,
        max_grad_norm=config.privacy.max_grad_norm,
        expected_batch_size=config.optim.batch_size,
    )
    order = torch.Generator().manual_seed(config.seed)
    draw = poisson_order if sampling == "poisson" else batch_order
    losses, sizes = [], []
    for idx in itertools.islice(draw(N_SAMPLE, config.optim.batch_size, order, CPU), steps):
        opt.zero_grad()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loss = F.cross_entropy(gsm(data.train_x[idx]), data.train_y[idx])
            loss.backward()
            opt.step()
        losses.append(loss.item())
        sizes.append(len(idx))
    return ref, init, losses, sizes


@pytest.mark.parametrize("sampling", ["shuffle", "poisson"])
@pytest.mark.parametrize("engine", ["analytic", "autograd"])
def test_training_steps_match_opacus(tmp_path, engine, sampling):
    """Six SGD steps (momentum 0.9) with clipping and no noise: the same losses and weights
    as Opacus's DPOptimizer on the same batches from the same initial weights."""
    steps = 6
    config = config_from_dict(
        private(
            {"noise_multiplier": 0, "max_grad_norm": 0.5},
            data={"sampling": sampling},
            model={"hidden": [16, 8]},
            optim={"max_steps": steps, "batch_size": 40, "momentum": 0.9},
            train={"engine": engine},
        )
    )
    result = train(config, tmp_path)
    ref, init, losses, sizes = opacus_training(config, steps, sampling)

    rows = read_csv(result.path / "steps.csv")
    assert [float(r["loss"]) for r in rows] == pytest.approx(losses, rel=1e-5)
    assert all(0 < float(r["dp.clipped_frac"]) <= 1 for r in rows)
    for (name, p), q, q0 in zip(
        result.model.named_parameters(), ref.parameters(), init.parameters(), strict=True
    ):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6, msg=name)
        update, want = p.detach() - q0.detach(), q.detach() - q0.detach()
        assert relative_error(update, want) < 1e-4, name
    summary = result.summary
    if sampling == "poisson":
        assert [int(r["batch_size"]) for r in rows] == sizes
        assert "shuffle" not in summary["privacy_note"]
    else:
        assert "batch_size" not in rows[0] and sizes == [40] * steps
        assert "shuffle" in summary["privacy_note"] and "Poisson" in summary["privacy_note"]


# --------------------------------------------------------------------------- 3. noise


def noise(cfg: PrivacyConfig, seed: int = 0, batch_size: int = 64) -> torch.Tensor:
    """add_noise on zero gradients of four tensors (100,000 entries in all)."""
    names = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    privatizer = make_privatizer(cfg, names, batch_size, N_SAMPLE, seed)
    grads = [torch.zeros(200, 250), torch.zeros(20000), torch.zeros(100, 200), torch.zeros(10000)]
    privatizer.add_noise(grads)
    return torch.cat([g.flatten() for g in grads])


@pytest.mark.parametrize(
    ("clipping", "setting", "sensitivity"),
    [
        ("flat", 0.8, 0.8),
        ("automatic", 0.8, 0.8),
        ("per_layer", [0.5, 0.1, 0.3, 0.2], math.sqrt(0.25 + 0.01 + 0.09 + 0.04)),
        ("per_layer", 0.8, 0.8),  # C / sqrt(K) each: the joint bound stays C
    ],
)
def test_noise_is_gaussian_with_sigma_c_over_expected_batch(clipping, setting, sensitivity):
    sigma, batch = 1.7, 64
    cfg = PrivacyConfig(noise_multiplier=sigma, max_grad_norm=setting, clipping=clipping)
    values = noise(cfg, seed=5, batch_size=batch).double()
    n = values.numel()
    std = sigma * sensitivity / batch
    assert n == 100_000
    assert values.std().item() == pytest.approx(std, rel=0.02)
    assert abs(values.mean().item()) < 5 * std / math.sqrt(n)
    assert (values.abs() < std).double().mean().item() == pytest.approx(0.6827, abs=0.01)
    assert (values.abs() < 2 * std).double().mean().item() == pytest.approx(0.9545, abs=0.006)
    # every tensor gets the same std (Opacus adds one std to every parameter)
    for part in values.split([50_000, 20_000, 20_000, 10_000]):
        assert part.std().item() == pytest.approx(std, rel=0.05)
    # the same seed gives the same noise, another seed other noise
    assert torch.equal(noise(cfg, seed=5, batch_size=batch), values.float())
    assert not torch.equal(noise(cfg, seed=6, batch_size=batch), values.float())


def test_noise_is_fresh_at_every_step_and_absent_at_sigma_zero():
    names = ["w"]
    privatizer = make_privatizer(PrivacyConfig(noise_multiplier=1.0), names, 10, 1000)
    first, second = torch.zeros(1000), torch.zeros(1000)
    privatizer.add_noise([first])
    privatizer.add_noise([second])
    assert not torch.equal(first, second)
    assert torch.corrcoef(torch.stack([first, second]))[0, 1].abs() < 0.15
    quiet = make_privatizer(PrivacyConfig(noise_multiplier=0), names, 10, 1000)
    g = torch.arange(6.0)
    quiet.add_noise([g])
    assert torch.equal(g, torch.arange(6.0) / 10)  # only the division by q N = 10


# --------------------------------------------------------------------------- 4. accounting


def opacus_epsilon(sigma: float, q: float, steps: int, delta: float, accountant: str) -> float:
    opacus_or_skip()
    from opacus.accountants import PRVAccountant, RDPAccountant

    acc = {"rdp": RDPAccountant, "prv": PRVAccountant}[accountant]()
    acc.history = [(sigma, q, steps)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(acc.get_epsilon(delta=delta))


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
@pytest.mark.parametrize(
    ("sigma", "q", "steps", "delta"),
    [
        (1.0, 256 / 60000, 235, 1e-5),
        (0.7, 0.01, 1000, 1e-6),
        (2.0, 0.1, 50, 1e-3),
        (1.0, 1.0, 3, 1e-5),
    ],
)
def test_epsilon_is_opacus_accountants(sigma, q, steps, delta, accountant):
    from gradlab.privacy import epsilon

    want = opacus_epsilon(sigma, q, steps, delta, accountant)
    assert epsilon(sigma, q, steps, delta, accountant) == pytest.approx(want, rel=1e-12)
    assert epsilon(sigma, q, 0, delta, accountant) == 0
    assert epsilon(0.0, q, steps, delta, accountant) == math.inf


def test_study_reference_values():
    """STUDY.md: delta 1e-5, q = 256/60000, sigma 1: RDP 0.926 after one epoch (235 steps)
    and 1.352 after ten, PRV 0.403 and 1.109; sigma for ten epochs at epsilon 1 / 3 / 8:
    RDP 1.16 / 0.74 / 0.55."""
    opacus_or_skip()
    from gradlab.privacy import epsilon, solve_noise_multiplier

    q = 256 / 60000
    assert epsilon(1.0, q, 235, 1e-5, "rdp") == pytest.approx(0.926, abs=0.005)
    assert epsilon(1.0, q, 235, 1e-5, "prv") == pytest.approx(0.403, abs=0.005)
    assert epsilon(1.0, q, 2350, 1e-5, "rdp") == pytest.approx(1.352, abs=0.005)
    assert epsilon(1.0, q, 2350, 1e-5, "prv") == pytest.approx(1.109, abs=0.005)
    for target, sigma in [(1, 1.16), (3, 0.74), (8, 0.55)]:
        assert solve_noise_multiplier(target, 1e-5, q, 2350, "rdp") == pytest.approx(
            sigma, abs=0.005
        )


class AccountantCalls(Exception):
    pass


def test_target_search_ends_when_the_accountant_overflows(monkeypatch):
    """The real PRV accountant takes ~0.15 s an evaluation near its overflow; this stand-in
    has the same shape (finite up to 500, then inf), so the search's end is cheap to check.
    A bisection of [0, 20] to 0.01 in epsilon needs about 30 evaluations: 200 is plenty."""
    opacus_or_skip()
    from opacus.accountants import PRVAccountant

    from gradlab.privacy import solve_noise_multiplier

    def stand_in(sigma: float) -> float:
        return math.inf if sigma < 0.05 else 25.0 / sigma

    calls = []

    def get_epsilon(self, delta, **kwargs):
        calls.append(self.history[-1][0])
        if len(calls) > 200:
            raise AccountantCalls(f"still searching after 200 evaluations, at sigma {calls[-1]!r}")
        return stand_in(self.history[-1][0])

    monkeypatch.setattr(PRVAccountant, "get_epsilon", get_epsilon)
    try:
        sigma = solve_noise_multiplier(1000.0, 1e-5, 0.0125, 12, "prv")
    except ConfigError:
        return  # refusing the target is an answer too
    assert stand_in(sigma) <= 1000.0


def test_reachable_prv_target_is_solved():
    from gradlab.privacy import solve_noise_multiplier

    target, q, steps = 600.0, 1.0, 1
    assert opacus_epsilon(0.04, q, steps, 1e-5, "prv") <= target  # so it can be reached
    sigma = solve_noise_multiplier(target, 1e-5, q, steps, "prv")
    assert target - 0.011 <= opacus_epsilon(sigma, q, steps, 1e-5, "prv") <= target


def test_noisy_runs_have_a_finite_epsilon():
    from gradlab.privacy import epsilon

    bound = opacus_epsilon(0.04, 1.0, 2, 1e-5, "rdp")
    assert math.isfinite(bound)
    assert not math.isfinite(opacus_epsilon(0.04, 1.0, 2, 1e-5, "prv"))  # PRV overflows here
    assert epsilon(0.04, 1.0, 2, 1e-5, "prv") == bound  # RDP's bound instead


def test_a_run_says_where_prv_gave_way_to_rdp(tmp_path, monkeypatch):
    """Where Opacus's PRV accountant fails inside a run it was allowed to account (a
    discretization that does not converge, say), the run reports RDP's bound there and its
    note gives PRV's own error."""
    opacus_or_skip()
    from opacus.accountants import PRVAccountant

    real = PRVAccountant.get_epsilon

    def fails_at_step_8(self, delta, **kwargs):
        if self.history[-1][2] == 8:
            raise RuntimeError("Discrete mean differs significantly from continuous mean.")
        return real(self, delta, **kwargs)

    monkeypatch.setattr(PRVAccountant, "get_epsilon", fails_at_step_8)
    raw = private({"accountant": "prv"}, train={"eval_every": 4})
    result = train(config_from_dict(raw), tmp_path)
    rows = {int(r["step"]): float(r["epsilon"]) for r in read_csv(result.path / "evals.csv")}
    q = 50 / N_SAMPLE
    assert rows[8] == pytest.approx(opacus_epsilon(1.0, q, 8, 1e-5, "rdp"), rel=1e-6)
    assert rows[4] == pytest.approx(opacus_epsilon(1.0, q, 4, 1e-5, "prv"), rel=1e-6)
    assert result.summary["epsilon"] == pytest.approx(opacus_epsilon(1.0, q, 12, 1e-5, "prv"))
    note = result.summary["privacy_note"]
    assert "prv accountant could not bound epsilon at step 8 (" in note
    assert "Discrete mean differs" in note and "overflow" not in note


def test_run_reports_opacus_epsilon(tmp_path):
    opacus_or_skip()
    config = config_from_dict(private({"noise_multiplier": 1.1, "max_grad_norm": 0.7}))
    result = train(config, tmp_path)
    summary = result.summary
    q = 50 / N_SAMPLE
    assert summary["status"] == "completed"
    assert summary["sample_rate"] == q and summary["privacy_steps"] == 12
    assert summary["noise_multiplier"] == 1.1 and summary["delta"] == 1e-5
    assert summary["accountant"] == "rdp" and "privacy_note" not in summary
    assert summary["epsilon"] == pytest.approx(opacus_epsilon(1.1, q, 12, 1e-5, "rdp"), rel=1e-12)
    assert json.loads((result.path / "summary.json").read_text())["epsilon"] == summary["epsilon"]
    evals = read_csv(result.path / "evals.csv")
    assert len(evals) >= 2 and int(evals[-1]["step"]) == 12
    for row in evals:  # seven significant digits in the CSV
        want = opacus_epsilon(1.1, q, int(row["step"]), 1e-5, "rdp")
        assert float(row["epsilon"]) == pytest.approx(want, rel=1e-6)
    meta = json.loads((result.path / "meta.json").read_text())
    assert meta["sampling"] == "poisson"
    assert meta["privacy"]["expected_batch_size"] == pytest.approx(50)
    assert meta["privacy"]["noise_std"] == pytest.approx(1.1 * 0.7)
    assert meta["privacy"]["planned_epsilon"] == pytest.approx(summary["epsilon"], rel=1e-12)
    assert load_config(result.path / "config.yaml") == config


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_target_epsilon_is_met(tmp_path, accountant):
    target = 2.0
    config = config_from_dict(
        private({"noise_multiplier": None, "target_epsilon": target, "accountant": accountant})
    )
    summary = train(config, tmp_path).summary
    sigma, q = summary["noise_multiplier"], summary["sample_rate"]
    assert q == 50 / N_SAMPLE and summary["privacy_steps"] == 12
    spent = opacus_epsilon(sigma, q, 12, 1e-5, accountant)
    assert target - 0.011 <= spent <= target
    assert summary["epsilon"] == pytest.approx(spent, rel=1e-9)


def test_noise_multiplier_zero_has_no_epsilon(tmp_path):
    config = config_from_dict(private({"noise_multiplier": 0, "max_grad_norm": 0.3}))
    result = train(config, tmp_path)
    summary = result.summary
    assert summary["status"] == "completed"
    assert summary["epsilon"] is None and "noise_multiplier 0" in summary["privacy_note"]
    assert json.loads((result.path / "summary.json").read_text())["epsilon"] is None
    evals = read_csv(result.path / "evals.csv")
    assert evals and all(float(r["epsilon"]) == math.inf for r in evals)
    assert json.loads((result.path / "meta.json").read_text())["privacy"]["planned_epsilon"] is None
    # without noise the privatized gradient is the clipped sum / 50: ||.|| <= 0.3 * drawn / 50
    for row in read_csv(result.path / "steps.csv"):
        assert float(row["grad_norm"]) <= 0.3 * int(row["batch_size"]) / 50 * (1 + 1e-5)


# --------------------------------------------------------------------------- 5. Poisson


def test_poisson_batches_are_binomial():
    n, batch, epochs = 1000, 50, 100
    q = batch / n
    order = torch.Generator().manual_seed(123)
    counts = torch.zeros(n)
    sizes, overlaps, previous = [], [], None
    for _ in range(epochs):
        batches = list(poisson_order(n, batch, order, CPU))
        assert len(batches) == math.ceil(n / batch)
        for idx in batches:
            assert idx.dtype == torch.int64 and idx.dim() == 1
            assert bool((idx[1:] > idx[:-1]).all())  # increasing: sorted and unique
            assert len(idx) == 0 or (0 <= idx.min() and idx.max() < n)
            counts[idx] += 1
            sizes.append(len(idx))
            if previous is not None:
                overlaps.append(len(set(previous.tolist()) & set(idx.tolist())))
            previous = idx
    draws = len(sizes)
    sizes_t = torch.tensor(sizes, dtype=torch.float64)
    variance = n * q * (1 - q)
    assert sizes_t.mean().item() == pytest.approx(batch, abs=6 * math.sqrt(variance / draws))
    assert sizes_t.var().item() == pytest.approx(variance, rel=0.2)
    # each example joins each batch with probability q, independently of the others
    per_example = draws * q * (1 - q)
    assert counts.mean().item() == pytest.approx(draws * q, abs=6 * math.sqrt(per_example / n))
    assert (counts - draws * q).abs().max().item() < 6 * math.sqrt(per_example)
    assert counts.var().item() == pytest.approx(per_example, rel=0.2)
    # and of the other batches: consecutive batches share n q^2 examples on average
    assert sum(overlaps) / len(overlaps) == pytest.approx(n * q * q, rel=0.15)


def test_poisson_order_is_seeded():
    def epoch(seed, n=500, batch=20):
        return [
            b.tolist() for b in poisson_order(n, batch, torch.Generator().manual_seed(seed), CPU)
        ]

    assert epoch(1) == epoch(1)
    assert epoch(1) != epoch(2)
    everything = list(poisson_order(30, 50, torch.Generator().manual_seed(0), CPU))
    assert [b.tolist() for b in everything] == [list(range(30))]  # q = 1: one full batch


def first_batch_is_empty(seed: int) -> bool:
    return len(next(poisson_order(N_SAMPLE, 1, torch.Generator().manual_seed(seed), CPU))) == 0


def test_empty_poisson_batches_are_noise_only_steps(tmp_path):
    """batch_size 1 on 4,000 examples: q = 1/4000, a third of the batches are empty. They
    are steps (the noise still moves the weights), with empty loss cells, not divergence."""
    seed = next(s for s in range(100) if first_batch_is_empty(s))
    sigma, clip, lr, steps = 0.5, 0.1, 0.01, 40
    raw = private(
        {"noise_multiplier": sigma, "max_grad_norm": clip},
        optim={"batch_size": 1, "max_steps": steps, "lr": lr},
        seed=seed,
    )
    result = train(config_from_dict(raw), tmp_path / "long")
    summary, rows = result.summary, read_csv(result.path / "steps.csv")
    assert summary["status"] == "completed" and summary["steps"] == steps
    assert summary["nonfinite_skips"] == 0 and summary["privacy_steps"] == steps
    assert math.isfinite(summary["final_train_loss"])
    want_sizes = [
        len(b)
        for b in itertools.islice(
            poisson_order(N_SAMPLE, 1, torch.Generator().manual_seed(seed), CPU), steps
        )
    ]
    assert [int(r["batch_size"]) for r in rows] == want_sizes
    empty = [r for r in rows if r["batch_size"] == "0"]
    assert 0 < len(empty) < steps
    n_params = sum(p.numel() for p in result.model.parameters())
    noise_norm = sigma * clip * math.sqrt(n_params)  # expected batch size 1
    for row in rows:
        assert row["nonfinite"] == "0" and row["skipped"] == "0"
        if row["batch_size"] == "0":
            assert row["loss"] == "" and row["accuracy"] == ""
            assert all(row[c] == "" for c in STAT_COLUMNS)
            assert float(row["grad_norm"]) == pytest.approx(noise_norm, rel=0.05)
        else:
            assert math.isfinite(float(row["loss"])) and row["dp.norm_max"] != ""

    # the first step drew nothing: its update is -lr times the noise alone
    one = train(config_from_dict({**raw, "optim": {**raw["optim"], "max_steps": 1}}), tmp_path)
    (row,) = read_csv(one.path / "steps.csv")
    assert row["batch_size"] == "0"
    seed_everything(seed)
    init = MLP(config_from_dict(raw).model)
    moved = torch.cat(
        [
            (p - q).detach().flatten()
            for p, q in zip(one.model.parameters(), init.parameters(), strict=True)
        ]
    )
    assert moved.norm().item() == pytest.approx(lr * float(row["grad_norm"]), rel=1e-4)
    assert moved.norm().item() == pytest.approx(lr * noise_norm, rel=0.05)


# --------------------------------------------------------------------------- 6. errors

BAD_PRIVACY = [
    ("max_grad_norm 0", {"noise_multiplier": 1, "max_grad_norm": 0}, "privacy.max_grad_norm"),
    ("max_grad_norm < 0", {"noise_multiplier": 1, "max_grad_norm": -1}, "privacy.max_grad_norm"),
    (  # 0 in float32: every clipped gradient would vanish
        "max_grad_norm 1e-46",
        {"noise_multiplier": 1, "max_grad_norm": 1e-46},
        "privacy.max_grad_norm",
    ),
    ("delta 0", {"noise_multiplier": 1, "delta": 0}, "privacy.delta"),
    ("delta 1", {"noise_multiplier": 1, "delta": 1}, "privacy.delta"),
    ("delta 1.5", {"noise_multiplier": 1, "delta": 1.5}, "privacy.delta"),
    (
        "both",
        {"noise_multiplier": 1, "target_epsilon": 1},
        "privacy|noise_multiplier|target_epsilon",
    ),
    ("neither", {"delta": 1e-5}, "privacy|noise_multiplier|target_epsilon"),
    (
        "list with flat",
        {"noise_multiplier": 1, "max_grad_norm": [1, 1, 1, 1]},
        "privacy.max_grad_norm",
    ),
    (
        "list of 3 for 4",
        {"noise_multiplier": 1, "clipping": "per_layer", "max_grad_norm": [1, 1, 1]},
        "privacy.max_grad_norm",
    ),
    ("negative sigma", {"noise_multiplier": -1}, "privacy.noise_multiplier"),
    ("unknown accountant", {"noise_multiplier": 1, "accountant": "moments"}, "privacy.accountant"),
]
UNREACHABLE = ("unreachable target", {"target_epsilon": 1e-6}, "privacy.target_epsilon")


def write_config(folder: Path, privacy: dict) -> Path:
    raw = tiny()
    raw["train"]["device"] = "cpu"
    raw["privacy"] = privacy
    path = folder / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def assert_one_line_error(code: int, stderr: str, output: str, key: str, runs: Path) -> None:
    assert code == 2, output
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), lines[0]
    assert all(part in lines[0] for part in key.split("|")), lines[0]
    assert "Traceback" not in output
    assert not runs.exists() or not any(runs.iterdir())


@pytest.mark.parametrize(
    ("label", "privacy", "key"),
    [*BAD_PRIVACY, UNREACHABLE],
    ids=[b[0] for b in [*BAD_PRIVACY, UNREACHABLE]],
)
def test_bad_privacy_ends_in_one_line(tmp_path, label, privacy, key):
    config = write_config(tmp_path, privacy)
    runs = tmp_path / "runs"
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(config), "--runs-dir", str(runs)])
    assert_one_line_error(result.exit_code, result.stderr, result.output, key, runs)
    if label != UNREACHABLE[0]:  # validate reads the config only: no accounting
        result = runner.invoke(app, ["validate", str(config)])
        assert_one_line_error(result.exit_code, result.stderr, result.output, key, runs)


@pytest.mark.parametrize("case", [BAD_PRIVACY[1], UNREACHABLE], ids=["max_grad_norm", "target"])
def test_bad_privacy_from_a_real_process(tmp_path, case):
    """The installed command, in its own process: exit status 2, one line, no folder."""
    _, privacy, key = case
    config = write_config(tmp_path, privacy)
    runs = tmp_path / "runs"
    done = subprocess.run(
        [sys.executable, "-m", "gradlab.cli", "train", str(config), "--runs-dir", str(runs)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_line_error(done.returncode, done.stderr, done.stdout + done.stderr, key, runs)
    assert done.stdout == ""


# --------------------------------------------------------------------------- 7. composition


def test_edits_see_the_privatized_gradient(tmp_path):
    config = config_from_dict(private(edit=[{"type": "clip_norm", "max_norm": 0.01}]))
    result = train(config, tmp_path)
    assert result.summary["status"] == "completed"
    rows = read_csv(result.path / "steps.csv")
    assert set(STAT_COLUMNS) <= set(rows[0])
    for row in rows:
        before, after = float(row["grad_norm"]), float(row["grad_norm_after"])
        assert before > 0.01 and after <= 0.01 * (1 + 1e-5)
        # the edit measured the gradient the privatizer handed it (noise included)
        assert float(row["edit0.clip_norm.norm"]) == pytest.approx(before, rel=1e-5)
        assert 0 <= float(row["dp.clipped_frac"]) <= 1
        assert float(row["dp.norm_max"]) >= float(row["dp.norm_median"]) > 0
    assert result.summary["edit_changed_frac"] == 1.0


# --------------------------------------------------------------------------- 8. AMP


@pytest.mark.parametrize("clipping", ["flat", "per_layer", "automatic"])
def test_fp16_clipped_sum_is_close_to_fp32(clipping):
    torch.manual_seed(4)
    model = MLP(ModelConfig(hidden=16))
    names = [n for n, _ in model.named_parameters()]
    x, y = torch.rand(32, 784), torch.randint(0, 10, (32,))
    cfg = PrivacyConfig(noise_multiplier=0, max_grad_norm=2.0, clipping=clipping)
    privatizer = make_privatizer(cfg, names, 32, 100)
    full = copy.deepcopy(model)
    AutogradEngine(full).clipped_step(x, y, privatizer.clip)
    full_stats = [s.item() for s in privatizer.step_stats()]
    half = copy.deepcopy(model)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    AutogradEngine(half, scaler, torch.float16).clipped_step(x, y, privatizer.clip)
    half_stats = [s.item() for s in privatizer.step_stats()]
    scale = scaler.get_scale()
    assert scale == 2.0**16
    for (name, p), q in zip(half.named_parameters(), full.parameters(), strict=True):
        assert p.grad.dtype == torch.float32
        assert relative_error(p.grad / scale, q.grad) < 1e-2, name
    assert half_stats == pytest.approx(full_stats, rel=1e-2)


def test_fp16_private_run_on_cpu(tmp_path):
    runs = {}
    for amp in ("fp16", "off"):
        raw = private({"noise_multiplier": 0}, train={"amp": amp, "engine": "autograd"})
        runs[amp] = train(config_from_dict(raw), tmp_path / amp)
    meta = json.loads((runs["fp16"].path / "meta.json").read_text())
    assert meta["engine"] == "autograd" and meta["amp"]["grad_scaler"] is True
    assert runs["fp16"].summary["status"] == "completed"
    first = {amp: read_csv(run.path / "steps.csv")[0] for amp, run in runs.items()}
    assert first["fp16"]["skipped"] == "0"
    assert float(first["fp16"]["grad_norm"]) == pytest.approx(
        float(first["off"]["grad_norm"]), rel=1e-2
    )
    assert float(first["fp16"]["dp.norm_median"]) == pytest.approx(
        float(first["off"]["dp.norm_median"]), rel=1e-2
    )
    noisy = train(config_from_dict(private(train={"amp": "fp16"})), tmp_path / "noisy")
    assert noisy.summary["status"] == "completed" and noisy.summary["epsilon"] > 0


# --------------------------------------------------------------------------- 9. identity


def test_runs_without_privacy_keep_their_experiment_key():
    for raw in (tiny(), tiny(optim={"name": "adam", "lr": 1e-3}), {"data": {"name": "mnist"}}):
        config = config_from_dict(raw)
        written = config.to_dict()
        assert written["privacy"] is None and written["data"]["sampling"] == "shuffle"
        before = copy.deepcopy(written)  # as the version before DP-SGD wrote config.yaml
        del before["privacy"]
        del before["data"]["sampling"]
        assert config.experiment_hash(RESOLVED) == experiment_key(before, RESOLVED)
        assert config_from_dict(before).experiment_hash(RESOLVED) == config.experiment_hash(
            RESOLVED
        )


def test_privacy_and_sampling_change_the_experiment_key():
    def key(raw):
        return config_from_dict(raw).experiment_hash(RESOLVED)

    plain = key(tiny())
    keys = {
        "dp": key(tiny(privacy={"noise_multiplier": 1.0})),
        "dp sigma 2": key(tiny(privacy={"noise_multiplier": 2.0})),
        "dp C 0.5": key(tiny(privacy={"noise_multiplier": 1.0, "max_grad_norm": 0.5})),
        "dp shuffle": key(tiny(privacy={"noise_multiplier": 1.0}, data={"sampling": "shuffle"})),
        "poisson": key(tiny(data={"sampling": "poisson"})),
    }
    assert plain not in keys.values()
    assert len(set(keys.values())) == len(keys)
    # auto resolves: private -> poisson, else shuffle
    assert key(tiny(privacy={"noise_multiplier": 1.0}, data={"sampling": "poisson"})) == keys["dp"]
    assert key(tiny(data={"sampling": "shuffle"})) == plain


# --------------------------------------------------------------------------- review fixes


def test_max_grad_norm_takes_exponents_written_as_yaml_text(tmp_path):
    """YAML 1.1 reads `5e-1` (no dot) as text; every other float key takes it, so this one
    does too."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "data: {name: mnist-sample}\nprivacy: {noise_multiplier: 1, max_grad_norm: 5e-1}\n"
    )
    assert load_config(path).privacy.max_grad_norm == 0.5
    listed = {"noise_multiplier": 1, "clipping": "per_layer", "max_grad_norm": ["1e-2"] * 4}
    assert config_from_dict({"privacy": listed}).privacy.max_grad_norm == [0.01] * 4


def test_an_unknown_privacy_key_lists_the_valid_ones():
    result = CliRunner().invoke(
        app,
        [
            "validate",
            str(Path(__file__).parents[2] / "configs" / "dp.yaml"),
            "--set",
            "privacy.clip=1",
        ],
    )
    assert result.exit_code == 2
    line = result.output.strip()
    assert "privacy.clip: unknown key" in line and "max_grad_norm, clipping, delta" in line


def test_epsilon_is_never_negative():
    from gradlab.privacy import epsilon

    assert opacus_epsilon(1.0, 0.025, 2, 0.9, "rdp") < 0  # Opacus's bound at a delta near 1
    assert epsilon(1.0, 0.025, 2, 0.9, "rdp") == 0.0


def test_prv_is_not_asked_where_its_grid_would_overflow(monkeypatch):
    """PRV takes exp over a grid as wide as RDP's bound at delta / 4000 (+3): past
    float64's range it overflows, and it can take minutes and tens of GB getting there.
    gradlab reports RDP's bound there without asking it, and says why."""
    opacus_or_skip()
    from opacus.accountants import PRVAccountant

    from gradlab.privacy import accounted_epsilon

    def refuse(self, delta, **kwargs):
        raise AssertionError("PRV asked")

    monkeypatch.setattr(PRVAccountant, "get_epsilon", refuse)
    rdp = opacus_epsilon(0.05, 0.025, 65, 1e-5, "rdp")
    assert rdp > 700
    spent = accounted_epsilon(0.05, 0.025, 65, 1e-5, "prv")
    assert (spent.epsilon, spent.accountant) == (rdp, "rdp")
    assert "past 700, where float64's exp overflows" in spent.fallback


def test_compare_shows_privacy_keys_as_config_and_json_has_no_infinity(tmp_path):
    from gradlab.study.compare import comparison
    from gradlab.study.exports import export

    for sigma in (0.0, 1.0):
        train(config_from_dict(private({"noise_multiplier": sigma}, name="dp")), tmp_path)
    table = comparison([tmp_path], group=False)
    assert sorted(table["privacy.noise_multiplier"]) == [0.0, 1.0]  # what tells them apart
    assert "privacy.noise_multiplier.std" not in table.columns
    assert sorted(table["epsilon"])[-1] == math.inf
    records = json.loads(export(table, "json"))  # strict JSON: no Infinity
    assert sorted(r["epsilon"] for r in records if isinstance(r["epsilon"], str)) == ["inf"]
    from gradlab.study.latex import to_latex
    from gradlab.study.reading import figures_from_logs

    assert r"$\infty$" in to_latex(table) and "$inf$" not in to_latex(table)
    by_privacy = comparison([tmp_path], group=False, sort_by="epsilon")
    assert list(by_privacy["epsilon"])[-1] == math.inf  # the least privacy spent first
    private_run = by_privacy.attrs["paths"][0][0]
    # a run that dies without its summary still shows the epsilon of its last evaluation
    spent = float(read_csv(Path(private_run) / "evals.csv")[-1]["epsilon"])
    assert figures_from_logs(Path(private_run))["epsilon"] == spent
    assert spent == pytest.approx(by_privacy["epsilon"].iloc[0], rel=1e-6)


# --------------------------------------------------------------------------- accounting bounds
# (a hostile-testing issue: PRV without bounds on steps, a target it cannot reach, notes
# that named the wrong cause, an fp16 step counted as skipped, loss_growth's reference)


def test_prv_grid_is_the_one_opacus_builds():
    """gradlab sizes PRV's grid with Opacus's own formulas (its _get_domain)."""
    opacus_or_skip()
    from opacus.accountants import PRVAccountant
    from opacus.accountants.analysis.prv import PoissonSubsampledGaussianPRV

    from gradlab.privacy import prv_grid

    for sigma, q, steps, delta in [(1.0, 0.025, 400, 1e-5), (0.7, 256 / 60000, 2350, 1e-6)]:
        domain = PRVAccountant()._get_domain(
            prvs=[PoissonSubsampledGaussianPRV(q, sigma)],
            num_self_compositions=[steps],
            eps_error=0.01,
            delta_error=delta / 1000,
        )
        grid = prv_grid(sigma, q, steps, delta)
        assert grid.points == domain.size
        assert domain.t_max - 2 * domain.dt <= grid.half_width <= domain.t_max


def prv_refused(self, delta, **kwargs):
    raise AssertionError("the PRV accountant was asked")


def test_prv_run_past_its_grid_is_refused_before_any_accounting(tmp_path, monkeypatch):
    """configs/dp.yaml for 200,000 steps with prv: 57 million grid points (10 GB, minutes)
    before step 1. Refused at once in one line that names the limit and what is allowed."""
    opacus_or_skip()
    from opacus.accountants import PRVAccountant

    monkeypatch.setattr(PRVAccountant, "get_epsilon", prv_refused)
    runs = tmp_path / "runs"
    result = CliRunner().invoke(
        app,
        [
            "train",
            str(Path(__file__).parents[2] / "configs" / "dp.yaml"),
            "--set",
            "optim.max_steps=200000",
            "--set",
            "privacy.accountant=prv",
            "--runs-dir",
            str(runs),
        ],
    )
    key = "privacy.accountant|points|allows 4,194,304|at most|accountant rdp"
    assert_one_line_error(result.exit_code, result.stderr, result.output, key, runs)
    from gradlab.privacy import prv_grid, prv_limit

    assert prv_grid(1.0, 0.025, 200_000, 1e-5).points > 50e6
    most = int(result.stderr.split("at most ")[1].split(" steps")[0].replace(",", ""))
    assert prv_limit(1.0, 0.025, most, 1e-5) is None  # what it says it can do, it can
    assert prv_limit(1.0, 0.025, most + 1, 1e-5) is not None


def count_accounting(monkeypatch, accountant: str) -> collections.Counter:
    """Counts the real accountant's evaluations by the steps asked for."""
    from opacus.accountants import PRVAccountant, RDPAccountant

    cls = {"rdp": RDPAccountant, "prv": PRVAccountant}[accountant]
    real, calls = cls.get_epsilon, collections.Counter()

    def counted(self, delta, **kwargs):
        calls[self.history[-1][2]] += 1
        return real(self, delta, **kwargs)

    monkeypatch.setattr(cls, "get_epsilon", counted)
    return calls


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_each_step_is_accounted_once(tmp_path, monkeypatch, accountant):
    """The planned epsilon, the evaluations, the summary and its notes share one accounting
    per step (PRV at its limit takes seconds an evaluation)."""
    opacus_or_skip()
    calls = count_accounting(monkeypatch, accountant)
    result = train(config_from_dict(private({"accountant": accountant})), tmp_path)
    evals = [int(r["step"]) for r in read_csv(result.path / "evals.csv")]
    assert evals[-1] == 12 and len(evals) >= 3
    assert dict(calls) == dict.fromkeys(evals, 1)  # (prv: RDP sizes its grid, not counted)
    assert result.summary["epsilon"] == pytest.approx(
        opacus_epsilon(1.0, 50 / N_SAMPLE, 12, 1e-5, accountant)
    )


def sigint_then_work(seconds: float, done: list):
    """A stand-in accountant that sends this process SIGINT at its first call and then
    works on (in Python, where a signal handler can act) for ``seconds``."""

    def get_epsilon(self, delta, **kwargs):
        if not done:
            done.append("started")
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(int(seconds / 0.01)):
                time.sleep(0.01)
            done.append("finished")
        return 25.0 / self.history[-1][0]

    return get_epsilon


def test_a_signal_cuts_the_setup_accounting_short(tmp_path, monkeypatch):
    """Ctrl-C while target_epsilon is being solved: the command ends at once (exit 130,
    one line, no run folder) instead of after the search and a first step."""
    opacus_or_skip()
    from opacus.accountants import PRVAccountant

    done: list[str] = []
    monkeypatch.setattr(PRVAccountant, "get_epsilon", sigint_then_work(2.0, done))
    config = write_config(tmp_path, {"target_epsilon": 3.0, "accountant": "prv"})
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["train", str(config), "--runs-dir", str(runs)])
    assert done == ["started"]  # the accountant did not get to finish
    assert result.exit_code == 130, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: interrupted by SIGINT while solving privacy.target_epsilon")
    assert not runs.exists() or not any(runs.iterdir())


def test_a_signal_cuts_the_final_accounting_short(tmp_path, monkeypatch):
    """Ctrl-C at step 5 ends the run; epsilon after 5 steps is then accounted after the
    loop, and a second signal there cuts it short: the summary says it was not computed."""
    opacus_or_skip()
    from opacus.accountants import RDPAccountant

    real = RDPAccountant.get_epsilon
    done: list[str] = []
    stand_in = sigint_then_work(2.0, done)

    def get_epsilon(self, delta, **kwargs):
        if self.history[-1][2] == 5:
            return stand_in(self, delta)
        return real(self, delta, **kwargs)

    monkeypatch.setattr(RDPAccountant, "get_epsilon", get_epsilon)

    def ctrl_c_at_step_5(progress):
        if progress.step == 5:
            os.kill(os.getpid(), signal.SIGINT)

    config = config_from_dict(private(train={"eval_every": 100}))
    result = train(config, tmp_path, on_progress=ctrl_c_at_step_5)
    summary = result.summary
    assert done == ["started"]
    assert summary["status"] == "interrupted" and summary["steps"] == 5
    assert summary["epsilon"] is None and summary["privacy_steps"] == 5
    assert "cut the privacy accounting short" in summary["privacy_note"]
    (row,) = read_csv(result.path / "evals.csv")
    assert row["step"] == "5" and row["epsilon"] == ""


def test_prv_target_beyond_its_range_is_refused():
    """q = 1, one step: PRV's grid leaves float64's range above epsilon ~650. A target of
    1000 used to land silently below it; now it is one error that gives the range."""
    opacus_or_skip()
    from gradlab.privacy import solve_noise_multiplier

    with pytest.raises(ConfigError) as error:
        solve_noise_multiplier(1000.0, 1e-5, 1.0, 1, "prv")
    from gradlab.privacy import prv_floor

    floor = prv_floor(1.0, 1, 1e-5)
    reach = opacus_epsilon(floor, 1.0, 1, 1e-5, "prv")
    assert 300 < reach < 1000
    message = str(error.value)
    assert message.startswith("privacy.target_epsilon: 1000 is beyond the prv accountant's")
    assert f"up to {reach:.4g}" in message and "accountant rdp" in message
    assert "float64" in message
    most = float(message.split("use target_epsilon <= ")[1].split(" ")[0])
    assert reach - 0.01 <= most <= reach
    sigma = solve_noise_multiplier(most, 1e-5, 1.0, 1, "prv")  # the range it names is reachable
    assert most - 0.011 <= opacus_epsilon(sigma, 1.0, 1, 1e-5, "prv") <= most


def test_prv_target_past_its_grid_is_refused(monkeypatch):
    """configs/dp.yaml's setting (q 0.025, 400 steps) with the grid limited to 2^17 points:
    targets 500 and 1e6 alike are refused with the largest epsilon within the limit, and
    one below it is met as usual."""
    opacus_or_skip()
    import gradlab.privacy as privacy

    monkeypatch.setattr(privacy, "MAX_PRV_POINTS", 2**17)
    floor = privacy.prv_floor(0.025, 400, 1e-5)
    assert privacy.prv_grid(floor, 0.025, 400, 1e-5).points <= 2**17
    reach = opacus_epsilon(floor, 0.025, 400, 1e-5, "prv")
    for target in (500.0, 1e6):
        with pytest.raises(ConfigError, match=rf"up to {reach:.4g} there .*131,072 points"):
            privacy.solve_noise_multiplier(target, 1e-5, 0.025, 400, "prv")
    sigma = privacy.solve_noise_multiplier(reach - 1, 1e-5, 0.025, 400, "prv")
    assert reach - 1.011 <= opacus_epsilon(sigma, 0.025, 400, 1e-5, "prv") <= reach - 1


PRV_LIMITS = [
    ("delta below float precision", {"noise_multiplier": 1, "delta": 1e-300}, "privacy.delta|>="),
    (
        "too many steps",
        {"noise_multiplier": 1, "max_steps": 200_000},
        "privacy.accountant|at most|rdp",
    ),
    ("target beyond reach", {"target_epsilon": 1e5}, "privacy.target_epsilon|up to|rdp"),
]


@pytest.mark.parametrize(
    ("label", "privacy", "key"), PRV_LIMITS, ids=[case[0] for case in PRV_LIMITS]
)
def test_what_prv_cannot_account_ends_in_one_line(tmp_path, label, privacy, key):
    privacy = {**privacy, "accountant": "prv"}
    steps = privacy.pop("max_steps", None)
    config = write_config(tmp_path, privacy)
    if steps:
        raw = yaml.safe_load(config.read_text())
        raw["optim"]["max_steps"] = steps
        config.write_text(yaml.safe_dump(raw))
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["train", str(config), "--runs-dir", str(runs)])
    assert_one_line_error(result.exit_code, result.stderr, result.output, key, runs)


def test_prv_notes_say_the_cause_at_a_delta_near_one(tmp_path):
    """delta 0.9999999: every bound is 0 here (RDP's is negative), which PRV cannot even
    place on its grid. The run reports 0 and says that delta is the reason, not overflow."""
    raw = private({"accountant": "prv", "delta": 0.9999999})
    summary = train(config_from_dict(raw), tmp_path).summary
    assert summary["status"] == "completed" and summary["epsilon"] == 0
    assert opacus_epsilon(1.0, 50 / N_SAMPLE, 12, 0.9999999, "rdp") < 0
    note = summary["privacy_note"]
    assert "delta 0.9999999" in note and "1 / N" in note and "overflow" not in note


def test_rdp_accounts_a_tiny_delta(tmp_path):
    """delta 1e-300 is within RDP's reach (epsilon ~100): no refusal and no note."""
    summary = train(config_from_dict(private({"delta": 1e-300})), tmp_path).summary
    assert summary["epsilon"] == pytest.approx(
        opacus_epsilon(1.0, 50 / N_SAMPLE, 12, 1e-300, "rdp")
    )
    assert "privacy_note" not in summary


def fp16_private(max_grad_norm: float, steps: int) -> Config:
    raw = private(
        {"noise_multiplier": 1.0, "max_grad_norm": max_grad_norm},
        train={"amp": "fp16", "engine": "autograd"},
        optim={"max_steps": steps},
    )
    return config_from_dict(raw)


def moved(result, config) -> float:
    """How far the run moved the weights from their initial values (float64)."""
    seed_everything(config.seed)
    init = MLP(config.model)
    return (
        torch.cat(
            [
                (p.double() - q.double()).flatten()
                for p, q in zip(result.model.parameters(), init.parameters(), strict=True)
            ]
        )
        .norm()
        .item()
    )


def test_fp16_private_step_the_scaler_applied_is_not_skipped(tmp_path):
    """C = 1e30: the privatized gradient is finite (entries ~1e28) and the GradScaler
    applies it, but its float32 norm overflowed and steps.csv called the step skipped."""
    config = fp16_private(1e30, 1)
    result = train(config, tmp_path)
    (row,) = read_csv(result.path / "steps.csv")
    n_params = sum(p.numel() for p in result.model.parameters())
    noise_norm = 1e30 * math.sqrt(n_params) / 50  # sigma C sqrt(P) / expected batch
    assert float(row["grad_norm"]) == pytest.approx(noise_norm, rel=0.05)
    assert row["skipped"] == "0" and result.summary["skipped_steps"] == 0
    assert moved(result, config) == pytest.approx(0.1 * float(row["grad_norm"]), rel=1e-3)
    # and then the weights are ~1e27: fp16 overflows, the loss is NaN, the run diverged
    later = train(fp16_private(1e30, 30), tmp_path)
    rows = read_csv(later.path / "steps.csv")
    assert later.summary["status"] == "diverged" and later.summary["diverged_step"] == 2
    assert later.summary["skipped_steps"] == sum(int(r["skipped"]) for r in rows)
    assert rows[0]["skipped"] == "0"


def test_fp16_private_step_whose_noise_overflows_is_skipped(tmp_path):
    """C = 1e35: the noise times the loss scale (65536) overflows float32, so the
    GradScaler, which checks the privatized gradient, skips the step: logged as skipped,
    and the weights did not move."""
    config = fp16_private(1e35, 1)
    result = train(config, tmp_path)
    (row,) = read_csv(result.path / "steps.csv")
    assert row["skipped"] == "1" and result.summary["skipped_steps"] == 1
    assert moved(result, config) == 0


def test_loss_growth_reference_is_the_untrained_loss_after_an_empty_first_batch(tmp_path):
    """A first Poisson batch without examples is a noise-only update: the next batch's loss
    (14.7 here) is no longer the untrained network's (2.3). loss_growth compares with the
    untrained network's mean training loss instead."""
    seed = next(s for s in range(100) if first_batch_is_empty(s))
    raw = private(
        {"noise_multiplier": 1.0, "max_grad_norm": 1.0},
        optim={"batch_size": 1, "max_steps": 40, "lr": 0.5},
        seed=seed,
    )
    config = config_from_dict(raw)
    result = train(config, tmp_path)
    seed_everything(seed)
    data = load_dataset(config.data, CPU)
    with torch.no_grad():
        untrained = F.cross_entropy(MLP(config.model)(data.train_x), data.train_y).item()
    rows = read_csv(result.path / "steps.csv")
    assert rows[0]["batch_size"] == "0" and float(rows[1]["loss"]) > 5 * untrained
    window: list[float] = []
    expected = None
    for row in rows:  # the rule: the mean of the last 10 losses > diverge_factor x reference
        if row["batch_size"] != "0":
            window = [*window, float(row["loss"])][-10:]
            if len(window) == 10 and sum(window) / 10 > 10 * untrained:
                expected = int(row["step"])
                break
    assert expected is not None
    assert result.summary["diverged_reason"] == "loss_growth"
    assert result.summary["diverged_step"] == expected


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_a_killed_private_run_reports_epsilon_at_its_last_logged_step(tmp_path, accountant):
    """A worker killed between evaluations: the summary the sweep writes for it has its
    steps as a count and epsilon after the last step it logged, not the last evaluation's."""
    from gradlab.sweeps.worker import record_failure

    config = config_from_dict(
        private({"noise_multiplier": 1.1, "accountant": accountant}, optim={"max_steps": 20})
    )
    folder = train(config, tmp_path).path
    (folder / "summary.json").write_text('{"status": "running"}')  # the process died
    lines = (folder / "steps.csv").read_text().splitlines(keepends=True)
    (folder / "steps.csv").write_text("".join(lines[:18]))  # logged up to step 17
    evals = (folder / "evals.csv").read_text().splitlines(keepends=True)
    kept = [row for row in evals[1:] if int(row.split(",")[0]) < 17]
    assert kept, "the run evaluated before step 17"
    (folder / "evals.csv").write_text("".join([evals[0], *kept]))
    last_eval = float(kept[-1].split(",")[evals[0].split(",").index("epsilon")])

    record_failure(config, tmp_path, "killed by SIGKILL", folder)
    summary = json.loads((folder / "summary.json").read_text())
    q = 50 / N_SAMPLE
    assert summary["status"] == "failed" and summary["error"] == "killed by SIGKILL"
    assert summary["steps"] == 17 and isinstance(summary["steps"], int)
    assert summary["privacy_steps"] == 17 and summary["accountant"] == accountant
    assert summary["noise_multiplier"] == 1.1 and summary["sample_rate"] == q
    want = opacus_epsilon(1.1, q, 17, 1e-5, accountant)
    assert summary["epsilon"] == pytest.approx(want, rel=1e-9)
    assert summary["epsilon"] > last_eval  # more steps spend more


RULES = '''\
import torch

from gradlab import ClipRule


class Flat(ClipRule):
    """clipping: flat, written as a rule."""

    def clip(self, squared_norms, thresholds):
        norms = squared_norms.sum(1).sqrt()
        return (thresholds / (norms + 1e-6)).clamp(max=1.0)


class Loose(ClipRule):
    """Scales every example by 2: breaks the bound."""

    def clip(self, squared_norms, thresholds):
        return torch.full_like(squared_norms, 2.0)


class Raises(ClipRule):
    def clip(self, squared_norms, thresholds):
        raise ValueError("my rule is wrong")
'''


def write_rules(folder: Path) -> Path:
    path = folder / "rules.py"
    path.write_text(RULES)
    return path


def test_a_clipping_rule_that_keeps_the_bound_trains_like_flat_with_the_same_epsilon(tmp_path):
    rules = write_rules(tmp_path)
    runs = {}
    for clipping in ("flat", f"{rules}:Flat"):
        raw = private({"noise_multiplier": 1.1, "max_grad_norm": 0.05, "clipping": clipping})
        runs[clipping] = train(config_from_dict(raw), tmp_path / "runs")
    flat, mine = runs["flat"], runs[f"{rules}:Flat"]
    assert mine.summary["status"] == "completed", mine.summary
    assert mine.summary["epsilon"] == flat.summary["epsilon"]  # the accounting is unchanged
    assert (
        read_csv(mine.path / "steps.csv")[-1]["loss"]
        == read_csv(flat.path / "steps.csv")[-1]["loss"]
    )
    meta = json.loads((mine.path / "meta.json").read_text())
    assert meta["plugins"][f"{rules}:Flat"]["origin"] == "file"
    assert float(read_csv(mine.path / "steps.csv")[0]["dp.clipped_frac"]) > 0  # it did clip


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Loose", "broke the sensitivity bound: a clipped example's gradient norm is"),
        ("Raises", "raised: ValueError: my rule is wrong (at "),
    ],
)
def test_a_clipping_rule_that_breaks_the_bound_fails_the_run(tmp_path, name, message):
    rules = write_rules(tmp_path)
    raw = private({"noise_multiplier": 1.0, "clipping": f"{rules}:{name}"})
    result = train(config_from_dict(raw), tmp_path / "runs")
    assert result.summary["status"] == "failed" and result.summary["steps"] <= 1
    assert (
        message in result.summary["error"]
        and f"privacy.clipping {rules}:{name}" in result.summary["error"]
    )


def test_a_bad_clipping_rule_is_one_line(tmp_path):
    rules = write_rules(tmp_path)
    edit = tmp_path / "edit.py"
    edit.write_text("import torch\nfrom gradlab import Edit\n\n\nclass E(Edit):\n    pass\n")
    for clipping, message in (
        ("median", "privacy.clipping: 'median' is not a clipping; use flat, per_layer"),
        (f"{tmp_path}/nope.py:Flat", "nope.py not found"),
        (f"{edit}:E", "is an edit, not a clipping rule"),
    ):
        with pytest.raises(ConfigError, match="privacy.clipping") as info:
            config_from_dict(private({"clipping": clipping}))
        assert message in str(info.value), str(info.value)
    with pytest.raises(ConfigError, match="is a clipping rule"):
        config_from_dict(tiny(edit=[{"type": f"{rules}:Flat"}]))


def test_a_clipping_rules_source_is_part_of_the_experiment(tmp_path):
    from gradlab.environment import resolved_setup

    rules = write_rules(tmp_path)
    cfg = config_from_dict(private({"clipping": f"{rules}:Flat"}))
    before = cfg.experiment_hash(resolved_setup(cfg))
    rules.write_text(RULES + "\n# changed\n")
    cfg = config_from_dict(private({"clipping": f"{rules}:Flat"}))
    assert cfg.experiment_hash(resolved_setup(cfg)) != before
