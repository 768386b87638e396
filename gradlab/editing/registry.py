"""The registry of gradient-editing strategies, by name."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from gradlab.editing.base import Edit

_STRATEGIES: dict[str, type[Edit]] = {}
E = TypeVar("E", bound="type[Edit]")


def register(cls: E) -> E:
    """Class decorator: make a strategy available under ``cls.name`` (names are unique)."""
    name = cls.name
    if not name or name in _STRATEGIES:
        raise ValueError(f"edit strategy name {name!r} is empty or already registered")
    _STRATEGIES[name] = cls
    return cls


def get_strategy(name: str) -> type[Edit]:
    """The strategy class registered as ``name``; KeyError lists the valid names."""
    try:
        return _STRATEGIES[name]
    except KeyError:
        raise KeyError(
            f"unknown edit type {name!r}; valid types: {', '.join(strategy_names())}"
        ) from None


def strategy_names() -> list[str]:
    return list(_STRATEGIES)


def strategies() -> dict[str, type[Edit]]:
    """Every registered strategy, in registration order (family by family)."""
    return dict(_STRATEGIES)
