"""The registry of optimizers, by name (the config's ``optim.name``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gradlab.registry import Registry

if TYPE_CHECKING:
    from gradlab.optimizers.base import Optimizer

_OPTIMIZERS: Registry[type[Optimizer]] = Registry("optimizer", "optimizer", "optimizers")
register = _OPTIMIZERS.register
get_optimizer = _OPTIMIZERS.get
optimizer_names = _OPTIMIZERS.names


def optimizers() -> dict[str, type[Optimizer]]:
    """Every registered optimizer, in registration order."""
    return _OPTIMIZERS.all()
