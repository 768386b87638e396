"""The registry of optimizers, by name (the config's ``optim.name``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from gradlab.optimizers.base import Optimizer

_OPTIMIZERS: dict[str, type[Optimizer]] = {}
OptimizerClass = TypeVar("OptimizerClass", bound="type[Optimizer]")


def register(cls: OptimizerClass) -> OptimizerClass:
    """Class decorator: make an optimizer available under ``cls.name`` (names are unique)."""
    name = cls.name
    if not name or name in _OPTIMIZERS:
        raise ValueError(f"optimizer name {name!r} is empty or already registered")
    _OPTIMIZERS[name] = cls
    return cls


def get_optimizer(name: str) -> type[Optimizer]:
    """The optimizer class registered as ``name``; KeyError lists the valid names."""
    try:
        return _OPTIMIZERS[name]
    except KeyError:
        raise KeyError(
            f"unknown optimizer {name!r}; valid optimizers: {', '.join(optimizer_names())}"
        ) from None


def optimizer_names() -> list[str]:
    return list(_OPTIMIZERS)


def optimizers() -> dict[str, type[Optimizer]]:
    """Every registered optimizer, in registration order."""
    return dict(_OPTIMIZERS)
