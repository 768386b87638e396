"""Clipping: bound the gradient's size without changing its direction (or per element)."""

from __future__ import annotations

import torch
from pydantic import Field

from gradlab.editing.base import Edit, EditParams, Tensors
from gradlab.editing.registry import register


class ClipNormParams(EditParams):
    max_norm: float = Field(1.0, gt=0)
    """Largest allowed L2 norm of the targeted gradients taken together."""


@register
class ClipNorm(Edit):
    """Scale the targeted gradients so that their global L2 norm is at most ``max_norm``.

    ``g <- g * min(1, max_norm / (||g|| + 1e-6))`` with ``||g||`` over all targeted tensors
    together, the same as ``torch.nn.utils.clip_grad_norm_``.
    """

    name = "clip_norm"
    family = "clipping"
    summary = "scale gradients so their global L2 norm is at most max_norm"
    Params = ClipNormParams
    stats = ("norm", "scale")

    def edit(self, grads: Tensors, weights: Tensors, step: int) -> Tensors:
        tensors = list(grads.values())
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))
        scale = torch.clamp(self.params.max_norm / (norm + 1e-6), max=1.0)
        torch._foreach_mul_(tensors, scale)
        return {"norm": norm, "scale": scale, "changed": (scale < 1.0).float()}
