"""The training loop: one explicit function that reads top to bottom.

batch -> forward, loss, (scaled) backward (the engine; per-example clipping with DP-SGD) ->
unscale -> (DP-SGD noise) -> gradient norms -> **edit** -> optimizer step -> scaler update
-> log. Per-step metrics stay on the training device in a
preallocated buffer and are written to ``steps.csv`` every ``train.flush_every`` steps (and at
least once a second), so no step waits for the device.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from gradlab.config import Config
from gradlab.data import Dataset, epoch_batches, load_dataset
from gradlab.diagnostics import ALERTS_COLUMNS, GRADS_COLUMNS, Alert, Diagnostics
from gradlab.editing import EditPipeline
from gradlab.editing.base import global_norm
from gradlab.engines import make_engine, resolve_engine
from gradlab.environment import (
    StopSignals,
    describe_environment,
    now_iso,
    resolve_amp,
    resolve_device,
    seed_everything,
)
from gradlab.errors import ConfigError, RunFolderError
from gradlab.model import MLP
from gradlab.optimizers import make_optimizer
from gradlab.privacy import STAT_COLUMNS as DP_COLUMNS
from gradlab.privacy import Privatizer
from gradlab.runlog import (
    ALERTS_FILE,
    EVAL_COLUMNS,
    GRADS_FILE,
    PRIVATE_EVAL_COLUMNS,
    SUMMARY_FILE,
    Heartbeat,
    RunWriter,
)
from gradlab.steplog import StepLog, metric_columns, step_columns


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
    path: Path
    summary: dict[str, Any]
    model: torch.nn.Module | None = None  # the trained network (Python API only)


def learning_rate(cfg_optim, step: int, total_steps: int) -> float:
    """The learning rate for ``step`` (counted from 1) under the configured schedule."""
    lr = cfg_optim.lr
    if cfg_optim.schedule == "step":
        return lr * cfg_optim.gamma ** ((step - 1) // cfg_optim.step_size)
    if cfg_optim.schedule == "cosine":
        progress = (step - 1) / max(1, total_steps - 1)
        return cfg_optim.min_lr + (lr - cfg_optim.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
    return lr


@torch.inference_mode()
def default_eval_every(steps_per_epoch: int, total_steps: int) -> int:
    """``train.eval_every: 0``: evaluate every epoch or every tenth of the run, whichever is
    more often (at least 10 test points per run), and always at the end."""
    return max(1, min(steps_per_epoch, math.ceil(total_steps / 10)))


def evaluate(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, amp_dtype
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over ``(x, y)``, in large batches."""
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


def setup_record(
    device: torch.device, amp_dtype: torch.dtype | None, use_scaler: bool, engine: str
) -> dict[str, Any]:
    """The resolved setup as :mod:`gradlab.identity` reads it back from ``meta.json``."""
    return {
        "device": device.type,
        "amp": str(amp_dtype).removeprefix("torch.") if amp_dtype else "off",
        "grad_scaler": use_scaler,
        "engine": engine,
    }


def resolved_setup(config: Config) -> dict[str, Any]:
    """What ``train.device``, ``train.amp`` and ``train.engine`` resolve to on this machine
    (part of the experiment's identity). Settings that cannot run here (a missing device)
    are returned as written: such a run fails at its start anyway."""
    try:
        device = resolve_device(config.train.device)
        amp_dtype, use_scaler = resolve_amp(config.train.amp, device)
        engine = resolve_engine(config.train.engine, amp_dtype)
    except ConfigError:
        return {
            "device": config.train.device.split(":")[0],
            "amp": config.train.amp,
            "grad_scaler": False,
            "engine": config.train.engine,
        }
    return setup_record(device, amp_dtype, use_scaler, engine)


def train(
    config: Config,
    runs_dir: str | Path = "runs",
    on_progress: Callable[[Progress], None] | None = None,
    on_alert: Callable[[Alert], None] | None = None,
    command: list[str] | None = None,
    data: Dataset | None = None,
    run_folder: Path | None = None,
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

    SIGINT, SIGTERM and SIGHUP end the run like Ctrl-C: the step finishes, the logs are
    flushed, the model is evaluated and the summary says ``interrupted`` with the signal's
    name in ``signal``; a second signal during the loop stops it at once (still with a
    summary). An exception, a write error included, ends the run as ``failed``.

    Returns:
        The run folder, its summary (``status`` is completed, interrupted, failed or
        diverged; a failed run's summary holds the error message) and the trained model.
    """
    started = now_iso()
    # a signal from here on ends the run cleanly (during setup it is only recorded: the run
    # then stops after its first step, with a summary)
    stop = StopSignals().__enter__()
    run = heartbeat = None
    try:
        device = resolve_device(config.train.device)
        amp_dtype, use_scaler = resolve_amp(config.train.amp, device)
        engine_name = resolve_engine(config.train.engine, amp_dtype)
        seed_everything(config.seed)
        if data is None:
            data = load_dataset(config.data, device)

        # ---- model, engine, optimizer, scaler, edits
        model = MLP(config.model).to(device)
        weights = dict(model.named_parameters())
        names = list(weights)
        opt = config.optim
        optimizer = make_optimizer(weights, opt)
        scaler = torch.amp.GradScaler(
            device.type, init_scale=config.train.amp_init_scale, enabled=use_scaler
        )
        engine = make_engine(engine_name, model, scaler, amp_dtype)
        pipeline = EditPipeline(config.edit, names, config.seed, device)
        pipeline.setup(weights)
        data_order = torch.Generator().manual_seed(config.seed)

        n_train = len(data.train_x)
        steps_per_epoch = math.ceil(n_train / opt.batch_size)
        total_steps = opt.max_steps or opt.epochs * steps_per_epoch
        eval_every = config.train.eval_every or default_eval_every(steps_per_epoch, total_steps)
        full_log = config.train.log == "full"
        metrics = metric_columns(names, config.train.log, use_scaler)
        sampling = config.data.sampling
        privatizer = None
        if config.privacy is not None:  # solves target_epsilon: may fail, before the folder
            privatizer = Privatizer(
                config.privacy, names, opt.batch_size, n_train, total_steps, config.seed,
                device, sampling,
            )  # fmt: skip
        stat_columns = pipeline.columns + (DP_COLUMNS if privatizer else [])

        # ---- run folder
        meta = describe_environment(device, amp_dtype, use_scaler)
        meta.update(
            engine=engine_name,
            dataset=data.info,
            command=command if command is not None else sys.argv,
            started=started,
            seed=config.seed,
            experiment_hash=config.experiment_hash(
                setup_record(device, amp_dtype, use_scaler, engine_name)
            ),
            edits=pipeline.label(),
            steps_per_epoch=steps_per_epoch,
            eval_every=eval_every,
            total_steps=total_steps,
            sampling=sampling,
        )
        if privatizer is not None:
            meta["privacy"] = {
                "noise_multiplier": privatizer.noise_multiplier,
                "noise_std": privatizer.noise_std,
                "sample_rate": privatizer.sample_rate,
                "expected_batch_size": privatizer.expected_batch_size,
                "planned_epsilon": _json_number(privatizer.epsilon(total_steps, record=False)),
            }
        columns = step_columns(metrics, stat_columns, batch_sizes=sampling == "poisson")
        run = RunWriter.create(
            runs_dir, config.name, config.to_yaml(), meta, columns, folder=run_folder,
            eval_columns=PRIVATE_EVAL_COLUMNS if privatizer else EVAL_COLUMNS,
        )  # fmt: skip
        heartbeat = Heartbeat(run.path / SUMMARY_FILE).__enter__()

        # ---- per-step metrics, buffered on the device; gradient health every few steps
        skip_nonfinite = config.train.on_nonfinite == "skip"
        max_skips = config.train.max_consecutive_skips
        evals: list[tuple[int, float, float]] = []
        diagnostics = None
        if config.diagnostics.every:
            diagnostics = Diagnostics(
                config.diagnostics,
                names,
                run.add_log(GRADS_FILE, GRADS_COLUMNS),
                run.add_log(ALERTS_FILE, ALERTS_COLUMNS),
                relu_hidden=config.model.activation == "relu",
                on_alert=on_alert,
            )

        def report(log: StepLog) -> None:
            if diagnostics is not None:
                diagnostics.flush()
            if on_progress is not None:
                test_accuracy = evals[-1][2] if evals else None
                on_progress(
                    Progress(total_steps=total_steps, test_accuracy=test_accuracy, **log.last)
                )

        steplog = StepLog(
            run.steps,
            metrics,
            stat_columns,
            config.train.flush_every,
            device,
            use_scaler=use_scaler,
            stop_on_nonfinite=not skip_nonfinite,
            on_flush=report,
            diverge_factor=config.train.diverge_factor,
        )
        consecutive_skips = nonfinite_skips = 0

        def run_eval(step: int, epoch: int) -> None:
            model.eval()
            loss, accuracy = evaluate(
                model, data.test_x, data.test_y, config.train.eval_batch_size, amp_dtype
            )
            model.train()
            evals.append((step, loss, accuracy))
            spent = [privatizer.epsilon(step)] if privatizer is not None else []
            run.evals.append([[step, epoch, loss, accuracy, *spent, steplog.elapsed()]])

    except BaseException as exc:
        if heartbeat is not None:
            heartbeat.__exit__()
        if run is not None:
            run.close()
        stop.__exit__()
        if isinstance(exc, OSError):  # a full disk, a quota, a read-only folder
            where = run.path if run is not None else runs_dir
            _mark_failed(run, f"cannot write the run folder: {exc}")
            raise RunFolderError(
                f"cannot write the run folder {where}: {exc.strerror or exc}"
            ) from None
        raise

    # ---- the loop; every way out of it still ends in a truthful summary
    status, error, step, epoch = "completed", None, 0, 0
    stop.arm()  # in the loop a second signal stops the run at once
    try:
        while step < total_steps and status == "completed":
            epoch += 1
            for idx in epoch_batches(sampling, n_train, opt.batch_size, data_order, device):
                step += 1
                lr = learning_rate(opt, step, total_steps)
                optimizer.lr = lr
                xb = data.train_x.index_select(0, idx)
                yb = data.train_y.index_select(0, idx)
                empty = len(idx) == 0  # a Poisson batch may draw no example

                # forward, loss, (scaled) backward; with privacy, per-example clipping
                if empty:
                    loss, logits = _no_examples(weights.values(), device)
                elif privatizer is not None:
                    loss, logits = engine.clipped_step(xb, yb, privatizer.clip)
                else:
                    loss, logits = engine.step(xb, yb)
                scaler.unscale_(optimizer)  # norms and edits see the true gradients
                grads = {name: weights[name].grad for name in names}
                if privatizer is not None:  # noise, / expected batch size: DP-SGD's gradient
                    privatizer.add_noise(list(grads.values()))
                if full_log or use_scaler:
                    param_norms = torch._foreach_norm(list(grads.values()))
                    grad_norm = torch.linalg.vector_norm(torch.stack(param_norms))
                checked = diagnostics is not None and diagnostics.due(step)
                if checked:
                    diagnostics.record(step, grads, weights)  # before the edits

                # on_nonfinite: skip reads the loss on the host: one sync per step
                if (
                    skip_nonfinite
                    and not empty
                    and not finite_step(loss, grad_norm if full_log else None, use_scaler)
                ):
                    consecutive_skips += 1
                    nonfinite_skips += 1
                    edit_stats = pipeline.idle_stats()
                    grad_norm_after = grad_norm if full_log else None
                    if checked:
                        diagnostics.after_edit(step, grads)
                    scaler.update()  # no step: the parameters stay as they were
                else:
                    consecutive_skips = 0
                    known = dict(zip(names, param_norms, strict=True)) if full_log else None
                    edit_stats = pipeline.apply(grads, weights, step, known)  # the edit
                    if full_log:
                        grad_norm_after = (
                            global_norm(list(grads.values())) if len(pipeline) else grad_norm
                        )
                    if checked:
                        diagnostics.after_edit(step, grads)
                    # skipped by the scaler when a gradient overflowed; frozen ones sit out
                    scaler.step(optimizer, frozen=pipeline.frozen_at(step))
                    scaler.update()
                if checked:
                    diagnostics.after_step(step, weights)  # the update really made

                if full_log:
                    correct = torch.sum(logits.argmax(1) == yb, dtype=torch.float32)
                    values = [loss, correct, grad_norm, grad_norm_after, *param_norms]
                else:
                    values = [loss, grad_norm] if use_scaler else [loss]
                if privatizer is not None:
                    edit_stats = [*edit_stats, *privatizer.step_stats()]
                steplog.record(step, epoch, lr, len(idx), [*values, *edit_stats])
                if steplog.diverged_step is not None or consecutive_skips >= max_skips:
                    status = "diverged"
                if status == "completed" and step % eval_every == 0 and step < total_steps:
                    run_eval(step, epoch)
                if stop.raised:
                    status = "interrupted"
                if step >= total_steps or status != "completed":
                    break
    except KeyboardInterrupt:
        status = "interrupted"
    except Exception as exc:  # a bug or an environment failure: record it with the run
        status, error = "failed", _describe_failure(exc, run.path)

    # ---- after the loop: signals are only recorded from here on, so nothing cuts this short
    stop.finishing()
    try:
        steplog.flush()
    except Exception as exc:  # noqa: BLE001 - a full disk: the run failed, say why
        if status != "failed":
            status, error = "failed", _describe_failure(exc, run.path)
    if status == "completed" and steplog.diverged_step is not None:
        status = "diverged"
    if status in ("completed", "interrupted") and step > 0 and (not evals or evals[-1][0] != step):
        try:
            run_eval(step, epoch)
        except Exception as exc:  # noqa: BLE001 - out of memory, a full disk
            status, error = "failed", _describe_failure(exc, run.path)
    if status == "completed" and stop.raised:
        status = "interrupted"  # the signal came after the last step
    wall = steplog.elapsed()

    summary: dict[str, Any] = {
        "status": status,
        "steps": step,
        "epochs": round(step / steps_per_epoch, 4),
        "final_test_accuracy": evals[-1][2] if evals else None,
        "best_test_accuracy": max(e[2] for e in evals) if evals else None,
        "final_test_loss": evals[-1][1] if evals else None,
        **steplog.figures(),
        "nonfinite_skips": nonfinite_skips,
        "alerts": diagnostics.counts if diagnostics is not None else None,
        "wall_seconds": round(wall, 4),
        "steps_per_second": round(step / wall, 2) if wall > 0 else None,
    }
    if privatizer is not None:
        summary.update(privatizer.record(step))
    if status == "diverged":
        summary["diverged_step"] = steplog.diverged_step or step
        summary["diverged_reason"] = steplog.diverged_reason or "nonfinite"
    if status == "interrupted":
        summary["signal"] = stop.raised or "SIGINT"
    if error:
        summary["error"] = error
    try:
        run.write_meta({"ended": now_iso()})
        run.write_summary(summary)
    except OSError as exc:  # nothing more can be written: the caller still learns why
        summary.update(status="failed", error=f"cannot write the run folder: {exc}")
    finally:
        run.close()
        heartbeat.__exit__()
        stop.__exit__()
    return RunResult(path=run.path, summary=summary, model=model)


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
    return f"{type(exc).__name__}: {exc}"


def finite_step(loss: torch.Tensor, grad_norm: torch.Tensor | None, use_scaler: bool) -> bool:
    """Whether the loss (and, without a GradScaler, the gradient) is finite: a host sync."""
    if grad_norm is None or use_scaler:
        return bool(torch.isfinite(loss))
    return bool(torch.isfinite(loss) & torch.isfinite(grad_norm))
