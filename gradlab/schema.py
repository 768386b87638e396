"""What config sections and edit parameters share: the strict base model, float32 bounds,
the network's parameter names, and one-line validation errors.

A leaf: the config (:mod:`gradlab.config`) and the plugins (edits, optimizers) both build on
it, and neither needs the other to load.
"""

from __future__ import annotations

import reprlib
import typing
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from gradlab.yamlfile import key_text

FLOAT32_MAX = 3.4028234663852886e38
"""Learning rates and other values that enter float32 tensor maths must be below this."""
INPUT_SIZE, CLASSES = 784, 10
"""The network's input (28 x 28 pixels, flattened) and output (the 10 classes)."""


def is_number_field(annotation: Any) -> bool:
    """int, float or an optional one (``int | None``); not bool, str, Literal or a section."""
    kinds = {annotation, *typing.get_args(annotation)}
    return bool(kinds & {int, float}) and bool not in kinds


def _below_float32_max(value: float) -> float:
    if abs(value) >= FLOAT32_MAX:
        raise ValueError("must be below 3.4e38, the largest float32 (training computes in float32)")
    return value


Float32 = Annotated[float, AfterValidator(_below_float32_max)]
"""A finite float that also fits float32: values that enter the training maths."""


class StrictModel(BaseModel):
    """Base of every config section and of every edit's parameters: unknown keys are errors,
    fields are documented in place (their docstrings are the reference).

    Numbers are finite (``allow_inf_nan=False``) and never booleans: ``seed: true`` or
    ``lr: .inf`` are errors, not 1 and a run that skips every step.
    """

    model_config = ConfigDict(
        extra="forbid", use_attribute_docstrings=True, validate_default=True, allow_inf_nan=False
    )

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields[info.field_name] if info.field_name else None
        if isinstance(value, bool) and field is not None and is_number_field(field.annotation):
            raise ValueError("expected a number, not true/false")
        return value


class Float32Params(StrictModel):
    """Base of a plugin's parameters (an edit's, a probe's): as :class:`StrictModel`, and
    every number fits float32 (they compute in float32): ``max_norm: 1e39`` is an error."""

    @field_validator("*")
    @classmethod
    def _numbers_fit_float32(cls, value: Any, info: ValidationInfo) -> Any:
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if numeric and abs(value) >= FLOAT32_MAX:
            raise ValueError("must be below 3.4e38, the largest float32")
        return value


# --------------------------------------------------------------------------- the network


def parameter_shapes(widths: list[int]) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the parameters of the network with these hidden ``widths``, in
    order (edits target these names): ``fc1.weight, fc1.bias, ..., fcN.weight, fcN.bias``,
    N = hidden layers + 1."""
    sizes = [INPUT_SIZE, *widths, CLASSES]
    shapes: dict[str, tuple[int, ...]] = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:], strict=False), start=1):
        shapes[f"fc{i}.weight"] = (fan_out, fan_in)
        shapes[f"fc{i}.bias"] = (fan_out,)
    return shapes


PARAMETER_NAMES = tuple(parameter_shapes([100]))
"""The default (two-layer) network's parameter names; a config's own are
``config.model.parameter_names()``."""


# --------------------------------------------------------------------------- errors


def describe_validation_error(
    exc: ValidationError, model: type[BaseModel], prefix: str = ""
) -> str:
    """One line for the first problem pydantic found, naming the key and what is allowed."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = tuple(first["loc"])
    path = prefix + _path(loc)
    kind = first["type"]
    if kind == "extra_forbidden":
        owner = _model_at(model, loc[:-1])
        valid = ", ".join(owner.model_fields) if owner else "?"
        line = f"{path}: unknown key; valid keys here: {valid}"
    elif kind == "missing":
        line = f"{path}: required, but missing"
    else:
        message = " ".join(first["msg"].removeprefix("Value error, ").split())
        if len(message) > 200:  # a validator may have quoted a long value
            message = message[:197] + "..."
        line = f"{path}: {message} (got {show(first.get('input'))})"
    if len(errors) > 1:
        line += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return line


def _path(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            part = key_text(part)
            text += f".{part}" if text else part
    return text or "config"


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = field.annotation if field else None
        optional = [a for a in typing.get_args(annotation) if isinstance(a, type)]
        sections = [a for a in optional if issubclass(a, BaseModel)]
        annotation = sections[0] if sections else annotation  # a section that may be null
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


class _ShortRepr(reprlib.Repr):
    """``repr`` that stops early: an alias bomb or a huge string costs a few hundred bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxstring, self.maxother = 3, 40, 40
        self.maxdict = self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = 4

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:  # repr() of a huge int is slow, or refused beyond 4300 digits
            return f"<an integer of {x.bit_length()} bits>"
        return super().repr_int(x, level)

    def repr_bytes(self, x: bytes, level: int) -> str:
        return repr(x[:20]) + ("..." if len(x) > 20 else "")


_SHORT_REPR = _ShortRepr()


def show(value: Any) -> str:
    """A short repr of a value for an error message: at most 60 characters, on one line."""
    text = _SHORT_REPR.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def show_text(text: str, limit: int = 60) -> str:
    """Text as it is when short and printable, else its shortened repr."""
    return text if len(text) <= limit and text.isprintable() else show(text)
