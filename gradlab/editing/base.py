"""The strategy interface: parameters, targeting, schedule and per-step statistics.

An edit sees the gradients as a mapping from parameter name to tensor (whichever engine
made them), changes them in place, and returns its statistics as 0-dim tensors on the
training device, so the loop never waits for the device inside a step.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

import torch
from pydantic import Field, ValidationInfo, field_validator, model_validator

from gradlab.checkpoint import plain_state, restore_plain_state
from gradlab.schema import PARAMETER_NAMES, Float32Params, show

Tensors = dict[str, torch.Tensor]


def global_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of several tensors taken together (as if concatenated)."""
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))


class EditParams(Float32Params):
    """Parameters every edit accepts: which tensors it targets and when it is active.

    Like the config's sections, unknown keys are errors, numbers are finite and never
    booleans, and floats fit float32 (the edits compute in float32): ``max_norm: .inf`` or
    ``sigma: true`` are errors.
    """

    type: str
    """The strategy's registered name."""
    params: list[str] = ["*"]
    """Glob patterns over parameter names (fc1.weight, fc1.bias, ..., fcN.bias)."""
    start_step: int = Field(0, ge=0)
    """First step at which the edit is active (steps count from 1)."""
    end_step: int | None = Field(None, ge=1)
    """First step at which it is no longer active (exclusive); null = never ends."""
    every: int = Field(1, ge=1)
    """Active every k steps, counted from `start_step`."""

    @field_validator("params", mode="before")
    @classmethod
    def _one_pattern_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("params")
    @classmethod
    def _patterns_match(cls, patterns: list[str], info: ValidationInfo) -> list[str]:
        """Every pattern matches a parameter of the model: the names come in the validation
        context (``parameter_names``, None = unknown, unchecked); without a context, the
        default two-layer network's."""
        if not patterns:
            raise ValueError("needs at least one pattern")
        context = info.context or {}
        names = context.get("parameter_names", PARAMETER_NAMES)
        if names is None:
            return patterns
        for pattern in patterns:
            if not fnmatch.filter(names, pattern):
                raise ValueError(
                    f"pattern {show(pattern)} matches no parameter; parameters: "
                    + _name_list(names)
                )
        return patterns

    @model_validator(mode="after")
    def _check_window(self) -> EditParams:
        if self.end_step is not None and self.end_step <= self.start_step:
            raise ValueError("end_step must be greater than start_step")
        return self


def _name_list(names: list[str] | tuple[str, ...]) -> str:
    """The parameter names for an error message, the middle left out for a deep network."""
    if len(names) <= 8:
        return ", ".join(names)
    return ", ".join([*names[:4], "...", *names[-2:]])


class EditContext(NamedTuple):
    """What a step offers an edit besides its gradients and weights: read it, never change
    it (the optimizer's state is the optimizer's own tensors). Set as ``self.context``
    before each :meth:`Edit.edit` of a user's edit (gradlab.plugins); None for built-ins."""

    step: int
    """The step, counted from 1."""
    lr: float
    """This step's learning rate (after the schedule)."""
    loss: torch.Tensor
    """The batch's mean loss, a 0-dim tensor on the device (NaN for an empty Poisson
    batch). Under DP-SGD it reads the raw batch: it is not private."""
    optimizer_state: Mapping[str, Mapping[str, Any]]
    """The optimizer's state of each targeted parameter before this step's update, by
    name (Adam: ``step``, ``exp_avg``, ``exp_avg_sq``; SGD with momentum:
    ``momentum_buffer``); a parameter the optimizer has not updated yet is absent."""


class Edit:
    """A gradient-editing strategy. Subclasses set the class attributes and :meth:`edit`.

    Attributes:
        name: registered name (the ``type`` in a config).
        family: clipping, masking, perturbation or replacement.
        summary: one line for ``gradlab strategies``.
        Params: the pydantic model of its parameters (subclass of :class:`EditParams`).
        stats: names of the statistics :meth:`edit` returns, besides ``changed``.
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Params: ClassVar[type[EditParams]] = EditParams
    stats: ClassVar[tuple[str, ...]] = ()
    freezes: ClassVar[bool] = False  # the optimizer leaves the targets out while active
    derived: ClassVar[tuple[str, ...]] = ()
    """Attributes that :meth:`setup` rebuilds the same way on every run of the config (a
    fixed mask drawn from the edit's generator): left out of checkpoints."""

    def __init__(self, params: EditParams, names: list[str], generator: torch.Generator) -> None:
        # L2 norms of the targeted gradients, set by the pipeline for the step when it already
        # has them (the loop logs them; only the first edit sees unedited gradients), else None
        self.known_norms: list[torch.Tensor] | None = None
        self.context: EditContext | None = None  # a user's edit: the step's context
        self.params = params
        self.generator = generator
        self.targets = [
            name for name in names if any(fnmatch.fnmatch(name, p) for p in params.params)
        ]

    def active(self, step: int) -> bool:
        """Whether the schedule switches this edit on at ``step`` (counted from 1)."""
        p = self.params
        if step < p.start_step or (p.end_step is not None and step >= p.end_step):
            return False
        return (step - p.start_step) % p.every == 0

    def setup(self, weights: Tensors) -> None:
        """Called once before training with the targeted parameters (for fixed state)."""

    def edit(self, grads: Tensors, weights: Tensors, step: int) -> Tensors:
        """Change ``grads`` (the targeted gradients) in place and return statistics.

        Returns:
            0-dim tensors named as in :attr:`stats`, plus ``changed`` (1.0 when the
            gradient was modified this step, else 0.0).
        """
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """What the edit carries from step to step, for a checkpoint: by default every
        attribute it set itself (a running average, a counter, an error-feedback buffer)
        except :attr:`derived`; tensors, numbers, strings and lists or dicts of them. Its
        random generator is saved apart. Override it (with :meth:`load_state_dict`) for
        state of another kind."""
        return plain_state(self, _BASE_ATTRIBUTES | set(self.derived), f"edit {self.name}")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`state_dict` gave (a resumed run, after :meth:`setup`)."""
        restore_plain_state(self, state)

    def label(self) -> str:
        """Short form for tables: ``mask(0.5 @fc2.bias)``, ``clip_norm(1.0, per_param=True)``.

        The first own parameter is shown by value, the others only when not at their default;
        then the targets (when not all parameters) and the schedule (when not always on).
        """
        p = self.params
        parts = []
        for i, (name, field) in enumerate(_own_fields(type(p)).items()):
            value = getattr(p, name)
            if i == 0:
                parts.append(f"{value}")
            elif value != field.default:
                parts.append(f"{field.alias or name}={value}")
        text = ", ".join(parts)
        if p.params != ["*"]:
            text += f" @{','.join(p.params)}"
        if (p.start_step, p.end_step, p.every) != (0, None, 1):
            end = "" if p.end_step is None else p.end_step
            text += f" [{p.start_step}:{end}" + (f":{p.every}]" if p.every != 1 else "]")
        return f"{self.name}({text.strip()})"

    def stat_columns(self, position: int) -> list[str]:
        """Column names in steps.csv: ``edit<position>.<name>.<stat>``."""
        return [f"edit{position}.{self.name}.{stat}" for stat in (*self.stats, "changed")]


_BASE_ATTRIBUTES = {"known_norms", "context", "params", "generator", "targets"}


def check_statistics(
    stats: Any,
    declared: list[str],
    who: str,
    step: int,
    device: torch.device | None,
    error: type[Exception],
    order: str = "",
) -> None:
    """A user's edit or probe returned exactly its ``declared`` statistics, each a 0-dim
    tensor on ``device`` (the gradients'; None: unchecked); else ``error`` with one line
    naming ``who``, the step and the rule (``order``: how the names are made up)."""
    if not isinstance(stats, dict) or set(stats) != set(declared):
        got = sorted(stats) if isinstance(stats, dict) else type(stats).__name__
        raise error(
            f"{who} returned statistics {got} at step {step}; it must return a dict of "
            f"exactly {declared}{order}"
        )
    for name in declared:
        value = stats[name]
        if not isinstance(value, torch.Tensor) or value.dim() != 0:
            raise error(
                f"{who} returned {name} as {type(value).__name__} at step {step}; each "
                "statistic is a 0-dim tensor (torch.tensor(x) or g.norm())"
            )
        if device is not None and value.device != device:
            raise error(
                f"{who} returned {name} on {value.device} at step {step}; statistics stay on "
                f"the gradients' device ({device}): no .item() or .cpu() in a step"
            )


def _own_fields(params: type[EditParams], common: bool = False) -> dict[str, Any]:
    shared = set(EditParams.model_fields)
    return {
        name: field
        for name, field in params.model_fields.items()
        if name != "type" and (name in shared) == common
    }


def param_docs(params: type[EditParams], common: bool = False) -> list[tuple[str, Any, str]]:
    """``(key, default, description)`` of a strategy's own parameters (``common``: only the
    parameters every edit shares), keys as written in a config."""
    return [
        (field.alias or name, field.default, " ".join((field.description or "").split()))
        for name, field in _own_fields(params, common).items()
    ]
