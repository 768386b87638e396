"""Optimizers found through a registry: ``optim.name`` picks one.

Each is one class with ``@register`` (``name``, the ``optim`` keys it reads, the
``torch.optim`` class it reproduces); the config, the loop and the generated tests pick it
up from the registry. Importing the modules below registers them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from gradlab.optimizers.adam import Adam, AdamW
from gradlab.optimizers.base import Optimizer
from gradlab.optimizers.registry import get_optimizer, optimizer_names, optimizers, register
from gradlab.optimizers.rmsprop import RMSprop
from gradlab.optimizers.sgd import SGD

if TYPE_CHECKING:
    from gradlab.config import OptimConfig


def make_optimizer(params: dict[str, torch.Tensor], cfg: OptimConfig) -> Optimizer:
    """The optimizer ``cfg.name`` over the named parameters."""
    return get_optimizer(cfg.name)(params, cfg)


__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "Optimizer",
    "RMSprop",
    "get_optimizer",
    "make_optimizer",
    "optimizer_names",
    "optimizers",
    "register",
]
