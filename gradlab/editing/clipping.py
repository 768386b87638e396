"""Clipping: bound the gradient's size, globally, per tensor, per element or per unit."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from gradlab.editing.base import Edit, EditParams, Tensors
from gradlab.editing.registry import register


class ClipNormParams(EditParams):
    max_norm: float = Field(1.0, gt=0)
    """Largest allowed norm of the targeted gradients."""
    norm: Literal["l2", "inf"] = "l2"
    """`l2` (Euclidean) or `inf` (largest absolute entry)."""
    per_param: bool = False
    """Clip each targeted tensor on its own instead of all of them together."""


@register
class ClipNorm(Edit):
    """Scale the gradients so that their norm is at most ``max_norm``.

    ``g <- g * min(1, max_norm / (||g|| + 1e-6))``, the norm taken over all targeted tensors
    together (exactly ``torch.nn.utils.clip_grad_norm_``) or, with ``per_param``, over each
    tensor on its own. Statistics: ``norm`` (over all targets, before clipping) and ``scale``
    (the smallest factor applied).
    """

    name = "clip_norm"
    family = "clipping"
    summary = "scale gradients so their (global or per-tensor) norm is at most max_norm"
    Params = ClipNormParams
    params: ClipNormParams
    stats = ("norm", "scale")

    def edit(self, grads: Tensors, weights: Tensors, step: int) -> Tensors:
        p = self.params
        tensors = list(grads.values())
        order = 2.0 if p.norm == "l2" else float("inf")
        known = self.known_norms if p.norm == "l2" else None
        norms = torch.stack(known if known is not None else torch._foreach_norm(tensors, order))
        total = torch.linalg.vector_norm(norms, order)
        if p.per_param:
            scales = torch.clamp(p.max_norm / (norms + 1e-6), max=1.0)
            torch._foreach_mul_(tensors, list(scales.unbind()))
            scale = scales.min()
        else:
            scale = torch.clamp(p.max_norm / (total + 1e-6), max=1.0)
            torch._foreach_mul_(tensors, scale)
        return {"norm": total, "scale": scale, "changed": (scale < 1.0).float()}


class ClipValueParams(EditParams):
    value: float = Field(0.05, gt=0)
    """Bound v: every entry is clipped to [-v, v] (the reference tutorial uses 0.05)."""


@register
class ClipValue(Edit):
    """Clip every gradient entry to ``[-value, value]``, like
    ``torch.nn.utils.clip_grad_value_``. Statistic: ``clipped_frac``, the fraction of
    targeted entries that were outside the interval."""

    name = "clip_value"
    family = "clipping"
    summary = "clip each gradient entry to [-value, value]"
    Params = ClipValueParams
    params: ClipValueParams
    stats = ("clipped_frac",)

    def edit(self, grads: Tensors, weights: Tensors, step: int) -> Tensors:
        v = self.params.value
        outside = torch.zeros((), device=next(iter(grads.values())).device)
        total = 0
        for g in grads.values():
            outside += (g.abs() > v).sum()
            total += g.numel()
            g.clamp_(-v, v)
        clipped_frac = outside / total
        return {"clipped_frac": clipped_frac, "changed": (clipped_frac > 0).float()}


class AgcParams(EditParams):
    lam: float = Field(0.01, gt=0)
    """Clipping threshold lambda on the ratio ||G_i|| / max(||W_i||, eps)."""
    eps: float = Field(1e-3, gt=0)
    """Floor on the weight norm, so units with zero weights can still move."""


def unitwise_norm(x: torch.Tensor) -> torch.Tensor:
    """L2 norm per output unit (row) of a weight matrix; of the whole tensor for a vector,
    as in the NFNets reference code and timm."""
    if x.ndim <= 1:
        return torch.linalg.vector_norm(x)
    return torch.linalg.vector_norm(x, dim=tuple(range(1, x.ndim)), keepdim=True)


@register
class AdaptiveGradientClipping(Edit):
    """Adaptive gradient clipping (Brock et al. 2021, NFNets), per output unit i:
    if ``||G_i|| / max(||W_i||, eps) > lam`` then
    ``G_i <- lam * max(||W_i||, eps) / ||G_i|| * G_i``. A bias vector counts as one unit.
    The paper leaves the final classifier out: target ``fc1.*`` to follow it.
    Statistic: ``clipped_frac``, the fraction of units clipped."""

    name = "agc"
    family = "clipping"
    summary = "adaptive clipping per output unit relative to the weight norm (NFNets)"
    Params = AgcParams
    params: AgcParams
    stats = ("clipped_frac",)

    def edit(self, grads: Tensors, weights: Tensors, step: int) -> Tensors:
        p = self.params
        clipped = torch.zeros((), device=next(iter(grads.values())).device)
        units = 0
        for name, g in grads.items():
            max_norm = unitwise_norm(weights[name].detach()).clamp_min(p.eps) * p.lam
            grad_norm = unitwise_norm(g)
            over = grad_norm > max_norm
            g.mul_(torch.where(over, max_norm / grad_norm.clamp_min(1e-6), 1.0))
            clipped += over.sum()
            units += over.numel()
        clipped_frac = clipped / units
        return {"clipped_frac": clipped_frac, "changed": (clipped_frac > 0).float()}
