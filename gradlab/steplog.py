"""Per-step metrics: a buffer on the training device, flushed to steps.csv in batches.

The loop records 0-dim tensors; nothing here reads them back until a flush (every
``capacity`` steps or once a second), so a step never waits for the device. Each flush also
updates the running figures the summary needs (divergence, AMP skips, gradient-norm mean and
max, how often the edits changed the gradient).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

import torch

from gradlab.runlog import CsvLog

HOST_COLUMNS = ("step", "epoch", "lr")  # known on the host; elapsed_s comes last
FINAL_LOSS_WINDOW = 20  # final_train_loss = mean batch loss over the last 20 steps


class StepLog:
    def __init__(
        self,
        csv: CsvLog,
        capacity: int,
        device: torch.device,
        stop_on_nonfinite: bool,
        on_flush: Callable[[StepLog], None] | None = None,
    ) -> None:
        self.csv = csv
        self.device_columns = csv.columns[len(HOST_COLUMNS) : -1]
        index = {name: i for i, name in enumerate(self.device_columns)}
        self._loss, self._accuracy = index["loss"], index["accuracy"]
        self._grad_norm, self._skipped = index["grad_norm"], index["skipped"]
        self._nonfinite = index["nonfinite"]
        self._changed = [
            i for c, i in index.items() if c.startswith("edit") and c.endswith(".changed")
        ]
        self.buffer = torch.zeros((capacity, len(self.device_columns)), device=device)
        self.host_rows: list[tuple[int, int, float, float]] = []
        self.stop_on_nonfinite = stop_on_nonfinite
        self.on_flush = on_flush
        self.t0 = self.last_flush = time.perf_counter()
        # running figures, updated at each flush
        self.last: dict[str, float] = {}
        self.steps = 0
        self.skipped = 0
        self.diverged_step: int | None = None
        self.changed_steps = 0
        self.grad_norm_sum = 0.0
        self.grad_norm_count = 0
        self.grad_norm_max = -math.inf
        self.recent_losses: deque[float] = deque(maxlen=FINAL_LOSS_WINDOW)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def record(self, step: int, epoch: int, lr: float, values: list[torch.Tensor]) -> None:
        """Store one step's device values (in ``device_columns`` order); flush when due."""
        slot = len(self.host_rows)
        torch.stack(values, out=self.buffer[slot])
        now = time.perf_counter()
        self.host_rows.append((step, epoch, lr, now - self.t0))
        if slot + 1 == len(self.buffer) or now - self.last_flush > 1.0:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows to steps.csv and update the running figures."""
        self.last_flush = time.perf_counter()
        if not self.host_rows:
            return
        values = self.buffer[: len(self.host_rows)].tolist()
        rows = []
        for (step, epoch, lr, elapsed), row in zip(self.host_rows, values, strict=True):
            rows.append([step, epoch, lr, *row, elapsed])
            self._account(step, row)
        self.csv.append(rows)
        last_step, last_epoch, _, elapsed = self.host_rows[-1]
        self.last = {
            "step": last_step,
            "epoch": last_epoch,
            "loss": values[-1][self._loss],
            "accuracy": values[-1][self._accuracy],
            "steps_per_second": last_step / elapsed if elapsed > 0 else 0.0,
        }
        self.host_rows.clear()
        if self.on_flush is not None:
            self.on_flush(self)

    def _account(self, step: int, row: list[float]) -> None:
        loss, grad_norm, skipped = row[self._loss], row[self._grad_norm], row[self._skipped]
        self.steps += 1
        self.skipped += int(skipped)
        finite_grads = math.isfinite(grad_norm)
        if self.stop_on_nonfinite and self.diverged_step is None and row[self._nonfinite]:
            self.diverged_step = step
        if finite_grads and not skipped:
            self.grad_norm_sum += grad_norm
            self.grad_norm_count += 1
            self.grad_norm_max = max(self.grad_norm_max, grad_norm)
        if any(row[i] == 1.0 for i in self._changed):
            self.changed_steps += 1
        self.recent_losses.append(loss)

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
