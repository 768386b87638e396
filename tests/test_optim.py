"""gradlab's SGD against torch.optim.SGD, step by step."""

import pytest
import torch

from gradlab.config import OptimConfig
from gradlab.optim import SGD


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"weight_decay": 0.01},
        {"momentum": 0.9},
        {"momentum": 0.9, "dampening": 0.5, "weight_decay": 0.001},
        {"momentum": 0.8, "nesterov": True, "weight_decay": 0.01},
    ],
)
def test_matches_torch_sgd(options):
    cfg = OptimConfig(lr=0.05, **options)
    g = torch.Generator().manual_seed(0)
    shapes = [(5, 3), (5,)]
    ours = {f"p{i}": torch.randn(s, generator=g) for i, s in enumerate(shapes)}
    theirs = [p.clone().requires_grad_() for p in ours.values()]
    reference = torch.optim.SGD(theirs, **cfg.model_dump(include={"lr", *options}))
    sgd = SGD(ours, cfg)
    for _ in range(5):
        grads = [torch.randn(s, generator=g) for s in shapes]
        for p, grad in zip(ours.values(), grads, strict=True):
            p.grad = grad.clone()
        for p, grad in zip(theirs, grads, strict=True):
            p.grad = grad.clone()
        sgd.step()
        reference.step()
    for a, b in zip(ours.values(), theirs, strict=True):
        torch.testing.assert_close(a, b.detach(), rtol=1e-6, atol=1e-7)


def test_frozen_parameters_stay_bit_identical():
    cfg = OptimConfig(lr=0.1, momentum=0.9, weight_decay=0.1)
    params = {"a": torch.ones(3), "b": torch.ones(3)}
    before = params["a"].clone()
    sgd = SGD(params, cfg)
    for _ in range(3):
        params["a"].grad = torch.zeros(3)
        params["b"].grad = torch.zeros(3)
        sgd.step(frozen=frozenset({"a"}))
    assert torch.equal(params["a"], before)
    assert not torch.equal(params["b"], before)  # weight decay moved the other one
