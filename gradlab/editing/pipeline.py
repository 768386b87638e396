"""Parsing an ordered list of edits from the config, and applying it once per step."""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from pydantic import ValidationError

from gradlab.editing.base import Edit, EditParams, Tensors
from gradlab.editing.registry import get_strategy
from gradlab.errors import ConfigError
from gradlab.schema import describe_validation_error, show

_NOTHING: frozenset[str] = frozenset()


def parse_edit(position: int, entry: Any, parameter_names: list[str] | None = None) -> EditParams:
    """Validate one config entry ``{type: NAME, ...}`` against its strategy's parameters.

    Args:
        parameter_names: the model's parameters, which the ``params`` patterns must match
            (None: left unchecked).
    """
    where = f"edit[{position}]"
    if isinstance(entry, EditParams):  # already parsed (a Config built from a Config)
        return entry
    if not isinstance(entry, dict):
        raise ConfigError(
            f"{where}: expected a mapping like {{type: clip_norm}}, got {show(entry)}"
        )
    if "type" not in entry:
        raise ConfigError(f"{where}.type: required, but missing (see `gradlab strategies`)")
    kind = entry["type"]
    if kind is not None and (not isinstance(kind, str) or len(kind) > 40):
        raise ConfigError(f"{where}.type: unknown edit type {show(kind)}; see `gradlab strategies`")
    try:
        strategy = get_strategy(str(kind))
    except KeyError as exc:
        raise ConfigError(f"{where}.type: {exc.args[0]}") from None
    try:
        return strategy.Params.model_validate(entry, context={"parameter_names": parameter_names})
    except ValidationError as exc:
        raise ConfigError(
            describe_validation_error(exc, strategy.Params, prefix=f"{where}.")
        ) from None


def edit_seed(run_seed: int, position: int) -> int:
    """The seed of the random numbers of the edit at ``position``: independent of the
    data order and of the other edits, so adding an edit changes nothing else."""
    digest = hashlib.sha256(f"gradlab-edit:{run_seed}:{position}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class EditPipeline:
    """The configured edits, applied in order to named gradients between backward and step."""

    def __init__(
        self, entries: list[EditParams], names: list[str], seed: int, device: torch.device
    ) -> None:
        self.edits: list[Edit] = []
        for position, params in enumerate(entries):
            generator = torch.Generator(device=device)
            generator.manual_seed(edit_seed(seed, position))
            self.edits.append(get_strategy(params.type)(params, names, generator))
        self.columns = [c for i, e in enumerate(self.edits) for c in e.stat_columns(i)]
        self._freezers = [e for e in self.edits if e.freezes]
        self._idle = {
            id(e): [torch.tensor(float("nan"), device=device)] * len(e.stats)
            + [torch.zeros((), device=device)]
            for e in self.edits
        }

    def __len__(self) -> int:
        return len(self.edits)

    def setup(self, weights: Tensors) -> None:
        for e in self.edits:
            e.setup({n: weights[n] for n in e.targets})

    def label(self) -> str:
        """The pipeline in short form, ``clip_norm(1.0) > noise(0.01)``; ``none`` when empty."""
        return " > ".join(e.label() for e in self.edits) or "none"

    def frozen_at(self, step: int) -> frozenset[str]:
        """Names of the parameters that ``freeze`` edits keep out of the update at ``step``."""
        if not self._freezers:
            return _NOTHING
        return frozenset(n for e in self._freezers if e.active(step) for n in e.targets)

    def idle_stats(self) -> list[torch.Tensor]:
        """Statistics of a step at which no edit ran (NaN, ``changed = 0``)."""
        return [value for e in self.edits for value in self._idle[id(e)]]

    def apply(
        self, grads: Tensors, weights: Tensors, step: int, norms: Tensors | None = None
    ) -> list[torch.Tensor]:
        """Run every edit that is active at ``step``; returns statistics in column order
        (NaN statistics and ``changed = 0`` for an edit that is switched off).

        ``norms``: the L2 norm of each gradient before any edit, when the caller has them
        (handed to the first edit, so it need not compute them again).
        """
        values: list[torch.Tensor] = []
        for i, e in enumerate(self.edits):
            e.known_norms = [norms[n] for n in e.targets] if norms is not None and i == 0 else None
            if not e.active(step):
                values.extend(self._idle[id(e)])
                continue
            stats = e.edit(
                {n: grads[n] for n in e.targets}, {n: weights[n] for n in e.targets}, step
            )
            values.extend(stats[s] for s in (*e.stats, "changed"))
        return values
