"""Gradient editing: strategies found through a registry, composed into a pipeline.

Adding a strategy is one class in one family module with ``@register``; the loop, the CLI,
``gradlab strategies`` and the generated tests pick it up from the registry.
"""

# importing the family modules registers their strategies, family by family
from gradlab.editing import clipping, masking, perturbation, replacement  # noqa: F401
from gradlab.editing.base import Edit, EditContext, EditParams, param_docs
from gradlab.editing.pipeline import EditPipeline, parse_edit
from gradlab.editing.registry import get_strategy, register, strategies, strategy_names

__all__ = [
    "Edit",
    "EditContext",
    "EditParams",
    "EditPipeline",
    "get_strategy",
    "param_docs",
    "parse_edit",
    "register",
    "strategies",
    "strategy_names",
]
