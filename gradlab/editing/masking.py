"""Masking: let only some gradient entries (or parameters) through."""

from __future__ import annotations

import math

import torch
from pydantic import Field

from gradlab.editing.base import Edit, EditParams, Tensors, global_norm
from gradlab.editing.registry import register


class MaskParams(EditParams):
    p: float = Field(0.5, gt=0, le=1)
    """Keep probability of each entry."""
    fixed: bool = False
    """Draw the mask once before training (from the run's seed) instead of every step."""
    rescale: bool = False
    """Divide kept entries by p, so the expected gradient is unchanged (inverted dropout)."""


@register
class Mask(Edit):
    """Random binary mask: each entry is kept with probability ``p`` (``g <- g * m``,
    ``m ~ Bernoulli(p)``), drawn fresh every step as in the reference tutorial, or once with
    ``fixed``. Statistic: ``kept_frac``, the fraction of targeted entries kept."""

    name = "mask"
    family = "masking"
    summary = "keep each gradient entry with probability p (fresh or fixed mask)"
    Params = MaskParams
    params: MaskParams
    stats = ("kept_frac",)
    derived = ("masks",)  # drawn in setup from the edit's own generator

    def setup(self, weights: Tensors) -> None:
        self.masks = (
            {name: self._draw(w) for name, w in weights.items()} if self.params.fixed else None
        )

    def _draw(self, like: torch.Tensor) -> torch.Tensor:
        mask = torch.rand(like.shape, generator=self.generator, device=like.device) < self.params.p
        return mask.to(like.dtype)

    def edit(self, grads: Tensors, weights: Tensors, step: int) -> Tensors:
        kept = torch.zeros((), device=next(iter(grads.values())).device)
        total = 0
        for name, g in grads.items():
            mask = self.masks[name] if self.masks is not None else self._draw(g)
            g.mul_(mask / self.params.p if self.params.rescale else mask)
            kept += mask.sum()
            total += mask.numel()
        kept_frac = kept / total
        rescaled = self.params.rescale and self.params.p < 1  # every kept entry changes too
        changed = torch.ones_like(kept_frac) if rescaled else (kept_frac < 1).float()
        return {"kept_frac": kept_frac, "changed": changed}


class TopKParams(EditParams):
    k: float = Field(0.1, gt=0, le=1)
    """Fraction of entries kept in each tensor (at least one)."""


@register
class TopK(Edit):
    """Keep, in each targeted tensor, the ``ceil(k * numel)`` entries of largest magnitude
    and zero the rest (gradient sparsification). Statistics: ``kept_frac`` (entries kept)
    and ``norm_ratio`` (``||g_after|| / ||g_before||``)."""

    name = "topk"
    family = "masking"
    summary = "keep the fraction k of largest-magnitude entries of each tensor"
    Params = TopKParams
    params: TopKParams
    stats = ("kept_frac", "norm_ratio")

    def edit(self, grads: Tensors, weights: Tensors, step: int) -> Tensors:
        tensors = list(grads.values())
        before = global_norm(tensors)
        kept = total = 0
        for g in tensors:
            count = max(1, math.ceil(self.params.k * g.numel()))
            flat = g.view(-1)
            keep = torch.zeros_like(flat, dtype=torch.bool)
            keep[flat.abs().topk(count, sorted=False).indices] = True
            flat.mul_(keep)
            kept += count
            total += g.numel()
        after = global_norm(tensors)
        kept_frac = torch.tensor(kept / total, device=before.device)
        return {
            "kept_frac": kept_frac,
            "norm_ratio": after / before.clamp_min(1e-30),
            "changed": (kept_frac < 1).float(),
        }


@register
class Freeze(Edit):
    """Freeze the targeted parameters: their gradients become zero and the optimizer leaves
    them out entirely while the edit is active, so weight decay and momentum cannot move them
    either (SGD would: ``w <- w - lr * (0 + wd * w)``, and a momentum buffer keeps going).
    They stay bit-identical. No statistics besides ``changed``."""

    name = "freeze"
    family = "masking"
    summary = "keep parameters exactly unchanged (also under momentum and weight decay)"
    Params = EditParams
    params: EditParams
    stats = ()
    freezes = True

    def edit(self, grads: Tensors, weights: Tensors, step: int) -> Tensors:
        tensors = list(grads.values())
        torch._foreach_zero_(tensors)
        return {"changed": torch.ones((), device=tensors[0].device)}
