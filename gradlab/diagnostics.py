"""Gradient health: per-layer statistics every few steps, and alerts for vanishing and
exploding gradients and dead ReLU units.

Statistics are taken from the true (unscaled) gradients before the edits, plus each
parameter's gradient norm after the edits and the update the optimizer really made
(``||w_after - w_before|| / ||w_before||``: edits, momentum, weight decay, a skipped step
all included), computed on the training device and read back only when the step log
flushes. Alerts are decided at that point, on the host, in step order, on the gradients
before the edits.

``grads.csv`` (long format, one row per check and parameter): ``step``, ``param``, then
``mean``, ``std`` (population), ``norm`` (L2), ``norm_after`` (after the edits),
``max_abs``, ``zero_frac`` (fraction of entries exactly zero), ``update_ratio`` and
``weight_norm`` (``||w||`` before the step).
``alerts.csv``: ``step``, ``alert``, ``param``, ``value``, ``threshold``, ``message``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from gradlab.config import DiagnosticsConfig
from gradlab.runlog import GRADS_STATS, CsvLog

_NORM_AFTER, _UPDATE = GRADS_STATS.index("norm_after"), GRADS_STATS.index("update_ratio")
GRADS_COLUMNS = ["step", "param", *GRADS_STATS]
ALERT_KINDS = ("vanishing", "exploding", "dead_relu")


def first_and_last_weights(names: list[str]) -> tuple[str, str]:
    """The first and the last layer's weights among parameter names (``fc1.weight``,
    ``fcN.weight``): the pair the vanishing ratio compares."""
    weights = [name for name in names if name.endswith(".weight")]
    return weights[0], weights[-1]


def gradient_statistics(grads: list[torch.Tensor], weights: list[torch.Tensor]) -> torch.Tensor:
    """A (parameters x 8) tensor of :data:`gradlab.runlog.GRADS_STATS`, on the gradients' device; ``norm_after``
    and ``update_ratio`` are NaN until :meth:`Diagnostics.after_edit` and
    :meth:`Diagnostics.after_step` fill them."""
    norms = torch.stack(torch._foreach_norm(grads))
    weight_norms = torch.stack(torch._foreach_norm(weights))
    nan = torch.full_like(norms[0], math.nan)
    rows = [
        torch.stack(
            [
                g.mean(),
                g.std(correction=0),
                norms[i],
                nan,
                g.abs().max(),
                (g == 0).float().mean(),
                nan,
                weight_norms[i],
            ]
        )
        for i, g in enumerate(grads)
    ]
    return torch.stack(rows).float()


@dataclass
class Alert:
    step: int
    alert: str
    param: str
    value: float
    threshold: float
    message: str


class Diagnostics:
    """Collects statistics at checks, writes grads.csv / alerts.csv, raises alerts."""

    def __init__(
        self,
        cfg: DiagnosticsConfig,
        names: list[str],
        grads_log: CsvLog,
        alerts_log: CsvLog,
        relu_hidden: bool,
        on_alert: Callable[[Alert], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.names = names
        self.grads_log = grads_log
        self.alerts_log = alerts_log
        self.relu_hidden = relu_hidden
        self.first, self.last = first_and_last_weights(names)
        # the hidden layers (every layer but the last): their units can die under ReLU
        self.hidden = [n.removesuffix(".weight") for n in names if n.endswith(".weight")][:-1]
        self.hidden_label = (
            self.hidden[0] if len(self.hidden) == 1 else f"{self.hidden[0]}-{self.hidden[-1]}"
        )
        self.on_alert = on_alert
        self.pending: list[tuple[int, torch.Tensor, torch.Tensor | None]] = []
        self._open: tuple | None = None  # a check waiting for its edit and its step
        self.counts = dict.fromkeys(ALERT_KINDS, 0)
        self.alerts: list[Alert] = []
        self._vanishing_run = 0
        self._active = dict.fromkeys(ALERT_KINDS, False)
        self._first_total: float | None = None
        self._last_alive: torch.Tensor | None = None  # per hidden unit: last step with a gradient

    def state_dict(self) -> dict[str, Any]:
        """The alert state (after a flush: no check is pending), for a checkpoint."""
        assert not self.pending and self._open is None, "flush before taking the state"
        return {
            "counts": dict(self.counts),
            "alerts": [list(vars(a).values()) for a in self.alerts],
            "vanishing_run": self._vanishing_run,
            "active": dict(self._active),
            "first_total": self._first_total,
            "last_alive": self._last_alive,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.counts = dict(state["counts"])
        self.alerts = [Alert(*a) for a in state["alerts"]]
        self._vanishing_run = state["vanishing_run"]
        self._active = dict(state["active"])
        self._first_total = state["first_total"]
        self._last_alive = state["last_alive"]

    def due(self, step: int) -> bool:
        """Checks are dense early, then regular: steps 1, 2, 4, 8, ... below ``every``, then
        every ``every`` steps (a high learning rate can ruin a run in its first steps)."""
        every = self.cfg.every
        if every <= 0:
            return False
        return step % every == 0 or (step < every and step & (step - 1) == 0)

    def record(
        self, step: int, grads: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]
    ) -> None:
        """The statistics of this step's gradients before the edits, and a copy of the
        weights to measure the update against (no host synchronization)."""
        before = [weights[n].detach() for n in self.names]
        stats = gradient_statistics([grads[n] for n in self.names], before)
        alive = None
        if self.relu_hidden:  # a hidden unit learns when its incoming weights get a gradient
            alive = torch.cat(
                [
                    (grads[f"{layer}.weight"] != 0).any(dim=1) | (grads[f"{layer}.bias"] != 0)
                    for layer in self.hidden
                ]
            )
        self._open = (step, stats, alive, torch._foreach_mul(before, 1.0))

    def after_edit(self, step: int, grads: dict[str, torch.Tensor]) -> None:
        """``norm_after``: the gradients the optimizer receives, after the edit pipeline."""
        if self._open is not None and self._open[0] == step:
            norms = torch._foreach_norm([grads[n] for n in self.names])
            self._open[1][:, _NORM_AFTER] = torch.stack(norms).float()

    def after_step(self, step: int, weights: dict[str, torch.Tensor]) -> None:
        """``update_ratio``: how far the optimizer step really moved each parameter."""
        if self._open is None or self._open[0] != step:
            return
        _, stats, alive, before = self._open
        after = [weights[n].detach() for n in self.names]
        moved = torch.stack(torch._foreach_norm(torch._foreach_sub(after, before))).float()
        stats[:, _UPDATE] = moved / stats[:, GRADS_STATS.index("weight_norm")]
        self.pending.append((step, stats, alive))
        self._open = None

    def flush(self) -> None:
        """Write the pending checks and decide the alerts, in step order."""
        if not self.pending:
            return
        rows = []
        for step, stats, alive in self.pending:
            values = stats.tolist()
            rows += [[step, name, *values[i]] for i, name in enumerate(self.names)]
            norms = [v[GRADS_STATS.index("norm")] for v in values]
            if all(math.isfinite(n) for n in norms):  # AMP overflow or divergence: no verdict
                self._check(step, norms, alive)
        self.pending.clear()
        self.grads_log.append(rows)

    # ------------------------------------------------------------------ alerts

    def _raise(self, kind: str, alert: Alert | None) -> None:
        """Fire ``alert`` when condition ``kind`` starts (``alert`` is None while it does not
        hold); stay quiet while it lasts."""
        if alert is not None and not self._active[kind]:
            self.counts[kind] += 1
            self.alerts.append(alert)
            row = [
                alert.step,
                alert.alert,
                alert.param,
                alert.value,
                alert.threshold,
                alert.message,
            ]
            self.alerts_log.append([row])
            if self.on_alert is not None:
                self.on_alert(alert)
        self._active[kind] = alert is not None

    def _check(self, step: int, norms: list[float], alive: torch.Tensor | None) -> None:
        cfg = self.cfg
        by_name = dict(zip(self.names, norms, strict=True))

        # vanishing: a tiny norm, or the first layer's gradient tiny next to the last one's
        vanishing = None
        smallest = min(by_name, key=by_name.__getitem__)
        first, last = self.first, self.last
        ratio = by_name[first] / by_name[last] if by_name[last] > 0 else math.inf
        if by_name[smallest] < cfg.vanishing_norm:
            vanishing = (
                smallest,
                by_name[smallest],
                cfg.vanishing_norm,
                f"||grad {smallest}|| = {by_name[smallest]:.3g} < {cfg.vanishing_norm:g}",
            )
        elif ratio < cfg.vanishing_ratio:
            vanishing = (
                f"{first}/{last}",
                ratio,
                cfg.vanishing_ratio,
                f"||grad {first}|| / ||grad {last}|| = {ratio:.3g} < {cfg.vanishing_ratio:g}",
            )
        self._vanishing_run = self._vanishing_run + 1 if vanishing else 0
        if vanishing is not None and self._vanishing_run >= cfg.patience:
            param, value, threshold, text = vanishing
            message = (
                f"vanishing gradients at step {step}: {text} for {cfg.patience} checks in a row"
            )
            self._raise("vanishing", Alert(step, "vanishing", param, value, threshold, message))
        else:
            self._raise("vanishing", None)

        # exploding: a huge norm, or the global norm far above where it started
        total = math.sqrt(sum(n * n for n in norms))
        if self._first_total is None:
            self._first_total = total
        largest = max(by_name, key=by_name.__getitem__)
        alert = None
        if by_name[largest] > cfg.exploding_norm:
            text = f"||grad {largest}|| = {by_name[largest]:.3g} > {cfg.exploding_norm:g}"
            alert = Alert(
                step,
                "exploding",
                largest,
                by_name[largest],
                cfg.exploding_norm,
                f"exploding gradients at step {step}: {text}",
            )
        elif self._first_total > 0 and total / self._first_total > cfg.exploding_growth:
            growth = total / self._first_total
            text = f"the global gradient norm is {growth:.3g}x its value at the first check"
            alert = Alert(
                step,
                "exploding",
                "all",
                growth,
                cfg.exploding_growth,
                f"exploding gradients at step {step}: {text}",
            )
        self._raise("exploding", alert)

        # dead ReLU units: no gradient at any check of the last dead_window steps
        if alive is None:
            return
        alive = alive.cpu()
        if self._last_alive is None:
            self._last_alive = torch.zeros(len(alive), dtype=torch.long)
        self._last_alive[alive] = step
        dead = (
            int((self._last_alive <= step - cfg.dead_window).sum())
            if step >= cfg.dead_window
            else 0
        )
        fraction = dead / len(alive)
        alert = None
        if fraction >= cfg.dead_fraction:
            message = (
                f"dead ReLU units at step {step}: {dead} of {len(alive)} hidden units had no "
                f"gradient for {cfg.dead_window} steps"
            )
            alert = Alert(
                step, "dead_relu", self.hidden_label, fraction, cfg.dead_fraction, message
            )
        self._raise("dead_relu", alert)
