"""Per-step metrics: a buffer on the training device, flushed to steps.csv in batches.

The loop records 0-dim tensors; nothing here reads them back until a flush (every
``capacity`` steps or once a second), so a step never waits for the device. Columns that
follow from others (``skipped``, ``nonfinite``) are derived on the host at the flush, which
also updates the running figures the summary needs.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from gradlab.runlog import CsvLog

if TYPE_CHECKING:
    from gradlab.probes import ProbeSet

GROWTH_WINDOW = 10
"""Losses in the moving average of ``loss_growth``."""
FINAL_LOSS_WINDOW = 20  # final_train_loss = mean batch loss over the last 20 steps


def step_columns(
    metric_columns: list[str], edit_columns: list[str], batch_sizes: bool = False
) -> list[str]:
    """The columns of steps.csv, in order (documented in the README); ``batch_size`` (the
    examples drawn) when batches vary in size (Poisson sampling)."""
    return [
        "step",
        "epoch",
        "lr",
        *(["batch_size"] if batch_sizes else []),
        *metric_columns,
        "skipped",
        "nonfinite",
        *edit_columns,
        "elapsed_s",
    ]


def metric_columns(param_names: list[str], log: str, use_scaler: bool) -> list[str]:
    """The device-side metrics of a step before the edits' statistics.

    ``full``: loss, accuracy, grad_norm, grad_norm_after and one norm per parameter;
    ``loss``: the loss (and grad_norm under a GradScaler, which tells its skipped steps).
    """
    if log == "full":
        return [
            "loss",
            "accuracy",
            "grad_norm",
            "grad_norm_after",
            *(f"grad_norm.{n}" for n in param_names),
        ]
    return ["loss", "grad_norm"] if use_scaler else ["loss"]


class StepLog:
    def __init__(
        self,
        csv: CsvLog,
        metrics: list[str],
        edit_columns: list[str],
        capacity: int,
        device: torch.device,
        use_scaler: bool,
        stop_on_nonfinite: bool,
        on_flush: Callable[[StepLog], None] | None = None,
        diverge_factor: float = 0.0,
        probes: ProbeSet | None = None,
    ) -> None:
        self.csv = csv
        self.template = csv.numeric_template(
            {"step", "epoch", "batch_size", "skipped", "nonfinite"}
        )
        self.batch_sizes = "batch_size" in csv.columns
        self.metrics = metrics
        self.n_metrics = len(metrics)
        self._accuracy = metrics.index("accuracy") if "accuracy" in metrics else None
        self._grad_norm = metrics.index("grad_norm") if "grad_norm" in metrics else None
        self._changed = [
            self.n_metrics + i for i, c in enumerate(edit_columns) if c.endswith(".changed")
        ]
        # the probes' values last (their raw width), made their statistics at each flush
        self.probes = probes if probes is not None and len(probes) else None
        self._probes_at = len(metrics) + len(edit_columns)
        width = self._probes_at + (self.probes.raw_width if self.probes else 0)
        self.buffer = torch.zeros((capacity, width), device=device)
        self.host_rows: list[tuple[int, int, float, int, float]] = []  # step, epoch, lr, batch, t
        self.use_scaler = use_scaler
        self.stop_on_nonfinite = stop_on_nonfinite
        self.on_flush = on_flush
        self.t0 = self.last_flush = time.perf_counter()
        # running figures, updated at each flush
        self.last: dict[str, Any] = {}  # step, epoch, loss, accuracy, steps_per_second
        self.steps = 0
        self.skipped = 0
        self.diverged_step: int | None = None
        self.diverged_reason: str | None = None  # nonfinite or loss_growth
        self.diverge_factor = diverge_factor
        self.first_loss: float | None = None  # the reference for loss_growth
        self.growth_window: deque[float] = deque(maxlen=GROWTH_WINDOW)
        self.changed_steps = 0
        self.grad_norm_sum = 0.0
        self.grad_norm_count = 0
        self.grad_norm_max = -math.inf
        self.recent_losses: deque[float] = deque(maxlen=FINAL_LOSS_WINDOW)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    _RUNNING = (
        "steps", "skipped", "diverged_step", "diverged_reason", "first_loss",
        "changed_steps", "grad_norm_sum", "grad_norm_count", "grad_norm_max",
    )  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        """The running figures (after a flush: nothing is buffered), for a checkpoint."""
        assert not self.host_rows, "flush before taking the step log's state"
        return {
            **{name: getattr(self, name) for name in self._RUNNING},
            "growth_window": list(self.growth_window),
            "recent_losses": list(self.recent_losses),
            "last": dict(self.last),
            "elapsed": self.elapsed(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`state_dict` gave; the clock goes on from its elapsed time."""
        for name in self._RUNNING:
            setattr(self, name, state[name])
        self.growth_window.extend(state["growth_window"])
        self.recent_losses.extend(state["recent_losses"])
        self.last = dict(state["last"])
        self.t0 = time.perf_counter() - float(state["elapsed"])

    def record(
        self,
        step: int,
        epoch: int,
        lr: float,
        batch: int,
        values: list[torch.Tensor],
        vectors: list[torch.Tensor] | None = None,
    ) -> None:
        """Store one step's device values (metrics, then edit statistics, 0-dim tensors; then
        the probes' ``vectors``, 1-D); flush when due.

        ``accuracy`` is recorded as the number of correct predictions of the batch of size
        ``batch`` and divided on the host.
        """
        slot = len(self.host_rows)
        row = self.buffer[slot]
        if vectors:
            torch.stack(values, out=row[: len(values)])
            torch.cat(vectors, out=row[len(values) :])
        else:
            torch.stack(values, out=row)
        now = time.perf_counter()
        self.host_rows.append((step, epoch, lr, batch, now - self.t0))
        if slot + 1 == len(self.buffer) or now - self.last_flush > 1.0:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows to steps.csv and update the running figures."""
        self.last_flush = time.perf_counter()
        if not self.host_rows:
            return
        values = self.buffer[: len(self.host_rows)].tolist()
        if self.probes is not None:
            self.probes.finish(values, [r[3] for r in self.host_rows], self._probes_at)
        lines = []
        m, template = self.n_metrics, self.template
        for (step, epoch, lr, batch, elapsed), row in zip(self.host_rows, values, strict=True):
            if self._accuracy is not None:
                row[self._accuracy] = row[self._accuracy] / batch if batch else math.nan
            skipped, nonfinite = self._account(step, row, batch)
            head = (step, epoch, lr, batch) if self.batch_sizes else (step, epoch, lr)
            lines.append(template.format(*head, *row[:m], skipped, nonfinite, *row[m:], elapsed))
        # a metric that is NaN (an edit switched off, a diverged loss) is an empty cell
        self.csv.append_lines("".join(lines).replace("nan", ""))
        last_step, last_epoch, _, _, elapsed = self.host_rows[-1]
        self.last = {
            "step": last_step,
            "epoch": last_epoch,
            "loss": values[-1][0],
            "accuracy": values[-1][self._accuracy] if self._accuracy is not None else math.nan,
            "steps_per_second": last_step / elapsed if elapsed > 0 else 0.0,
        }
        self.host_rows.clear()
        if self.on_flush is not None:
            self.on_flush(self)

    def _account(self, step: int, row: list[float], batch: int = 1) -> tuple[int, int]:
        """Derive ``skipped`` and ``nonfinite`` for one row and update the running figures.
        A step without examples (an empty Poisson batch) has no loss: that is not a
        non-finite one."""
        loss = row[0]
        grad_norm = row[self._grad_norm] if self._grad_norm is not None else math.nan
        finite_grads = self._grad_norm is None or math.isfinite(grad_norm)
        skipped = int(self.use_scaler and not finite_grads)  # the GradScaler skipped it
        bad_loss = batch > 0 and not math.isfinite(loss)
        nonfinite = int(bad_loss or (not self.use_scaler and not finite_grads))
        self.steps += 1
        self.skipped += skipped
        if self.stop_on_nonfinite and self.diverged_step is None and nonfinite:
            self.diverged_step, self.diverged_reason = step, "nonfinite"
        if batch:
            self._watch_growth(step, loss)
        if self._grad_norm is not None and finite_grads:
            self.grad_norm_sum += grad_norm
            self.grad_norm_count += 1
            self.grad_norm_max = max(self.grad_norm_max, grad_norm)
        if any(row[i] == 1.0 for i in self._changed):
            self.changed_steps += 1
        if batch:
            self.recent_losses.append(loss)
        return skipped, nonfinite

    def _watch_growth(self, step: int, loss: float) -> None:
        """``loss_growth``: the moving average of the last 10 losses above ``diverge_factor``
        times the first step's loss (measured before any update: the untrained network's)."""
        if not self.diverge_factor or not math.isfinite(loss) or self.diverged_step is not None:
            return
        if self.first_loss is None:
            self.first_loss = loss
            return
        self.growth_window.append(loss)
        if (
            len(self.growth_window) == GROWTH_WINDOW
            and self.first_loss > 0
            and sum(self.growth_window) / GROWTH_WINDOW > self.diverge_factor * self.first_loss
        ):
            self.diverged_step, self.diverged_reason = step, "loss_growth"

    def figures(self) -> dict[str, float | None]:
        """The summary's figures over every step logged so far."""
        return {
            "final_train_loss": (
                sum(self.recent_losses) / len(self.recent_losses) if self.recent_losses else None
            ),
            "grad_norm_mean": self.grad_norm_sum / self.grad_norm_count
            if self.grad_norm_count
            else None,
            "grad_norm_max": self.grad_norm_max if self.grad_norm_count else None,
            "edit_changed_frac": self.changed_steps / self.steps if self.steps else None,
            "skipped_steps": self.skipped,
        }
