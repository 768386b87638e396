"""Perturbation: add Gaussian noise to the gradient."""

from __future__ import annotations

import math

import torch
from pydantic import Field

from gradlab.editing.base import Edit, EditParams, Tensors
from gradlab.editing.registry import register


def add_gaussian(grads: Tensors, std: float | Tensors, generator: torch.Generator) -> torch.Tensor:
    """``g <- g + std * N(0, 1)`` for each tensor (``std`` a number or one per tensor);
    returns the L2 norm of all the noise added."""
    squares = []
    for name, g in grads.items():
        noise = torch.randn(g.shape, generator=generator, device=g.device, dtype=g.dtype)
        noise.mul_(std[name] if isinstance(std, dict) else std)
        g.add_(noise)
        squares.append(noise.square().sum())
    return torch.stack(squares).sum().sqrt()


class NoiseParams(EditParams):
    sigma: float = Field(0.01, ge=0)
    """Standard deviation of the noise (absolute, or relative to the gradient's RMS)."""
    relative: bool = False
    """Use std = sigma x RMS of each tensor's gradient (scale-free noise)."""


@register
class Noise(Edit):
    """Add Gaussian noise: ``g <- g + N(0, sigma^2)`` (the reference tutorial adds
    sigma 0.1 to fc2.bias), or with ``relative``, ``std = sigma * ||g|| / sqrt(numel)``
    per tensor. Statistic: ``norm``, the L2 norm of the noise added."""

    name = "noise"
    family = "perturbation"
    summary = "add Gaussian noise with absolute or gradient-relative std"
    Params = NoiseParams
    params: NoiseParams
    stats = ("norm",)

    def edit(self, grads: Tensors, weights: Tensors, step: int) -> Tensors:
        sigma = self.params.sigma
        std: float | Tensors
        if self.params.relative:
            std = {
                n: sigma * torch.linalg.vector_norm(g) / math.sqrt(g.numel())
                for n, g in grads.items()
            }
        else:
            std = sigma
        norm = add_gaussian(grads, std, self.generator)
        return {"norm": norm, "changed": (norm > 0).float()}


class AnnealedNoiseParams(EditParams):
    eta: float = Field(0.01, gt=0)
    """Variance at the first step (the paper tries 0.01, 0.3 and 1.0)."""
    gamma: float = Field(0.55, ge=0)
    """Decay exponent of the variance."""


@register
class AnnealedNoise(Edit):
    """Annealed Gaussian gradient noise (Neelakantan et al. 2015):
    ``g <- g + N(0, sigma_t^2)`` with variance ``sigma_t^2 = eta / (1 + t)^gamma``, where
    ``t = step - 1`` (so the first step has variance eta). Statistics: ``std`` (sigma_t) and
    ``norm`` (of the noise added)."""

    name = "annealed_noise"
    family = "perturbation"
    summary = "Gaussian noise whose variance decays as eta / (1 + t)^gamma"
    Params = AnnealedNoiseParams
    params: AnnealedNoiseParams
    stats = ("std", "norm")

    def std_at(self, step: int) -> float:
        return math.sqrt(self.params.eta / (1 + (step - 1)) ** self.params.gamma)

    def edit(self, grads: Tensors, weights: Tensors, step: int) -> Tensors:
        std = self.std_at(step)
        norm = add_gaussian(grads, std, self.generator)
        return {
            "std": torch.tensor(std, device=norm.device),
            "norm": norm,
            "changed": (norm > 0).float(),
        }
