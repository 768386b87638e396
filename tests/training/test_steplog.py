"""gradlab.steplog: the columns of steps.csv, and StepLog writing a real CsvLog: the rows
hold what was recorded, the derived columns, divergence and the summary's figures, each
checked against a reference computed here in plain Python.

The clock is a fake one (``time`` in gradlab.steplog), so that elapsed_s and the
once-a-second flush are exact rather than whatever the machine's speed makes them."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

import gradlab.steplog as steplog
from gradlab.runlog import CsvLog
from gradlab.steplog import (
    FINAL_LOSS_WINDOW,
    GROWTH_WINDOW,
    StepLog,
    metric_columns,
    step_columns,
)

NAN, INF = math.nan, math.inf


class FakeClock:
    """Stands in for the ``time`` module: ``perf_counter`` is whatever ``now`` is."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(steplog, "time", fake)
    return fake


def make_log(
    path: Path,
    metrics: list[str],
    edit_columns: list[str] = (),
    capacity: int = 100,
    batch_sizes: bool = False,
    **kwargs,
) -> StepLog:
    edit_columns = list(edit_columns)
    columns = step_columns(metrics, edit_columns, batch_sizes=batch_sizes)
    options = {"use_scaler": False, "stop_on_nonfinite": True, **kwargs}
    return StepLog(
        CsvLog(path, columns), metrics, edit_columns, capacity, torch.device("cpu"), **options
    )


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def record(log: StepLog, step: int, values: list[float], batch: int = 4, lr: float = 0.5):
    log.record(step, 0, lr, batch, [torch.tensor(float(v)) for v in values])


# --------------------------------------------------------------------------- the columns


def test_step_columns_in_order():
    assert step_columns(["loss"], []) == [
        "step",
        "epoch",
        "lr",
        "loss",
        "skipped",
        "nonfinite",
        "elapsed_s",
    ]
    assert step_columns(["loss", "grad_norm"], ["clip_norm.changed", "clip_norm.scale"]) == [
        "step",
        "epoch",
        "lr",
        "loss",
        "grad_norm",
        "skipped",
        "nonfinite",
        "clip_norm.changed",
        "clip_norm.scale",
        "elapsed_s",
    ]


def test_step_columns_with_batch_sizes():
    assert step_columns(["loss"], ["noise.sigma"], batch_sizes=True) == [
        "step",
        "epoch",
        "lr",
        "batch_size",
        "loss",
        "skipped",
        "nonfinite",
        "noise.sigma",
        "elapsed_s",
    ]


def test_metric_columns_full_has_one_norm_per_parameter_in_order():
    names = ["fc1.weight", "fc1.bias", "fc2.weight"]
    expected = [
        "loss",
        "accuracy",
        "grad_norm",
        "grad_norm_after",
        "grad_norm.fc1.weight",
        "grad_norm.fc1.bias",
        "grad_norm.fc2.weight",
    ]
    assert metric_columns(names, "full", use_scaler=False) == expected
    assert metric_columns(names, "full", use_scaler=True) == expected


def test_metric_columns_loss_adds_grad_norm_only_under_a_scaler():
    assert metric_columns(["fc1.weight"], "loss", use_scaler=False) == ["loss"]
    assert metric_columns(["fc1.weight"], "loss", use_scaler=True) == ["loss", "grad_norm"]


# --------------------------------------------------------------------------- the rows

FULL = metric_columns(["fc1.weight"], "full", use_scaler=False)
EDITS = ["clip_norm.changed", "clip_norm.scale"]


def test_recorded_values_are_written_at_the_flush(tmp_path: Path, clock: FakeClock):
    path = tmp_path / "steps.csv"
    log = make_log(path, FULL, EDITS)
    clock.now += 0.25
    #              loss correct grad after fc1.weight changed scale
    record(log, 1, [2.5, 3, 1.5, 1.0, 0.75, 1, 0.5], batch=4, lr=0.05)
    clock.now += 0.5
    record(log, 2, [1.25, 4, 2.0, 1.0, 2.0, 0, 1.0], batch=4, lr=0.025)
    assert rows(path) == []  # nothing is read back before the flush
    log.flush()
    assert path.read_text().splitlines()[0] == ",".join(step_columns(FULL, EDITS))
    assert rows(path) == [
        {
            "step": "1",
            "epoch": "0",
            "lr": "0.05",
            "loss": "2.5",
            "accuracy": "0.75",  # 3 correct of 4, divided on the host
            "grad_norm": "1.5",
            "grad_norm_after": "1",
            "grad_norm.fc1.weight": "0.75",
            "skipped": "0",
            "nonfinite": "0",
            "clip_norm.changed": "1",
            "clip_norm.scale": "0.5",
            "elapsed_s": "0.25",
        },
        {
            "step": "2",
            "epoch": "0",
            "lr": "0.025",
            "loss": "1.25",
            "accuracy": "1",
            "grad_norm": "2",
            "grad_norm_after": "1",
            "grad_norm.fc1.weight": "2",
            "skipped": "0",
            "nonfinite": "0",
            "clip_norm.changed": "0",
            "clip_norm.scale": "1",
            "elapsed_s": "0.75",
        },
    ]


def test_values_have_seven_significant_digits(tmp_path: Path, clock: FakeClock):
    path = tmp_path / "steps.csv"
    log = make_log(path, ["loss"])
    third = torch.tensor(1 / 3)  # float32 on the device: 0.3333333432674408
    log.record(7, 2, 1e-4, 4, [third])
    log.flush()
    (row,) = rows(path)
    assert row["loss"] == format(third.item(), ".7g") == "0.3333333"
    assert row["lr"] == "0.0001" and row["step"] == "7" and row["epoch"] == "2"


def test_the_batch_size_column(tmp_path: Path, clock: FakeClock):
    path = tmp_path / "steps.csv"
    log = make_log(path, ["loss", "accuracy"], batch_sizes=True)
    record(log, 1, [0.5, 3], batch=6)
    record(log, 2, [0.5, 2], batch=8)
    log.flush()
    got = rows(path)
    assert [r["batch_size"] for r in got] == ["6", "8"]
    assert [r["accuracy"] for r in got] == ["0.5", "0.25"]  # each by its own batch


def test_nan_metrics_are_empty_cells(tmp_path: Path, clock: FakeClock):
    path = tmp_path / "steps.csv"
    log = make_log(path, FULL, EDITS, stop_on_nonfinite=False)
    record(log, 1, [2.0, 1, 1.0, 1.0, 1.0, NAN, NAN])  # an edit switched off this step
    record(log, 2, [NAN, 1, 1.0, 1.0, 1.0, 0, 1.0])  # a diverged loss
    log.flush()
    first, second = rows(path)
    assert first["clip_norm.changed"] == first["clip_norm.scale"] == ""
    assert first["loss"] == "2" and first["nonfinite"] == "0"
    assert second["loss"] == "" and second["nonfinite"] == "1"
    assert "nan" not in path.read_text()


def test_an_empty_batch_has_no_accuracy_and_is_not_nonfinite(tmp_path: Path, clock: FakeClock):
    path = tmp_path / "steps.csv"
    log = make_log(path, FULL, batch_sizes=True)
    record(log, 1, [NAN, 0, 0.0, 0.0, 0.0], batch=0)
    log.flush()
    (row,) = rows(path)
    assert row["batch_size"] == "0" and row["loss"] == "" and row["accuracy"] == ""
    assert row["nonfinite"] == "0" and row["skipped"] == "0"
    assert log.diverged_step is None
    assert log.figures()["final_train_loss"] is None  # no loss to average


# --------------------------------------------------------------------------- skipped, nonfinite


@pytest.mark.parametrize(
    ("use_scaler", "loss", "grad_norm", "batch", "skipped", "nonfinite"),
    [
        (False, 1.0, 2.0, 4, 0, 0),
        (True, 1.0, 2.0, 4, 0, 0),
        (True, 1.0, INF, 4, 1, 0),  # the GradScaler skipped the step: not a divergence
        (True, 1.0, NAN, 4, 1, 0),
        (True, NAN, INF, 4, 1, 1),  # skipped, and the loss itself is not finite
        (False, 1.0, INF, 4, 0, 1),  # without a scaler, an infinite gradient is nonfinite
        (False, INF, 2.0, 4, 0, 1),
        (False, NAN, 2.0, 4, 0, 1),
        (False, NAN, 2.0, 0, 0, 0),  # no examples: no loss, nothing wrong
    ],
)
def test_skipped_and_nonfinite(
    tmp_path: Path, clock: FakeClock, use_scaler, loss, grad_norm, batch, skipped, nonfinite
):
    path = tmp_path / "steps.csv"
    log = make_log(path, ["loss", "grad_norm"], use_scaler=use_scaler, stop_on_nonfinite=True)
    record(log, 1, [loss, grad_norm], batch=batch)
    log.flush()
    (row,) = rows(path)
    assert (row["skipped"], row["nonfinite"]) == (str(skipped), str(nonfinite))
    assert row["grad_norm"] == ("" if math.isnan(grad_norm) else format(grad_norm, ".7g"))
    assert log.figures()["skipped_steps"] == skipped
    assert log.diverged_step == (1 if nonfinite else None)


def test_without_a_grad_norm_only_the_loss_can_be_nonfinite(tmp_path: Path, clock: FakeClock):
    path = tmp_path / "steps.csv"
    log = make_log(path, ["loss"], use_scaler=True)
    record(log, 1, [1.0])
    record(log, 2, [INF])
    log.flush()
    assert [(r["skipped"], r["nonfinite"]) for r in rows(path)] == [("0", "0"), ("0", "1")]


# --------------------------------------------------------------------------- divergence


def test_the_first_nonfinite_step_is_the_divergence(tmp_path: Path, clock: FakeClock):
    log = make_log(tmp_path / "steps.csv", ["loss", "grad_norm"])
    for step, loss in enumerate([1.0, 1.0, NAN, 1.0, INF], start=1):
        record(log, step, [loss, 1.0])
    assert log.diverged_step is None  # derived at the flush, not at the record
    log.flush()
    assert (log.diverged_step, log.diverged_reason) == (3, "nonfinite")


def test_nonfinite_steps_do_not_stop_a_run_that_skips_them(tmp_path: Path, clock: FakeClock):
    path = tmp_path / "steps.csv"
    log = make_log(path, ["loss", "grad_norm"], stop_on_nonfinite=False)
    record(log, 1, [NAN, INF])
    log.flush()
    assert log.diverged_step is None and log.diverged_reason is None
    assert rows(path)[0]["nonfinite"] == "1"  # still recorded as such


def reference_growth(losses: list[float], factor: float) -> int | None:
    """The step (1-based) where the mean of the last 10 finite losses after the first
    finite one first exceeds ``factor`` times that first loss."""
    first, window = None, []
    for step, loss in enumerate(losses, start=1):
        if not math.isfinite(loss):
            continue
        if first is None:
            first = loss
            continue
        window = (window + [loss])[-GROWTH_WINDOW:]
        if (
            len(window) == GROWTH_WINDOW
            and first > 0
            and sum(window) / len(window) > factor * first
        ):
            return step
    return None


@pytest.mark.parametrize(
    ("losses", "expected"),
    [
        ([1.0] + [2.5] * 10, 11),  # the window fills at step 11
        ([1.0] + [2.5] * 9, None),  # not full yet
        ([1.0] + [2.0] * 10, None),  # exactly twice the first loss is not above it
        ([1.0] + [2.0] * 10 + [2.5], 12),  # (9 * 2 + 2.5) / 10 = 2.05 > 2
        ([1.0] + [4.0] * 2 + [0.5] * 15, None),  # a spike that passes: 1.2 at most
        ([1.0] + [4.0] * 5 + [0.5] * 5, 11),  # (5 * 4 + 5 * 0.5) / 10 = 2.25
        ([NAN, 1.0] + [2.5] * 10, 12),  # the first finite loss is the reference
        ([1.0] + [2.5] * 5 + [NAN] + [2.5] * 5, 12),  # a NaN is not in the window
        ([0.0] + [100.0] * 20, None),  # no reference above zero: never
    ],
)
def test_loss_growth(tmp_path: Path, clock: FakeClock, losses, expected):
    assert reference_growth(losses, 2.0) == expected  # the reference agrees with the table
    log = make_log(tmp_path / "steps.csv", ["loss"], diverge_factor=2.0, stop_on_nonfinite=False)
    for step, loss in enumerate(losses, start=1):
        record(log, step, [loss])
    log.flush()
    assert log.diverged_step == expected
    assert log.diverged_reason == (None if expected is None else "loss_growth")


def test_no_loss_growth_check_without_a_factor(tmp_path: Path, clock: FakeClock):
    log = make_log(tmp_path / "steps.csv", ["loss"], diverge_factor=0.0)
    for step in range(1, 30):
        record(log, step, [1.0 if step == 1 else 1000.0])
    log.flush()
    assert log.diverged_step is None


def test_empty_batches_are_not_losses_for_growth(tmp_path: Path, clock: FakeClock):
    log = make_log(tmp_path / "steps.csv", ["loss"], diverge_factor=2.0)
    record(log, 1, [NAN], batch=0)
    record(log, 2, [1.0])
    for step in range(3, 12):
        record(log, step, [2.5])
    record(log, 12, [0.0], batch=0)  # counted, it would fill the window at step 12
    record(log, 13, [2.5])
    log.flush()
    assert (log.diverged_step, log.diverged_reason) == (13, "loss_growth")


def test_the_first_divergence_wins(tmp_path: Path, clock: FakeClock):
    log = make_log(tmp_path / "steps.csv", ["loss"], diverge_factor=2.0)
    losses = [1.0] + [2.5] * 10 + [NAN]
    for step, loss in enumerate(losses, start=1):
        record(log, step, [loss])
    log.flush()
    assert (log.diverged_step, log.diverged_reason) == (11, "loss_growth")
    log = make_log(tmp_path / "again.csv", ["loss"], diverge_factor=2.0)
    for step, loss in enumerate([1.0, NAN] + [2.5] * 12, start=1):
        record(log, step, [loss])
    log.flush()
    assert (log.diverged_step, log.diverged_reason) == (2, "nonfinite")


def test_divergence_is_found_across_flushes(tmp_path: Path, clock: FakeClock):
    log = make_log(tmp_path / "steps.csv", ["loss"], capacity=3, diverge_factor=2.0)
    for step, loss in enumerate([1.0] + [2.5] * 10, start=1):
        record(log, step, [loss])
    log.flush()
    assert log.diverged_step == 11


# --------------------------------------------------------------------------- figures


def test_figures_of_an_empty_log(tmp_path: Path, clock: FakeClock):
    log = make_log(tmp_path / "steps.csv", FULL, EDITS)
    assert log.figures() == {
        "final_train_loss": None,
        "grad_norm_mean": None,
        "grad_norm_max": None,
        "edit_changed_frac": None,
        "skipped_steps": 0,
    }


def test_figures_against_a_reference(tmp_path: Path, clock: FakeClock):
    metrics = ["loss", "grad_norm"]
    edits = ["clip_norm.changed", "clip_norm.scale", "noise.changed"]
    log = make_log(tmp_path / "steps.csv", metrics, edits, capacity=4, use_scaler=True)
    steps = []
    for step in range(1, 31):
        loss = 0.25 * step
        grad_norm = INF if step % 7 == 0 else 0.5 * (step % 5)  # overflows: skipped
        clip_changed = 1.0 if step % 3 == 0 else 0.0
        scale = 1.0  # 1.0, but not a `.changed` column
        noise_changed = 1.0 if step % 4 == 0 else NAN
        batch = 0 if step == 29 else 4
        steps.append((loss, grad_norm, clip_changed, noise_changed, batch))
        record(log, step, [loss, grad_norm, clip_changed, scale, noise_changed], batch=batch)
    log.flush()

    losses = [loss for loss, _, _, _, batch in steps if batch > 0]
    finite_norms = [g for _, g, _, _, _ in steps if math.isfinite(g)]
    changed = [1 for _, _, c, n, _ in steps if c == 1.0 or n == 1.0]
    assert log.figures() == {
        "final_train_loss": sum(losses[-FINAL_LOSS_WINDOW:]) / FINAL_LOSS_WINDOW,
        "grad_norm_mean": sum(finite_norms) / len(finite_norms),
        "grad_norm_max": max(finite_norms),
        "edit_changed_frac": len(changed) / 30,
        "skipped_steps": 30 // 7,
    }
    # the same figures, written out: losses 2.5..7.0 and 7.5 (step 29 had no examples)
    assert log.figures()["final_train_loss"] == (sum(0.25 * s for s in range(10, 29)) + 7.5) / 20
    assert log.figures()["grad_norm_max"] == 2.0
    assert log.figures()["edit_changed_frac"] == 15 / 30  # multiples of 3 or of 4


def test_final_train_loss_with_fewer_than_twenty_steps(tmp_path: Path, clock: FakeClock):
    log = make_log(tmp_path / "steps.csv", ["loss"])
    for step, loss in enumerate([4.0, 2.0, 1.5], start=1):
        record(log, step, [loss])
    log.flush()
    assert log.figures()["final_train_loss"] == 2.5
    assert log.figures()["grad_norm_mean"] is None  # no grad_norm column
    assert log.figures()["edit_changed_frac"] == 0.0


# --------------------------------------------------------------------------- flushing


def test_a_full_buffer_is_flushed(tmp_path: Path, clock: FakeClock):
    path = tmp_path / "steps.csv"
    flushed = []
    log = make_log(path, ["loss"], capacity=3, on_flush=lambda log: flushed.append(dict(log.last)))
    record(log, 1, [1.0])
    record(log, 2, [2.0])
    assert rows(path) == [] and flushed == []
    clock.now += 0.5  # under a second: only the full buffer makes this flush
    record(log, 3, [3.0])  # the third of three: written
    assert [r["loss"] for r in rows(path)] == ["1", "2", "3"]
    (last,) = flushed
    assert math.isnan(last.pop("accuracy"))  # no accuracy column
    assert last == {"step": 3, "epoch": 0, "loss": 3.0, "steps_per_second": 6.0}
    record(log, 4, [4.0])
    assert len(rows(path)) == 3  # the buffer starts again
    log.flush()
    assert [r["step"] for r in rows(path)] == ["1", "2", "3", "4"]
    assert len(flushed) == 2


def test_a_flush_is_due_after_a_second(tmp_path: Path, clock: FakeClock):
    path = tmp_path / "steps.csv"
    log = make_log(path, ["loss"], capacity=100)
    record(log, 1, [1.0])
    clock.now += 0.9
    record(log, 2, [1.0])
    assert rows(path) == []
    clock.now += 0.2  # 1.1 s since the log began: the next record flushes
    record(log, 3, [1.0])
    assert [r["elapsed_s"] for r in rows(path)] == ["0", "0.9", "1.1"]
    clock.now += 0.5
    record(log, 4, [1.0])  # 0.5 s since that flush
    assert len(rows(path)) == 3


def test_an_empty_flush_writes_nothing_and_calls_nobody(tmp_path: Path, clock: FakeClock):
    path = tmp_path / "steps.csv"
    calls = []
    log = make_log(path, ["loss"], on_flush=calls.append)
    log.flush()
    assert calls == [] and log.last == {}
    assert path.read_text() == ",".join(step_columns(["loss"], [])) + "\n"


def test_last_holds_the_last_rows_figures(tmp_path: Path, clock: FakeClock):
    log = make_log(tmp_path / "steps.csv", FULL)
    clock.now += 4.0
    record(log, 8, [0.5, 1, 1.0, 1.0, 1.0], batch=4)  # 4 s since the last flush: one now
    assert log.last == {
        "step": 8,
        "epoch": 0,
        "loss": 0.5,
        "accuracy": 0.25,  # divided, as in the file
        "steps_per_second": 2.0,
    }
    assert log.elapsed() == 4.0
