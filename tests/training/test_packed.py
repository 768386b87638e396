"""Packed replicas (issue 24, first part): the batched engine and SGD give each replica the
numbers of the same run trained alone (float64, 200 steps, 1e-9 relative)."""

from __future__ import annotations

import pytest
import torch

from gradlab.config import ModelConfig, OptimConfig
from gradlab.data import batch_order
from gradlab.engines.analytic import AnalyticEngine
from gradlab.engines.packed import PackedAnalyticEngine, PackedSGD, stack_models
from gradlab.model import MLP
from gradlab.optimizers import make_optimizer

CPU = torch.device("cpu")
STEPS = 200


def _data(n: int = 600) -> tuple[torch.Tensor, torch.Tensor]:
    """Images with labels a fixed linear teacher gives: learnable, so training is stable
    (on random labels a deep tanh net's rounding differences grow without bound)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 784, generator=g, dtype=torch.float64)
    teacher = torch.randn(784, 10, generator=g, dtype=torch.float64)
    y = ((x - 0.5) @ teacher).argmax(1)
    return x, y


def _orders(seed: int, n: int, batch: int):
    """A replica's batches, epoch after epoch, from its own generator (as a run draws them)."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield from batch_order(n, batch, generator, CPU)


SETTINGS = [  # per replica: seed, lr, momentum, dampening, weight decay
    (0, 0.1, 0.0, 0.0, 0.0),
    (1, 0.05, 0.9, 0.0, 0.0),
    (2, 0.2, 0.5, 0.1, 1e-3),
    (3, 0.01, 0.9, 0.0, 5e-4),
]


@pytest.mark.parametrize(
    ("hidden", "activation", "output_activation", "nesterov"),
    [
        (32, "relu", "none", False),
        ([24, 16, 12], "tanh", "none", True),
        (20, "sigmoid", "relu", False),
    ],
)
def test_packed_replicas_equal_the_runs_trained_alone(
    hidden, activation, output_activation, nesterov
):
    x, y = _data()
    cfg = ModelConfig(hidden=hidden, activation=activation, output_activation=output_activation)
    # Nesterov (momentum, no dampening) on the deep tanh net: smaller steps, where its
    # training is stable (at lr 0.05 rounding differences double every few steps, alone too)
    nesterov_settings = [
        (1, 0.01, 0.9, 0.0, 0.0),
        (3, 0.005, 0.9, 0.0, 5e-4),
        (4, 0.02, 0.7, 0.0, 0.0),
    ]
    settings = nesterov_settings if nesterov else SETTINGS
    models = []
    for seed, *_ in settings:
        torch.manual_seed(seed)
        models.append(MLP(cfg).double())
    weights, biases = stack_models(models)

    # alone: gradlab's analytic engine and SGD, one run at a time
    alone_losses, alone_weights = [], []
    for model, (seed, lr, momentum, dampening, decay) in zip(models, settings, strict=True):
        engine = AnalyticEngine(model)
        params = dict(model.named_parameters())
        optim = OptimConfig(
            lr=lr, momentum=momentum, dampening=dampening, weight_decay=decay,
            nesterov=nesterov, batch_size=50,
        )  # fmt: skip
        optimizer = make_optimizer(params, optim)
        losses = []
        for _, idx in zip(range(STEPS), _orders(seed, len(x), 50), strict=False):
            loss, _ = engine.step(x[idx], y[idx])
            optimizer.step()
            losses.append(loss.item())
        alone_losses.append(losses)
        alone_weights.append([p.detach().clone() for p in model.parameters()])

    # packed: every replica in one batched step, each with its own data order
    engine = PackedAnalyticEngine(weights, biases, activation, output_activation == "relu")
    params = [t for pair in zip(weights, biases, strict=True) for t in pair]
    grads = [t for pair in zip(engine.weight_grads, engine.bias_grads, strict=True) for t in pair]
    column = lambda i: torch.tensor([s[i] for s in settings], dtype=torch.float64)  # noqa: E731
    optimizer = PackedSGD(params, column(1), column(2), column(3), column(4), nesterov)
    orders = [_orders(s[0], len(x), 50) for s in settings]
    packed_losses = []
    for _ in range(STEPS):
        idx = torch.stack([next(order) for order in orders])
        loss, _ = engine.step(x[idx], y[idx])
        optimizer.step(grads)
        packed_losses.append(loss.tolist())

    for r in range(len(settings)):
        got = torch.tensor([step[r] for step in packed_losses], dtype=torch.float64)
        torch.testing.assert_close(
            got, torch.tensor(alone_losses[r], dtype=torch.float64), rtol=1e-9, atol=0
        )
        for packed, alone in zip(params, alone_weights[r], strict=True):
            torch.testing.assert_close(packed[r], alone, rtol=1e-9, atol=1e-12)
