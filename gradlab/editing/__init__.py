"""Gradient editing: strategies found through a registry, composed into a pipeline."""

from gradlab.editing import clipping  # noqa: F401  (registers the clipping strategies)
from gradlab.editing.base import Edit, EditParams
from gradlab.editing.pipeline import EditPipeline, parse_edit
from gradlab.editing.registry import get_strategy, register, strategies, strategy_names

__all__ = [
    "Edit",
    "EditParams",
    "EditPipeline",
    "get_strategy",
    "parse_edit",
    "register",
    "strategies",
    "strategy_names",
]
