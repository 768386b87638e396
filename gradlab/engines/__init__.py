"""Gradient engines: what turns a batch into a loss and named gradients.

Both engines fill ``param.grad`` of the same network, so edits, metrics and the optimizer
never know which one ran:

- ``autograd``: PyTorch's autograd (with autocast and a GradScaler for mixed precision).
- ``analytic``: the network's backward derived by hand (any depth), with preallocated work
  tensors and fused ops; no autograd graph. Full precision only.

``engine: auto`` takes ``analytic`` when mixed precision is off, ``autograd`` otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from gradlab.engines.analytic import AnalyticEngine
from gradlab.engines.autograd import AutogradEngine
from gradlab.engines.base import Engine
from gradlab.errors import ConfigError

if TYPE_CHECKING:
    from gradlab.model import MLP


def resolve_engine(name: str, amp_dtype: torch.dtype | None) -> str:
    """The engine ``name`` (``auto``, ``autograd``, ``analytic``) stands for with this AMP mode."""
    if name == "auto":
        return "analytic" if amp_dtype is None else "autograd"
    if name == "analytic" and amp_dtype is not None:
        raise ConfigError(
            "train.engine: analytic runs in full precision only; use train.amp=off "
            "or train.engine=autograd for mixed precision"
        )
    return name


def make_engine(
    name: str,
    model: MLP,
    scaler: torch.amp.GradScaler | None = None,
    amp_dtype: torch.dtype | None = None,
) -> Engine:
    """An engine instance for ``model`` (``name`` already resolved)."""
    if name == "analytic":
        return AnalyticEngine(model)
    return AutogradEngine(model, scaler, amp_dtype)


__all__ = ["AnalyticEngine", "AutogradEngine", "Engine", "make_engine", "resolve_engine"]
