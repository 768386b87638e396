"""The training loop: one explicit function that reads top to bottom.

Each step, in this order: batch -> forward, loss, (scaled) backward (the engine; per-example
clipping with DP-SGD) -> (DP-SGD noise) -> unscale -> gradient norms -> gradient health ->
probes (before) -> **edit** -> probes (after) -> optimizer step -> scaler update -> log -> evaluation when due. Per-step metrics
stay on the training device in a preallocated buffer and are written to ``steps.csv`` every
``train.flush_every`` steps (and at least once a second), so no step waits for the device.

:func:`train` is the setup (:func:`_build`, everything that can fail on bad input comes
before the run folder exists), the loop, and the summary (:func:`_summary`).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from gradlab import __version__
from gradlab.checkpoint import CHECKPOINT_SECONDS, FORMAT, remove_checkpoints, write_checkpoint
from gradlab.config import Config, OptimConfig
from gradlab.data import Dataset, epoch_batches, load_dataset
from gradlab.diagnostics import GRADS_COLUMNS, Alert, Diagnostics
from gradlab.editing import EditPipeline
from gradlab.editing.base import Tensors, global_norm
from gradlab.editing.pipeline import PluginError
from gradlab.engines import make_engine, resolve_engine
from gradlab.engines.base import Engine
from gradlab.environment import (
    StopSignals,
    describe_environment,
    now_iso,
    resolve_amp,
    resolve_device,
    seed_everything,
    setup_record,
    signal_exit_code,
)
from gradlab.errors import GradlabError, RunFolderError
from gradlab.model import MLP
from gradlab.optimizers import Optimizer, make_optimizer
from gradlab.plugins import plugin_error, plugin_specs, plugins_of, write_sources
from gradlab.privacy import STAT_COLUMNS as DP_COLUMNS
from gradlab.privacy import Privatizer
from gradlab.probes import ProbeError, ProbeSet, ProbeView
from gradlab.runlog import (
    ALERTS_COLUMNS,
    ALERTS_FILE,
    EVAL_COLUMNS,
    EVALS_FILE,
    GRADS_FILE,
    PRIVATE_EVAL_COLUMNS,
    STEPS_FILE,
    SUMMARY_FILE,
    Heartbeat,
    RunWriter,
)
from gradlab.steplog import StepLog, metric_columns, step_columns
from gradlab.weights import BEST_FILE, MODEL_FILE, initial_weights, save_weights

if TYPE_CHECKING:
    from gradlab.resume import Resume


@dataclass
class Progress:
    """What the loop reports to a progress display at each flush."""

    step: int
    total_steps: int
    epoch: int
    loss: float
    accuracy: float
    steps_per_second: float
    test_accuracy: float | None


@dataclass
class RunResult:
    """What :func:`train` returns: the run folder, its summary and the trained network."""

    path: Path
    summary: dict[str, Any]
    model: torch.nn.Module | None = None


class SetupInterrupted(GradlabError):
    """A stop signal cut the privacy accounting of a run's setup short: the run did not
    start and has no folder. The command exits as an interrupted run does (128 + the
    signal's number: 130 for Ctrl-C)."""

    def __init__(self, signal_name: str, solving: bool) -> None:
        doing = "solving privacy.target_epsilon" if solving else "accounting privacy"
        super().__init__(f"interrupted by {signal_name} while {doing}: no run was started")
        self.signal = signal_name
        self.exit_code = signal_exit_code(signal_name)


def learning_rate(cfg_optim: OptimConfig, step: int, total_steps: int) -> float:
    """The learning rate for ``step`` (counted from 1) under the configured schedule."""
    lr = cfg_optim.lr
    if cfg_optim.schedule == "step":
        return lr * cfg_optim.gamma ** ((step - 1) // cfg_optim.step_size)
    if cfg_optim.schedule == "cosine":
        progress = (step - 1) / max(1, total_steps - 1)
        return cfg_optim.min_lr + (lr - cfg_optim.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
    return lr


def default_eval_every(steps_per_epoch: int, total_steps: int) -> int:
    """``train.eval_every: 0``: evaluate every epoch or every tenth of the run, whichever is
    more often (at least 10 test points per run), and always at the end."""
    return max(1, min(steps_per_epoch, math.ceil(total_steps / 10)))


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    amp_dtype: torch.dtype | None,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over ``(x, y)``, in large batches, without autograd."""
    total_loss = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(xb)
        total_loss += F.cross_entropy(logits.float(), yb, reduction="sum")
        correct += (logits.argmax(1) == yb).sum()
    n = max(1, len(x))
    return total_loss.item() / n, correct.item() / n


def train(
    config: Config,
    runs_dir: str | Path = "runs",
    on_progress: Callable[[Progress], None] | None = None,
    on_alert: Callable[[Alert], None] | None = None,
    command: list[str] | None = None,
    data: Dataset | None = None,
    run_folder: Path | None = None,
    resume: Resume | None = None,
) -> RunResult:
    """Train ``config`` and write its run folder under ``runs_dir``.

    Everything that can fail on bad input (device, AMP mode, engine, dataset) is resolved
    before the run folder is created, so a bad input leaves nothing behind.

    Args:
        config: the validated experiment.
        runs_dir: where the run folder is created.
        on_progress: called with a :class:`Progress` each time metrics are flushed.
        on_alert: called with each gradient-health :class:`~gradlab.diagnostics.Alert` as it
            starts (they are also written to alerts.csv and counted in summary.json).
        command: the command line to record in meta.json.
        data: an already loaded dataset on the right device (skips loading).
        run_folder: an empty folder already claimed for this run (a sweep's); default: a new
            one under ``runs_dir``.
        resume: go on with an interrupted run in its own folder from its checkpoint
            (:func:`gradlab.resume.prepare_resume` reads and checks it; :func:`gradlab.resume`
            does both): the result is the run that was never interrupted.

    Every ``train.checkpoint_every`` steps (default: about once a minute) and when a signal
    stops the run, ``checkpoint.pt`` keeps what the run needs to go on
    (:mod:`gradlab.checkpoint`).

    SIGINT, SIGTERM and SIGHUP end the run like Ctrl-C: the step finishes, the logs are
    flushed, a checkpoint is written, the model is evaluated and the summary says
    ``interrupted`` with the signal's name in ``signal``; a second signal during the loop stops it at once (still with a
    summary). Privacy accounting gives way at once to a signal that arrives while it runs in
    setup (the planned epsilon, solving ``target_epsilon``: no run starts) or after the loop
    (the summary then says epsilon was not computed). An exception, a write error included,
    ends the run as ``failed``.

    Returns:
        The run folder, its summary (``status`` is completed, interrupted, failed or
        diverged; a failed run's summary holds the error message) and the trained model.

    Raises:
        GradlabError: bad input, found before any run folder exists.
        SetupInterrupted: a signal cut setup's privacy accounting short (no run folder).
    """
    with contextlib.ExitStack() as stack:
        # a signal from here on ends the run cleanly (during setup it is only recorded: the
        # run then stops after its first step, with a summary)
        stop = stack.enter_context(StopSignals())
        try:
            r = _build(
                config, runs_dir, on_progress, on_alert, command, data, run_folder, stack, stop,
                resume,
            )  # fmt: skip
        except OSError as exc:  # an unreadable data folder, say: before any run folder exists
            where = f"{exc.filename}: " if exc.filename else ""
            raise GradlabError(f"cannot set up the run: {where}{exc.strerror or exc}") from None
        opt, weights, names = config.optim, r.weights, list(r.weights)
        full_log, use_scaler = config.train.log == "full", r.use_scaler
        skip_nonfinite = config.train.on_nonfinite == "skip"
        wide = r.privatizer is not None  # DP noise can pass float32's sum of squares
        status, error, mid_step = "completed", None, False
        # where the run starts: step 0, or a checkpoint's step inside its epoch
        step, epoch, done_in_epoch = r.start
        consecutive_skips, nonfinite_skips = r.skips
        in_epoch = done_in_epoch
        logged = step

        # ---- the loop; every way out of it still ends in a truthful summary
        stop.arm()  # in the loop a second signal stops the run at once
        try:
            while step < r.total_steps and status == "completed":
                epoch += 1
                r.epoch_start = r.data_order.get_state()  # a checkpoint redraws the epoch
                batches = epoch_batches(
                    config.data.sampling, len(r.data.train_x), opt.batch_size, r.data_order,
                    r.device,
                )  # fmt: skip
                in_epoch, done_in_epoch = done_in_epoch, 0  # a resumed run skips what it did
                for idx in itertools.islice(batches, in_epoch, None):
                    in_epoch += 1
                    step += 1
                    lr = r.optimizer.lr = learning_rate(opt, step, r.total_steps)
                    xb = r.data.train_x.index_select(0, idx)
                    yb = r.data.train_y.index_select(0, idx)
                    empty = len(idx) == 0  # a Poisson batch may draw no example

                    # forward, loss, (scaled) backward; with privacy, per-example clipping
                    per_example: torch.Tensor | None = None
                    if empty:
                        per_example = r.no_examples if r.x_norms is not None else None
                        if step == 1:  # before this step's noise moves the weights
                            r.steplog.first_loss = r.untrained_loss()
                        loss, logits = _no_examples(weights.values(), r.device)
                    elif r.privatizer is not None:
                        loss, logits = r.engine.clipped_step(xb, yb, r.privatizer.clip)
                    elif r.x_norms is not None and r.probes.wants_per_example(step):
                        # and each example's squared gradient norms, for the probes
                        x_norms = r.x_norms.index_select(0, idx)
                        loss, logits, per_example = r.engine.measured_step(xb, yb, x_norms)
                    else:
                        loss, logits = r.engine.step(xb, yb)
                    # every .grad is filled by the engine (no check in the hot path)
                    grads = cast(Tensors, {name: weights[name].grad for name in names})
                    if r.privatizer is not None:  # noise, / expected batch size: DP-SGD's
                        r.privatizer.add_noise(list(grads.values()), r.scaler)
                    # the scaler's inf check (it skips the step) sees the gradient the step
                    # applies; norms and edits see it unscaled (the scaler takes gradlab's
                    # optimizers: they have torch.optim's param_groups and step)
                    r.scaler.unscale_(r.optimizer)  # type: ignore[arg-type]
                    if full_log or use_scaler:  # infinite only where an entry is not finite
                        param_norms, grad_norm = gradient_norms(list(grads.values()), wide)
                    due = r.diagnostics is not None and (
                        r.diagnostics.due(step) or step == r.total_steps  # and the last step
                    )
                    checks = r.diagnostics if due else None
                    if checks:
                        checks.record(step, grads, weights)  # before the edits
                    if r.probes.measures("before"):  # they read, never change
                        known_norms = param_norms if full_log or use_scaler else None
                        r.probes.measure("before", ProbeView(
                            step, lr, loss, len(idx), grads, weights, per_example, known_norms
                        ))  # fmt: skip

                    # on_nonfinite: skip reads the loss on the host: one sync per step
                    if (
                        skip_nonfinite
                        and not empty
                        and not finite_step(loss, grad_norm if full_log else None, use_scaler)
                    ):
                        consecutive_skips += 1
                        nonfinite_skips += 1
                        edit_stats = r.pipeline.idle_stats()
                        grad_norm_after: torch.Tensor | None = grad_norm if full_log else None
                        r.probe_after(step, lr, loss, len(idx), grads)
                        if checks:
                            checks.after_edit(step, grads)
                        r.scaler.update()  # no step: the parameters stay as they were
                    else:
                        consecutive_skips = 0
                        known = dict(zip(names, param_norms, strict=True)) if full_log else None
                        edit_stats = r.pipeline.apply(  # the edit
                            grads, weights, step, known, lr, loss, r.optimizer.state
                        )
                        if full_log:
                            grad_norm_after = (
                                global_norm(list(grads.values())) if len(r.pipeline) else grad_norm
                            )
                        r.probe_after(step, lr, loss, len(idx), grads)
                        if checks:
                            checks.after_edit(step, grads)
                        # skipped by the scaler when a gradient overflowed; frozen ones sit out
                        frozen = r.pipeline.frozen_at(step)
                        r.scaler.step(r.optimizer, frozen=frozen)  # type: ignore[arg-type]
                        r.scaler.update()
                    if checks:
                        checks.after_step(step, weights)  # the update really made

                    if full_log:
                        correct = torch.sum(logits.argmax(1) == yb, dtype=torch.float32)
                        after = cast(torch.Tensor, grad_norm_after)  # full log: always set
                        values = [loss, correct, grad_norm, after, *param_norms]
                    else:
                        values = [loss, grad_norm] if use_scaler else [loss]
                    if r.privatizer is not None:
                        edit_stats = [*edit_stats, *r.privatizer.step_stats()]
                    r.steplog.record(
                        step, epoch, lr, len(idx), [*values, *edit_stats], r.probes.values()
                    )
                    logged = step
                    if r.steplog.diverged_step is not None or (
                        consecutive_skips >= config.train.max_consecutive_skips
                    ):
                        status = "diverged"
                    if status == "completed" and step % r.eval_every == 0 and step < r.total_steps:
                        r.evaluate_now(step, epoch)  # a second signal cuts it short
                    if stop.raised:
                        status = "interrupted"
                    if step >= r.total_steps or status != "completed":
                        break
                    if r.checkpoint_due(step):
                        r.checkpoint(step, epoch, in_epoch, consecutive_skips, nonfinite_skips)
        except KeyboardInterrupt:  # a second signal, mid-step: the last checkpoint stands
            status, mid_step = "interrupted", True
            step = logged  # the steps it logged (a step cut short is not one)
        except Exception as exc:  # a bug or an environment failure: record it with the run
            status, error = "failed", _describe_failure(exc, r.folder.path)

        # ---- after the loop: signals are only recorded from here on, so nothing cuts this short
        stop.finishing()
        try:
            r.steplog.flush()
        except Exception as exc:  # noqa: BLE001 - a full disk: the run failed, say why
            if status != "failed":
                status, error = "failed", _describe_failure(exc, r.folder.path)
        if status == "completed" and r.steplog.diverged_step is not None:
            status = "diverged"
        if status == "interrupted" and not mid_step and step > 0:  # stopped between steps
            try:  # before the last evaluation, which an uninterrupted run does not make
                r.checkpoint(step, epoch, in_epoch, consecutive_skips, nonfinite_skips)
            except Exception as exc:  # noqa: BLE001 - a full disk: the run failed, say why
                status, error = "failed", _describe_failure(exc, r.folder.path)
        if status in ("completed", "interrupted") and step > 0 and r.last_eval != step:
            try:
                r.evaluate_now(step, epoch, abortable=True)
            except Exception as exc:  # noqa: BLE001 - out of memory, a full disk
                status, error = "failed", _describe_failure(exc, r.folder.path)
        if status == "completed" and stop.raised:
            status = "interrupted"  # the signal came after the last step
        try:
            r.save_weights(step, status)
        except Exception as exc:  # noqa: BLE001 - a full disk: the run failed, say why
            if status != "failed":
                status, error = "failed", f"cannot write the weights: {exc}"
        summary = _summary(r, status, error, step, nonfinite_skips, stop.raised)
        if status in ("completed", "diverged"):  # ended for good: nothing to go on from
            remove_checkpoints(r.folder.path)
        try:
            r.folder.write_meta({"ended": now_iso()})
            r.folder.write_summary(summary)
        except OSError as exc:  # nothing more can be written: the caller still learns why
            summary.update(status="failed", error=f"cannot write the run folder: {exc}")
    return RunResult(path=r.folder.path, summary=summary, model=r.model)


# --------------------------------------------------------------------------- setup


@dataclass
class _Run:
    """A run once set up: what the loop works with, built by :func:`_build`."""

    config: Config
    device: torch.device
    amp_dtype: torch.dtype | None
    use_scaler: bool
    data: Dataset
    model: MLP
    weights: dict[str, torch.Tensor]
    optimizer: Optimizer
    scaler: torch.amp.GradScaler
    engine: Engine
    pipeline: EditPipeline
    privatizer: Privatizer | None
    data_order: torch.Generator
    steps_per_epoch: int
    total_steps: int
    eval_every: int
    folder: RunWriter
    diagnostics: Diagnostics | None
    probes: ProbeSet
    x_norms: torch.Tensor | None  # each training image's L2 norm, for per-example probes
    steplog: StepLog
    on_progress: Callable[[Progress], None] | None
    stop: StopSignals
    evals: list[tuple[int, float, float]] = field(default_factory=list)  # step, loss, acc
    best: tuple[int, float, dict[str, torch.Tensor]] | None = None  # train.save: best
    start: tuple[int, int, int] = (0, 0, 0)  # step, epoch before it, steps done in its epoch
    skips: tuple[int, int] = (0, 0)  # consecutive and all non-finite steps skipped so far
    resumed: list[int] = field(default_factory=list)  # every resume's step (meta.json's)
    epoch_start: torch.Tensor | None = None  # the data order's state at this epoch's start
    last_checkpoint: float = field(default_factory=time.perf_counter)

    def checkpoint_due(self, step: int) -> bool:
        """``train.checkpoint_every`` steps, or (0) about a minute, since the last one."""
        every = self.config.train.checkpoint_every
        if every:
            return step % every == 0
        return time.perf_counter() - self.last_checkpoint >= CHECKPOINT_SECONDS

    def checkpoint(
        self, step: int, epoch: int, in_epoch: int, consecutive_skips: int, nonfinite_skips: int
    ) -> None:
        """``checkpoint.pt`` after ``step`` (:mod:`gradlab.checkpoint`): the logs written up
        to it first, so that their lengths belong to it."""
        self.steplog.flush()
        if self.diagnostics is not None:
            self.diagnostics.flush()
        np_state = cast(tuple[Any, ...], np.random.get_state())
        state = {
            "format": FORMAT,
            "experiment_hash": self.folder.meta.get("experiment_hash"),
            "step": step,
            "epoch": epoch,
            "in_epoch": in_epoch,
            "epoch_start": self.epoch_start,
            "skips": [consecutive_skips, nonfinite_skips],
            "weights": {n: w.detach().to("cpu", copy=True) for n, w in self.weights.items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "edits": self.pipeline.state_dict(),
            "probes": self.probes.state_dict(),
            "privacy": self.privatizer.state_dict() if self.privatizer is not None else None,
            "steplog": self.steplog.state_dict(),
            "diagnostics": self.diagnostics.state_dict() if self.diagnostics else None,
            "evals": [list(e) for e in self.evals],
            "best": list(self.best) if self.best is not None else None,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
                "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
                "python": random.getstate(),
            },
            "logs": self.folder.sizes(),
        }
        write_checkpoint(self.folder.path, state)
        self.last_checkpoint = time.perf_counter()

    def restore(self, state: dict[str, Any]) -> None:
        """Put a checkpoint's state back (a resumed run, before its loop starts)."""
        with torch.no_grad():
            for name, w in self.weights.items():
                w.copy_(state["weights"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.pipeline.load_state_dict(state["edits"])
        self.probes.load_state_dict(state["probes"])
        if self.privatizer is not None:
            self.privatizer.load_state_dict(state["privacy"])
        self.steplog.load_state_dict(state["steplog"])
        if self.diagnostics is not None:
            self.diagnostics.load_state_dict(state["diagnostics"])
        self.evals = [(int(s), float(loss), float(acc)) for s, loss, acc in state["evals"]]
        if state["best"] is not None:
            best_step, accuracy, weights = state["best"]
            self.best = (int(best_step), float(accuracy), weights)
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"]:
            torch.cuda.set_rng_state_all(rng["cuda"])
        name, keys, *rest = rng["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
        random.setstate(rng["python"])
        self.data_order.set_state(state["epoch_start"])  # the epoch is drawn again
        self.start = (int(state["step"]), int(state["epoch"]) - 1, int(state["in_epoch"]))
        self.skips = (int(state["skips"][0]), int(state["skips"][1]))
        self.resumed = [int(r["step"]) for r in self.folder.meta.get("resumed", [])]

    @property
    def no_examples(self) -> torch.Tensor:
        """The per-example norms of a step that measured none: no rows."""
        return torch.empty(0, len(self.weights), device=self.device)

    def probe_after(
        self, step: int, lr: float, loss: torch.Tensor, batch: int, grads: Tensors
    ) -> None:
        """The probes that read the gradient after the edits, before the update."""
        if self.probes.measures("after"):
            self.probes.measure("after", ProbeView(step, lr, loss, batch, grads, self.weights))

    @property
    def last_eval(self) -> int | None:
        """The step of the latest evaluation (None before the first)."""
        return self.evals[-1][0] if self.evals else None

    def evaluate_now(self, step: int, epoch: int, abortable: bool = False) -> None:
        """Evaluate on the test set (:func:`evaluate`); the result goes to evals.csv (with
        epsilon under DP: see :meth:`epsilon` for ``abortable``)."""
        self.model.eval()
        loss, accuracy = evaluate(
            self.model, self.data.test_x, self.data.test_y,
            self.config.train.eval_batch_size, self.amp_dtype,
        )  # fmt: skip
        self.model.train()
        spent = [self.epsilon(step, abortable)] if self.privatizer is not None else []
        self.evals.append((step, loss, accuracy))
        if self.config.train.save == "best" and (self.best is None or accuracy > self.best[1]):
            copies = {n: w.detach().to("cpu", copy=True) for n, w in self.weights.items()}
            self.best = (step, accuracy, copies)  # the earliest of equal accuracies
        self.folder.evals.append([[step, epoch, loss, accuracy, *spent, self.steplog.elapsed()]])

    def epsilon(self, step: int, abortable: bool) -> float:
        """epsilon after ``step`` steps (the privatizer accounts each step once). With
        ``abortable`` (after the loop, where signals are otherwise only recorded) a signal
        during the accounting cuts it short: NaN, and the summary says it was not computed."""
        assert self.privatizer is not None
        if not abortable or step in self.privatizer.spent:
            return self.privatizer.epsilon(step)
        try:
            with self.stop.abortable():
                return self.privatizer.epsilon(step)
        except KeyboardInterrupt:
            self.privatizer.unaccounted.add(step)
            return math.nan

    def save_weights(self, step: int, status: str) -> None:
        """``model.safetensors`` (and ``model-best.safetensors`` with ``train.save: best``),
        each written whole or not at all."""
        if self.config.train.save == "none" or step == 0:
            return
        about = {
            "gradlab": __version__,
            "experiment_hash": self.folder.meta.get("experiment_hash"),
            "model": self.config.model.model_dump(mode="json"),
        }
        save_weights(
            self.weights, self.folder.path / MODEL_FILE, {**about, "step": step, "status": status}
        )
        if self.best is not None:
            best_step, accuracy, weights = self.best
            save_weights(
                weights, self.folder.path / BEST_FILE,
                {**about, "step": best_step, "test_accuracy": accuracy},
            )  # fmt: skip

    def untrained_loss(self) -> float | None:
        """``diverge_factor``'s reference when the first batch drew no example: the untrained
        network's mean loss on the training set (None without ``diverge_factor``)."""
        if not self.config.train.diverge_factor:
            return None
        self.model.eval()
        loss, _ = evaluate(
            self.model, self.data.train_x, self.data.train_y,
            self.config.train.eval_batch_size, self.amp_dtype,
        )  # fmt: skip
        self.model.train()
        return loss

    def flushed(self, log: StepLog) -> None:
        """After each flush of the step log: the gradient-health logs, then the progress."""
        if self.diagnostics is not None:
            self.diagnostics.flush()
        if self.on_progress is not None:
            test_accuracy = self.evals[-1][2] if self.evals else None
            self.on_progress(
                Progress(total_steps=self.total_steps, test_accuracy=test_accuracy, **log.last)
            )


def _build(
    config: Config,
    runs_dir: str | Path,
    on_progress: Callable[[Progress], None] | None,
    on_alert: Callable[[Alert], None] | None,
    command: list[str] | None,
    data: Dataset | None,
    run_folder: Path | None,
    stack: contextlib.ExitStack,
    stop: StopSignals,
    resume: Resume | None = None,
) -> _Run:
    """Everything the loop needs: first what can fail on bad input (device, AMP, engine,
    data, DP-SGD's noise and its accounting, which a signal cuts short), then the run
    folder, its logs and its heartbeat, which ``stack`` closes however the run ends.
    ``resume``: the folder is the interrupted run's, checked against this setup before any
    of its files changes, and the run's state is its checkpoint's."""
    started = now_iso()
    if resume is not None and resume.threads and resume.threads != torch.get_num_threads():
        torch.set_num_threads(resume.threads)  # the numbers of a CPU matmul depend on them
    device = resolve_device(config.train.device)
    amp_dtype, use_scaler = resolve_amp(config.train.amp, device)
    engine_name = resolve_engine(config.train.engine, amp_dtype)
    seed_everything(config.seed)
    if data is None:
        data = load_dataset(config.data, device)

    # ---- model, engine, optimizer, scaler, edits, DP-SGD
    model = MLP(config.model).to(device)
    warm_start = None  # model.init_from: another run's final weights, checked
    if config.model.init_from is not None:
        warm_start = initial_weights(config.model.init_from, model)
    weights: dict[str, torch.Tensor] = dict(model.named_parameters())
    names = list(weights)
    opt = config.optim
    optimizer = make_optimizer(weights, opt)
    scaler = torch.amp.GradScaler(
        device.type, init_scale=config.train.amp_init_scale, enabled=use_scaler
    )
    engine = make_engine(engine_name, model, scaler, amp_dtype)
    pipeline = EditPipeline(config.edit, names, config.seed, device)
    pipeline.setup(weights)
    n_train = len(data.train_x)
    steps_per_epoch = math.ceil(n_train / opt.batch_size)
    total_steps = opt.max_steps or opt.epochs * steps_per_epoch
    sampling = config.data.sampling
    privatizer = planned_epsilon = None
    if config.privacy is not None:  # solves target_epsilon: may fail, before the folder
        try:
            with stop.abortable():
                privatizer = Privatizer(
                    config.privacy, names, opt.batch_size, n_train, total_steps, config.seed,
                    device, sampling,
                )  # fmt: skip
                planned_epsilon = privatizer.epsilon(total_steps)
        except KeyboardInterrupt:
            raise SetupInterrupted(stop.raised or "SIGINT", privatizer is None) from None

    # ---- the run folder
    eval_every = config.train.eval_every or default_eval_every(steps_per_epoch, total_steps)
    metrics = metric_columns(names, config.train.log, use_scaler)
    probes = ProbeSet(config.diagnostics.probes, names, device)  # measurements only
    stat_columns = pipeline.columns + (DP_COLUMNS if privatizer else [])
    meta = describe_environment(device, amp_dtype, use_scaler)
    plugins = plugins_of(plugin_specs(config))  # the user's own edits and rule
    hashes = {spec: plugin.sha256 for spec, plugin in plugins.items()}
    setup = {**setup_record(device, amp_dtype, use_scaler, engine_name), "plugins": hashes}
    if warm_start is not None:
        setup["init_from"] = {
            "experiment": warm_start["experiment_hash"],
            "seed": warm_start["seed"],
        }
    meta.update(
        engine=engine_name,
        dataset=data.info,
        command=command if command is not None else sys.argv,
        started=started,
        seed=config.seed,
        experiment_hash=config.experiment_hash(setup),
        edits=pipeline.label(),
        steps_per_epoch=steps_per_epoch,
        eval_every=eval_every,
        total_steps=total_steps,
        sampling=sampling,
    )
    if plugins:
        meta["plugins"] = {spec: plugin.record() for spec, plugin in plugins.items()}
    if warm_start is not None:
        meta["init_from"] = warm_start
    if privatizer is not None:
        meta["privacy"] = {
            "noise_multiplier": privatizer.noise_multiplier,
            "noise_std": privatizer.noise_std,
            "sample_rate": privatizer.sample_rate,
            "expected_batch_size": privatizer.expected_batch_size,
            "planned_epsilon": _json_number(cast(float, planned_epsilon)),
        }
    columns = step_columns(
        metrics, stat_columns + probes.columns, batch_sizes=sampling == "poisson"
    )
    eval_columns = PRIVATE_EVAL_COLUMNS if privatizer else EVAL_COLUMNS
    pipeline.state_dict(), probes.state_dict()  # a user's state a checkpoint cannot save
    try:
        if resume is not None:  # checked against the run before any of its files changes
            resume.check(meta, data.info, {STEPS_FILE: columns, EVALS_FILE: eval_columns})
            folder = RunWriter(resume.folder, columns, eval_columns, resume.state["logs"])
            folder.meta = resume.meta
            folder.write_meta({"resumed": [*resume.meta.get("resumed", []), resume.record(meta)]})
            folder.write_summary({"status": "running", "pid": os.getpid()})
            (folder.path / "traceback.txt").unlink(missing_ok=True)  # of the run it goes on from
        else:
            folder = RunWriter.create(
                runs_dir, config.name, config.to_yaml(), meta, columns, folder=run_folder,
                eval_columns=eval_columns,
            )  # fmt: skip
    except OSError as exc:  # a full disk, a quota, a read-only folder
        raise RunFolderError(
            f"cannot write the run folder {runs_dir}: {exc.strerror or exc}"
        ) from None
    stack.callback(folder.close)
    try:
        stack.enter_context(Heartbeat(folder.path / SUMMARY_FILE))
        write_sources(plugins, folder.path)  # the code that runs, beside its results
        diagnostics = None
        if config.diagnostics.every:  # gradient health every few steps
            diagnostics = Diagnostics(
                config.diagnostics,
                names,
                folder.add_log(GRADS_FILE, GRADS_COLUMNS),
                folder.add_log(ALERTS_FILE, ALERTS_COLUMNS),
                relu_hidden=config.model.activation == "relu",
                on_alert=on_alert,
            )
        # per-step metrics, buffered on the device
        steplog = StepLog(
            folder.steps,
            metrics,
            stat_columns,
            config.train.flush_every,
            device,
            use_scaler=use_scaler,
            stop_on_nonfinite=config.train.on_nonfinite != "skip",
            diverge_factor=config.train.diverge_factor,
            probes=probes,
        )
    except OSError as exc:
        folder.close()
        _mark_failed(folder, f"cannot write the run folder: {exc}")
        raise RunFolderError(
            f"cannot write the run folder {folder.path}: {exc.strerror or exc}"
        ) from None
    run = _Run(
        config, device, amp_dtype, use_scaler, data, model, weights, optimizer, scaler, engine,
        pipeline, privatizer, torch.Generator().manual_seed(config.seed), steps_per_epoch,
        total_steps, eval_every, folder, diagnostics, probes,
        torch.linalg.vector_norm(data.train_x.flatten(1), dim=1) if probes.per_example else None,
        steplog, on_progress, stop,
    )  # fmt: skip
    steplog.on_flush = run.flushed
    if resume is not None:
        run.restore(resume.state)
    return run


def _summary(
    r: _Run, status: str, error: str | None, step: int, nonfinite_skips: int, signal: str | None
) -> dict[str, Any]:
    """``summary.json``: how the run ended and its figures."""
    wall = r.steplog.elapsed()
    evals = r.evals
    summary: dict[str, Any] = {
        "status": status,
        "steps": step,
        "epochs": round(step / r.steps_per_epoch, 4),
        "final_test_accuracy": evals[-1][2] if evals else None,
        "best_test_accuracy": max(e[2] for e in evals) if evals else None,
        "final_test_loss": evals[-1][1] if evals else None,
        **r.steplog.figures(),
        "nonfinite_skips": nonfinite_skips,
        "alerts": r.diagnostics.counts if r.diagnostics is not None else None,
        "wall_seconds": round(wall, 4),
        "steps_per_second": round(step / wall, 2) if wall > 0 else None,
    }
    if r.privatizer is not None:
        r.epsilon(step, abortable=True)  # accounted already, unless the run failed
        summary.update(r.privatizer.record(step))
    if status == "diverged":
        summary["diverged_step"] = r.steplog.diverged_step or step
        summary["diverged_reason"] = r.steplog.diverged_reason or "nonfinite"
    if status == "interrupted":
        summary["signal"] = signal or "SIGINT"
    if r.resumed:
        summary["resumed"] = {"count": len(r.resumed), "from_steps": r.resumed}
    if error:
        summary["error"] = error
    return summary


def _no_examples(params, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A step whose batch drew no example: zero gradients, a NaN loss (an empty cell) and no
    logits."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        else:
            p.grad.zero_()
    return torch.full((), math.nan, device=device), torch.empty(0, 10, device=device)


def _json_number(value: float) -> float | None:
    """``value``, or None where JSON has no number for it (infinity)."""
    return value if math.isfinite(value) else None


def _mark_failed(run: RunWriter | None, error: str) -> None:
    """Best effort: a run folder whose setup failed says so, if the disk still takes it."""
    if run is None:
        return
    try:
        run.write_summary({"status": "failed", "steps": 0, "error": error})
    except OSError:
        pass


def _describe_failure(exc: BaseException, folder: Path) -> str:
    """The one-line error of a failed run; the traceback goes to traceback.txt if anything
    can still be written there."""
    import traceback

    try:
        (folder / "traceback.txt").write_text(traceback.format_exc(), encoding="utf-8")
    except OSError:
        pass
    if isinstance(exc, (PluginError, ProbeError)):  # which edit or probe, the rule or the line
        return str(exc)
    return plugin_error(exc)  # the user's file and line when a plugin's code raised


def finite_step(loss: torch.Tensor, grad_norm: torch.Tensor | None, use_scaler: bool) -> bool:
    """Whether the loss (and, without a GradScaler, the gradient) is finite: a host sync."""
    if grad_norm is None or use_scaler:
        return bool(torch.isfinite(loss))
    return bool(torch.isfinite(loss) & torch.isfinite(grad_norm))


def gradient_norms(
    grads: list[torch.Tensor], wide: bool
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Each gradient's 2-norm and their global norm, in float32. With ``wide`` (DP-SGD,
    whose noise ``max_grad_norm * noise_multiplier`` can be as large as a float32 allows)
    the squares are summed in float64 where the device has it: float32's sum overflows once
    a norm passes 1.8e19, and a gradient whose entries are all finite must not read as
    infinite (under a GradScaler an infinite ``grad_norm`` is how steps.csv tells the steps
    the scaler skipped). Without DP no finite gradient comes near that (under fp16 each
    entry is at most 65504 before unscaling), and the float32 path costs a fifth as much."""
    if not wide or grads[0].device.type == "mps":
        norms = torch._foreach_norm(grads)
        return tuple(norms), torch.linalg.vector_norm(torch.stack(norms))
    norms64 = torch.stack([torch.linalg.vector_norm(g, dtype=torch.float64) for g in grads])
    return norms64.float().unbind(), torch.linalg.vector_norm(norms64).float()
