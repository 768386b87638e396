"""Parsing an ordered list of edits from the config, and applying it once per step."""

from __future__ import annotations

import hashlib
import math
from types import MappingProxyType
from typing import Any

import torch
from pydantic import ValidationError

from gradlab.editing.base import Edit, EditContext, EditParams, Tensors, check_statistics
from gradlab.editing.registry import get_strategy, strategy_names
from gradlab.errors import ConfigError, GradlabError
from gradlab.plugins import (
    entry_point_spec,
    is_plugin_spec,
    load_plugin,
    loaded_plugins,
    plugin_error,
)
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
    if isinstance(kind, str) and not is_plugin_spec(kind) and kind not in strategy_names():
        spec = entry_point_spec(kind, "edit")  # a short name an installed package gives
        if spec is not None:
            entry = {**entry, "type": spec}
            kind = spec
    if is_plugin_spec(kind) and len(kind) <= 4096:  # the user's own class: path.py:Class
        try:
            strategy = load_plugin(kind).cls
        except ConfigError as exc:
            raise ConfigError(f"{where}.type: {exc}") from None
        if not issubclass(strategy, Edit):
            what, home = (
                ("a probe (gradlab.Probe)", "diagnostics.probes")
                if getattr(strategy, "per_example", None) is not None
                else ("a clipping rule (gradlab.ClipRule)", "privacy.clipping")
            )
            raise ConfigError(f"{where}.type: {kind} is {what}, not an edit: it goes in {home}")
    elif kind is not None and (not isinstance(kind, str) or len(kind) > 40):
        raise ConfigError(f"{where}.type: unknown edit type {show(kind)}; see `gradlab strategies`")
    else:
        try:
            strategy = get_strategy(str(kind))
        except KeyError as exc:
            raise ConfigError(
                f"{where}.type: {exc.args[0]}; or your own, path/to/file.py:ClassName"
            ) from None
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
            self.edits.append(strategy_class(params.type)(params, names, generator))
        self.columns = [c for i, e in enumerate(self.edits) for c in e.stat_columns(i)]
        self._plugins = {id(e) for e in self.edits if is_plugin_spec(e.params.type)}
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

    def state_dict(self) -> list[dict[str, Any]]:
        """Each edit's random generator and own state (:meth:`Edit.state_dict`), for a
        checkpoint.

        Raises:
            PluginError: a user's edit keeps state a checkpoint cannot save, or its
                ``state_dict`` raised.
        """
        states = []
        for e in self.edits:
            try:
                own = e.state_dict()
            except TypeError as exc:  # an attribute a checkpoint cannot save: the message says
                raise PluginError(f"{exc} ({e.params.type})") from None
            except Exception as exc:  # noqa: BLE001 - the user's code, or its attributes
                raise PluginError(f"edit {e.name} ({e.params.type}): {plugin_error(exc)}") from exc
            states.append({"generator": e.generator.get_state(), "state": own})
        return states

    def load_state_dict(self, states: list[dict[str, Any]]) -> None:
        """Put back what :meth:`state_dict` gave (after :meth:`setup`)."""
        for e, saved in zip(self.edits, states, strict=True):
            e.generator.set_state(saved["generator"])
            try:
                e.load_state_dict(saved["state"])
            except Exception as exc:  # noqa: BLE001 - the user's code
                raise PluginError(f"edit {e.name} ({e.params.type}): {plugin_error(exc)}") from exc

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
        self,
        grads: Tensors,
        weights: Tensors,
        step: int,
        norms: Tensors | None = None,
        lr: float = math.nan,
        loss: torch.Tensor | None = None,
        optimizer_state: dict[str, dict[str, Any]] | None = None,
    ) -> list[torch.Tensor]:
        """Run every edit that is active at ``step``; returns statistics in column order
        (NaN statistics and ``changed = 0`` for an edit that is switched off).

        ``norms``: the L2 norm of each gradient before any edit, when the caller has them
        (handed to the first edit, so it need not compute them again). ``lr``, ``loss`` and
        ``optimizer_state`` (the optimizer's ``state``) make a user's edit's
        :class:`~gradlab.editing.base.EditContext`.
        """
        values: list[torch.Tensor] = []
        for i, e in enumerate(self.edits):
            e.known_norms = [norms[n] for n in e.targets] if norms is not None and i == 0 else None
            if not e.active(step):
                values.extend(self._idle[id(e)])
                continue
            given = {n: grads[n] for n in e.targets}
            if id(e) in self._plugins:  # the user's code: run and checked against the contract
                state = optimizer_state or {}
                e.context = EditContext(
                    step,
                    lr,
                    loss if loss is not None else self._idle[id(e)][-1] * math.nan,
                    MappingProxyType(
                        {n: MappingProxyType(state[n]) for n in e.targets if n in state}
                    ),
                )
                stats = _checked_edit(e, given, {n: weights[n] for n in e.targets}, step)
            else:
                stats = e.edit(given, {n: weights[n] for n in e.targets}, step)
            values.extend(stats[s] for s in (*e.stats, "changed"))
        return values


def strategy_class(kind: str) -> type[Edit]:
    """The class of an edit ``type``: a built-in name, or a plugin spec (the class loaded
    when the config was validated)."""
    if is_plugin_spec(kind):
        plugin = loaded_plugins().get(kind) or load_plugin(kind)
        return plugin.cls
    return get_strategy(kind)


class PluginError(GradlabError):
    """A user's edit raised, or broke the contract every edit keeps (:func:`_checked_edit`);
    the run fails with this line."""


def _checked_edit(e: Edit, grads: Tensors, weights: Tensors, step: int) -> Tensors:
    """``e.edit(...)`` of a plugin, checked: it edits the gradients in place (the same
    tensors, shapes, dtypes and devices) and returns its declared statistics, each a 0-dim
    tensor, plus ``changed``. An exception in it names the plugin's file and line."""
    before = {n: (g, g.shape, g.dtype, g.device, g.data_ptr()) for n, g in grads.items()}
    who = f"edit {e.name} ({e.params.type})"
    try:
        stats = e.edit(grads, weights, step)
    except Exception as exc:  # noqa: BLE001 - the user's code: where it broke, in one line
        raise PluginError(f"{who} raised at step {step}: {plugin_error(exc)}") from exc
    for n, (tensor, shape, dtype, device, pointer) in before.items():
        now = grads.get(n)
        if now is not tensor or tensor.data_ptr() != pointer:
            raise PluginError(
                f"{who} replaced the gradient of {n} at step {step}: an edit changes the "
                f"tensors it is given in place (g.mul_(...), g.copy_(...), g[...] = ...)"
            )
        if (tensor.shape, tensor.dtype, tensor.device) != (shape, dtype, device):
            raise PluginError(
                f"{who} changed the shape, dtype or device of the gradient of {n} at step "
                f"{step}; an edit keeps each gradient's shape, dtype and device"
            )
    if set(grads) != set(before):
        raise PluginError(f"{who} added or removed gradients at step {step}; edit them in place")
    home = next(iter(before.values()))[3] if before else None
    declared = [*e.stats, "changed"]
    check_statistics(stats, declared, who, step, home, PluginError, " (its stats, then changed)")
    return stats
