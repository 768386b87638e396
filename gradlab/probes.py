"""Probes: measurements of the gradients that change nothing (``diagnostics.probes``).

A probe reads the gradients of a step before the edits (``at: before``, the default: the
engine's gradient, privatized under DP-SGD) or after them (``at: after``: what the optimizer
applies) and returns statistics, logged to ``steps.csv`` as ``probe.<name>.<stat>``
(``probe.<name>_after.<stat>`` after the edits). Probes are not part of the experiment's
identity, and a probe never changes a gradient: for a user's probe gradlab checks it at every
step (the tensors' version counters, and their values at its first two steps).

Two are built in, both from each example's squared gradient norm per tensor, which the
engines compute without per-example gradients (``||dL_b/dW||^2 = ||a_b||^2 ||d_b||^2``, as
DP-SGD's clipping does; see :mod:`gradlab.engines.analytic`). With ``S`` the batch mean of
the examples' squared norms ``|g_b|^2`` and ``|G_B|^2`` the squared norm of the batch's mean
gradient, for a batch of ``B >= 2`` examples (McCandlish et al. 2018, Appendix A, with the
batch sizes 1 and B)::

    |G|^2     ~ (B |G_B|^2 - S) / (B - 1)        unbiased for the true gradient's |G|^2
    tr(Sigma) ~ (S - |G_B|^2) B / (B - 1)        unbiased for the per-example covariance's trace

- ``noise_scale``: ``B_simple = tr(Sigma) / |G|^2`` of exponential moving averages of the two
  estimates (``beta``), per step, for all tensors and per layer; a step whose estimate is
  not finite (a GradScaler's skipped step) leaves the averages as they were.
- ``diversity``: the gradient diversity ``sum_b |g_b|^2 / |sum_b g_b|^2 = S / (B |G_B|^2)``
  (Yin et al. 2018), per step, for all tensors and per layer.

Both describe the gradient before the edits and need the raw per-example norms, which
DP-SGD keeps private: they are refused with ``privacy``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, ValidationError

from gradlab.checkpoint import plain_state, restore_plain_state
from gradlab.editing.base import check_statistics
from gradlab.errors import ConfigError, GradlabError
from gradlab.plugins import (
    entry_point_spec,
    is_plugin_spec,
    load_plugin,
    loaded_plugins,
    plugin_error,
)
from gradlab.registry import Registry
from gradlab.schema import Float32Params, describe_validation_error, show


class ProbeParams(Float32Params):
    """Parameters every probe accepts: when it measures (unknown keys are errors, numbers
    finite and within float32, as for edits)."""

    type: str
    """The probe's name, or a user's probe ``path/to/file.py:Class``."""
    at: Literal["before", "after"] = "before"
    """Which gradient it reads: before the edits (the engine's, privatized under DP-SGD) or
    after them (what the optimizer applies)."""
    every: int = Field(1, ge=1)
    """Measure every k steps (from step 1); the other steps' cells are empty."""


class ProbeView:
    """What a probe reads at a step. Read it, never change it: a probe that changes a
    gradient, a weight or the per-example norms fails the run.

    Attributes:
        step: the step, counted from 1.
        lr: this step's learning rate.
        loss: the batch's mean loss, a 0-dim tensor on the device (NaN for an empty batch).
        batch_size: the examples in the batch.
        grads: the gradients by parameter name (fc1.weight, ..., fcN.bias), unscaled.
        weights: the parameters by name, before this step's update.
        per_example: ``(batch_size, K)``: each example's squared gradient norm per tensor,
            columns in the order of ``grads`` (the gradient of that example's own loss,
            ``B`` times its share of the mean's); only before the edits, when a probe of
            the run sets ``per_example = True`` (never with DP-SGD); else None.
    """

    __slots__ = ("_norms", "_raw", "_squared", "batch_size", "grads", "loss", "lr", "per_example",
                 "step", "weights")  # fmt: skip

    def __init__(
        self,
        step: int,
        lr: float,
        loss: torch.Tensor,
        batch_size: int,
        grads: Mapping[str, torch.Tensor],
        weights: Mapping[str, torch.Tensor],
        per_example: torch.Tensor | None = None,
        norms: tuple[torch.Tensor, ...] | None = None,
    ) -> None:
        self.step, self.lr, self.loss, self.batch_size = step, lr, loss, batch_size
        self.grads, self.weights, self.per_example = grads, weights, per_example
        self._norms = norms
        self._squared: torch.Tensor | None = None
        self._raw: torch.Tensor | None = None

    def raw_sums(self) -> torch.Tensor:
        """``(2K,)``: the batch mean of the examples' squared norms per tensor, then each
        gradient's squared norm (what the built-in probes log; computed once per view)."""
        if self._raw is None:
            assert self.per_example is not None  # given before the edits to these probes
            self._raw = torch.cat([self.per_example.mean(0), self.squared_norms()])
        return self._raw

    def squared_norms(self) -> torch.Tensor:
        """``(K,)``: each gradient's squared L2 norm, in the order of ``grads`` (computed
        once per view; from the logged norms when the loop has them)."""
        if self._squared is None:
            norms = self._norms or torch._foreach_norm(list(self.grads.values()))
            self._squared = torch.stack(list(norms)).square()
        return self._squared


class Probe:
    """A measurement of the gradients. Subclasses set the class attributes and
    :meth:`measure`.

    Attributes:
        name: the probe's name (its columns: ``probe.<name>.<stat>``).
        summary: one line for ``gradlab strategies``.
        Params: the pydantic model of its parameters (subclass of :class:`ProbeParams`).
        stats: the names of the statistics :meth:`measure` returns (or override
            :meth:`stat_names`, e.g. one per layer).
        per_example: whether it reads :attr:`ProbeView.per_example` (before the edits only;
            not with DP-SGD).
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Params: ClassVar[type[ProbeParams]] = ProbeParams
    stats: ClassVar[tuple[str, ...]] = ()
    per_example: ClassVar[bool] = False
    derived: ClassVar[tuple[str, ...]] = ()
    """Attributes ``__init__`` builds the same way on every run: left out of checkpoints."""

    def __init__(self, params: ProbeParams, names: list[str], device: torch.device) -> None:
        self.params = params
        self.names = list(names)
        self.device = device

    def state_dict(self) -> dict[str, Any]:
        """What the probe carries from step to step (a running average), for a checkpoint:
        by default every attribute it set itself except :attr:`derived` (see
        :meth:`gradlab.Edit.state_dict`)."""
        return plain_state(self, {"params", "names", "device", *self.derived}, f"probe {self.name}")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`state_dict` gave (a resumed run)."""
        restore_plain_state(self, state)

    def stat_names(self) -> list[str]:
        """The statistics' names, in the order of their columns."""
        return list(self.stats)

    def measure(self, view: ProbeView) -> dict[str, torch.Tensor]:
        """This step's statistics: a 0-dim tensor on the gradients' device for each name of
        :meth:`stat_names` (no ``.item()``: the step never waits for the device)."""
        raise NotImplementedError

    def values(self, view: ProbeView) -> torch.Tensor:
        """This step's values on the device, one 1-D tensor of :meth:`raw_width` (by default
        the statistics of :meth:`measure` in column order), turned into the statistics by
        :meth:`finish` when the step log is written."""
        stats = self.measure(view)
        return torch.stack([stats[s] for s in self.stat_names()])

    def raw_width(self) -> int:
        """How many values :meth:`values` gives a step."""
        return len(self.stat_names())

    def finish(self, rows: list[list[float]], batches: list[int]) -> list[list[float]]:
        """On the host, when the step log is written: the statistics of each step from its
        :meth:`values` (``rows``, in step order; NaN where it did not measure) and the
        batch sizes. By default the values themselves."""
        return rows

    def label(self) -> str:
        return self.name if self.params.at == "before" else f"{self.name}_after"


_PROBES: Registry[type[Probe]] = Registry("probe", "probe", "probes")
register_probe = _PROBES.register


def probes() -> dict[str, type[Probe]]:
    """The built-in probes, by name."""
    return _PROBES.all()


def layer_groups(names: list[str]) -> tuple[list[str], Any]:
    """The layers of the parameter ``names`` (``fc1`` of fc1.weight and fc1.bias) and the
    ``(K, 1 + layers)`` 0/1 matrix (float64, numpy: the host's) that sums per-tensor values
    into all tensors (column 0) and each layer."""
    import numpy as np

    layers = list(dict.fromkeys(n.rpartition(".")[0] for n in names))
    groups = np.zeros((len(names), 1 + len(layers)))
    groups[:, 0] = 1
    for k, n in enumerate(names):
        groups[k, 1 + layers.index(n.rpartition(".")[0])] = 1
    return layers, groups


class _PerExample(Probe):
    """What the two built-ins share. At each step, on the device, only the raw sums
    ``[S_k..., |G_B,k|^2...]`` per tensor (:meth:`ProbeView.raw_sums`, one tensor for both
    probes); the estimates, averages and ratios per layer are made on the host when the
    step log is written (:meth:`finish`), so a probe adds a few operations to a step."""

    per_example = True
    derived = ("layers", "groups")

    def __init__(self, params: ProbeParams, names: list[str], device: torch.device) -> None:
        super().__init__(params, names, device)
        self.layers, self.groups = layer_groups(self.names)

    def raw_width(self) -> int:
        return 2 * len(self.names)

    def values(self, view: ProbeView) -> torch.Tensor:
        return view.raw_sums()

    def sums(self, rows: list[list[float]]) -> tuple[Any, Any]:
        """``S`` and ``|G_B|^2`` of each row, ``(n, 1 + layers)`` each: all tensors, then
        per layer (float64)."""
        import numpy as np

        raw = np.asarray(rows, dtype=np.float64).reshape(len(rows), 2, len(self.names))
        with np.errstate(invalid="ignore", over="ignore"):  # a skipped step's infinities
            return raw[:, 0] @ self.groups, raw[:, 1] @ self.groups


@register_probe
class NoiseScale(_PerExample):
    """The gradient noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018)."""

    name = "noise_scale"
    summary = "gradient noise scale B_simple = tr(Sigma)/|G|^2 (McCandlish et al. 2018), per layer"

    class Params(ProbeParams):
        beta: float = Field(0.95, ge=0, lt=1)
        """Smoothing of the tr(Sigma) and |G|^2 estimates (exponential moving averages,
        bias-corrected) before their ratio; 0 = this step's estimates alone."""

    def __init__(self, params: ProbeParams, names: list[str], device: torch.device) -> None:
        super().__init__(params, names, device)
        self.beta = float(params.beta)  # type: ignore[attr-defined]
        width = 1 + len(self.layers)
        self.average = [[0.0] * width, [0.0] * width]  # tr(Sigma), |G|^2: the EMAs
        self.weight = 0.0  # their bias correction: 1 - beta^(estimates so far)

    def stat_names(self) -> list[str]:
        return ["b_simple", "trace", "grad_sq", *(f"{layer}.b_simple" for layer in self.layers)]

    def finish(self, rows: list[list[float]], batches: list[int]) -> list[list[float]]:
        import numpy as np

        mean_sq, batch_sq = self.sums(rows)
        b = np.asarray(batches, dtype=np.float64)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            trace = (mean_sq - batch_sq) * b / (b - 1)  # unbiased (McCandlish et al., App. A)
            grad_sq = (b * batch_sq - mean_sq) / (b - 1)
        share, nan = 1.0 - self.beta, math.nan
        out = []
        for i, n in enumerate(batches):
            now = (trace[i].tolist(), grad_sq[i].tolist())
            if n < 2 or not all(map(math.isfinite, now[0] + now[1])):
                out.append([nan] * (3 + len(self.layers)))  # no estimate at this step
                continue
            for average, value in zip(self.average, now, strict=True):
                for g, v in enumerate(value):
                    average[g] += share * (v - average[g])
            self.weight += share * (1.0 - self.weight)
            tr, g2 = self.average
            ratios = [t / g if g else nan for t, g in zip(tr, g2, strict=True)]
            out.append([ratios[0], tr[0] / self.weight, g2[0] / self.weight, *ratios[1:]])
        return out


@register_probe
class Diversity(_PerExample):
    """The gradient diversity sum_b |g_b|^2 / |sum_b g_b|^2 (Yin et al. 2018)."""

    name = "diversity"
    summary = "gradient diversity sum|g_b|^2 / |sum g_b|^2 (Yin et al. 2018), per layer"

    def stat_names(self) -> list[str]:
        return ["diversity", *(f"{layer}.diversity" for layer in self.layers)]

    def finish(self, rows: list[list[float]], batches: list[int]) -> list[list[float]]:
        import numpy as np

        mean_sq, batch_sq = self.sums(rows)
        b = np.asarray(batches, dtype=np.float64)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            diversity = mean_sq / (b * batch_sq)
        # no estimate without examples, nor from a step whose sums are not finite
        diversity[~(np.isfinite(diversity).all(axis=1) & (b[:, 0] >= 1))] = np.nan
        return diversity.tolist()


def probe_param_docs(params: type[ProbeParams], common: bool = False) -> list[tuple[str, Any, str]]:
    """``(key, default, description)`` of a probe's own parameters (``common``: those every
    probe takes), as :func:`gradlab.editing.base.param_docs` gives an edit's."""
    shared = set(ProbeParams.model_fields)
    return [
        (field.alias or name, field.default, " ".join((field.description or "").split()))
        for name, field in params.model_fields.items()
        if name != "type" and (name in shared) == common
    ]


# --------------------------------------------------------------------------- config


def parse_probe(position: int, entry: Any) -> ProbeParams:
    """Validate one ``diagnostics.probes`` entry: a name (``noise_scale``), a user's spec
    (``path/to/file.py:Class``) or a mapping ``{type: ..., at: ..., every: ...}``."""
    where = f"diagnostics.probes[{position}]"
    if isinstance(entry, ProbeParams):
        return entry
    if isinstance(entry, str):
        entry = {"type": entry}
    if not isinstance(entry, dict):
        raise ConfigError(
            f"{where}: expected a probe's name (e.g. noise_scale) or a mapping like "
            f"{{type: noise_scale}}, got {show(entry)}"
        )
    if "type" not in entry:
        raise ConfigError(f"{where}.type: required, but missing; probes: {_choices()}")
    kind = entry["type"]
    if isinstance(kind, str) and not is_plugin_spec(kind) and kind not in _PROBES.names():
        spec = entry_point_spec(kind, "probe")  # a short name an installed package gives
        if spec is not None:
            entry = {**entry, "type": spec}
    cls = probe_class_of(entry["type"], f"{where}.type")
    try:
        params = cls.Params.model_validate(entry)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, cls.Params, prefix=f"{where}.")) from None
    if cls.per_example and params.at == "after":
        raise ConfigError(
            f"{where}.at: {cls.name} reads each example's gradient norms, which describe the "
            "gradient before the edits; use at: before"
        )
    return params


def _choices() -> str:
    return ", ".join(_PROBES.names()) + ", or your own, path/to/file.py:ClassName"


def probe_class_of(kind: Any, where: str = "probe") -> type[Probe]:
    """The class of a probe ``type`` (a built-in name or a user's spec), loaded.

    Raises:
        ConfigError: unknown, or a spec that does not give a Probe subclass.
    """
    if is_plugin_spec(kind) and len(kind) <= 4096:
        try:
            plugin = loaded_plugins().get(kind) or load_plugin(kind)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if not issubclass(plugin.cls, Probe):
            raise ConfigError(
                f"{where}: {kind} is not a probe (class {kind.rpartition(':')[2]}"
                "(gradlab.Probe)); edits go in the edit list, clipping rules in "
                "privacy.clipping"
            )
        return plugin.cls
    if isinstance(kind, str) and kind in _PROBES.names():
        return _PROBES.get(kind)
    from gradlab.editing.registry import strategy_names

    if isinstance(kind, str) and kind in strategy_names():
        raise ConfigError(f"{where}: {kind} is an edit, not a probe; it goes in the edit list")
    raise ConfigError(f"{where}: unknown probe {show(kind)}; probes: {_choices()}")


def check_probes(entries: list[ProbeParams]) -> None:
    """Two probes may not write the same columns (the same probe twice at the same place)."""
    seen: dict[str, int] = {}
    for position, params in enumerate(entries):
        name = probe_class_of(params.type).name
        label = name if params.at == "before" else f"{name}_after"
        if label in seen:
            raise ConfigError(
                f"diagnostics.probes[{position}]: {label} is already diagnostics.probes"
                f"[{seen[label]}]; each probe is listed once for each place (at)"
            )
        seen[label] = position


# --------------------------------------------------------------------------- the loop


class ProbeError(GradlabError):
    """A user's probe raised, changed what it reads or returned the wrong statistics."""


_CHECK_VALUES = 2  # a user's probe's first measured steps: its inputs' values compared too


class ProbeSet:
    """The configured probes, measured at each step (before and after the edits)."""

    def __init__(self, entries: list[ProbeParams], names: list[str], device: torch.device) -> None:
        self.probes = [probe_class_of(p.type)(p, names, device) for p in entries]
        self.names = list(names)
        self.columns = [f"probe.{p.label()}.{stat}" for p in self.probes for stat in p.stat_names()]
        self.per_example = any(p.per_example for p in self.probes)
        self._at = {
            at: [i for i, p in enumerate(self.probes) if p.params.at == at]
            for at in ("before", "after")
        }
        self._plugins = {i for i, p in enumerate(self.probes) if is_plugin_spec(p.params.type)}
        # a user's probe logs what measure() returns, as it is (its values(), finish() and
        # raw_width() are not used: they are the built-ins' way to work on the host)
        self._widths = [
            len(p.stat_names()) if i in self._plugins else p.raw_width()
            for i, p in enumerate(self.probes)
        ]
        self._idle = [torch.full((w,), math.nan, device=device) for w in self._widths]
        self.raw_width = sum(self._widths)
        """The step log's buffer holds this many values a step for the probes (their
        :meth:`Probe.values`), written as :attr:`columns` by :meth:`finish`."""
        self._checked_steps = [0] * len(self.probes)
        self._values = list(self._idle)

    def __len__(self) -> int:
        return len(self.probes)

    def state_dict(self) -> dict[str, Any]:
        """Each probe's own state and the steps its checks ran, for a checkpoint.

        Raises:
            ProbeError: a user's probe keeps state a checkpoint cannot save.
        """
        try:
            probes = [p.state_dict() for p in self.probes]
        except TypeError as exc:  # the user's probe's attributes
            raise ProbeError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - the user's code
            raise ProbeError(plugin_error(exc)) from exc
        return {"checked": list(self._checked_steps), "probes": probes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._checked_steps = list(state["checked"])
        for probe, saved in zip(self.probes, state["probes"], strict=True):
            probe.load_state_dict(saved)

    def measures(self, at: str) -> bool:
        return bool(self._at[at])

    def wants_per_example(self, step: int) -> bool:
        """Whether a probe that reads the per-example norms measures at ``step``."""
        return any(p.per_example and (step - 1) % p.params.every == 0 for p in self.probes)

    @torch.no_grad()
    def measure(self, at: str, view: ProbeView) -> None:
        """Run the probes that read the gradient at ``at`` (before or after the edits)."""
        for i in self._at[at]:
            probe = self.probes[i]
            if (view.step - 1) % probe.params.every:
                self._values[i] = self._idle[i]
            elif i in self._plugins:
                self._values[i] = self._checked(i, probe, view)
            else:
                self._values[i] = probe.values(view)

    def values(self) -> list[torch.Tensor]:
        """This step's values, one 1-D tensor per probe in column order."""
        values, self._values = self._values, list(self._idle)
        return values

    def finish(self, rows: list[list[float]], batches: list[int], start: int) -> None:
        """In place, when the step log is written: each row's probe values, from ``start``
        on (:attr:`raw_width` of them, in step order), become the probes' statistics
        (:attr:`columns`)."""
        if not self.probes:
            return
        finished = []
        at = start
        for i, (probe, width) in enumerate(zip(self.probes, self._widths, strict=True)):
            mine = [row[at : at + width] for row in rows]
            finished.append(mine if i in self._plugins else probe.finish(mine, batches))
            at += width
        for i, row in enumerate(rows):
            row[start:] = [value for stats in finished for value in stats[i]]

    def _checked(self, i: int, probe: Probe, view: ProbeView) -> torch.Tensor:
        """A user's probe, checked: it changes none of the tensors it reads (their version
        counters every step; their values too at its first measured steps) and returns
        exactly its statistics, each a 0-dim tensor on the gradients' device."""
        who = f"probe {probe.name} ({probe.params.type})"
        read = {
            **{f"the gradient of {n}": g for n, g in view.grads.items()},
            **{f"the weight {n}": w for n, w in view.weights.items()},
        }
        if view.per_example is not None:
            read["the per-example norms"] = view.per_example
        if isinstance(view.loss, torch.Tensor):
            read["the loss"] = view.loss
        versions = {what: t._version for what, t in read.items()}
        grads = {n: w.grad for n, w in view.weights.items()}
        copies = None
        if self._checked_steps[i] < _CHECK_VALUES:
            self._checked_steps[i] += 1
            copies = {what: t.detach().clone() for what, t in read.items()}
        view.grads = MappingProxyType(dict(view.grads))
        view.weights = MappingProxyType(dict(view.weights))
        try:
            stats = probe.measure(view)
        except Exception as exc:  # noqa: BLE001 - the user's code: where it broke, in one line
            raise ProbeError(f"{who} raised at step {view.step}: {plugin_error(exc)}") from exc
        for what, tensor in read.items():
            changed = tensor._version != versions[what] or (
                copies is not None
                and not torch.allclose(tensor, copies[what], rtol=0, atol=0, equal_nan=True)
            )
            if changed:
                raise ProbeError(
                    f"{who} changed {what} at step {view.step}: a probe only reads (compute "
                    "on copies: g.clone(), or out-of-place operations)"
                )
        for n, w in view.weights.items():
            if w.grad is not grads[n]:
                raise ProbeError(f"{who} replaced the gradient of {n} at step {view.step}")
        declared = probe.stat_names()
        check_statistics(stats, declared, who, view.step, self._idle[i].device, ProbeError)
        return torch.stack([stats[s].to(self._idle[i].dtype) for s in declared])


def finished(probe: Probe, view: ProbeView) -> list[float]:
    """One step of ``probe``, measured and finished at once (for checks and tests; the loop
    finishes whole blocks of steps when it writes the log)."""
    return probe.finish([probe.values(view).tolist()], [view.batch_size])[0]
