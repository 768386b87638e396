"""The registry of gradient-editing strategies, by name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gradlab.registry import Registry

if TYPE_CHECKING:
    from gradlab.editing.base import Edit

_STRATEGIES: Registry[type[Edit]] = Registry("edit strategy", "edit type", "types")
register = _STRATEGIES.register
get_strategy = _STRATEGIES.get
strategy_names = _STRATEGIES.names


def strategies() -> dict[str, type[Edit]]:
    """Every registered strategy, in registration order (family by family)."""
    return _STRATEGIES.all()
