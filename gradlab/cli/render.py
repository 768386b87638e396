"""Terminal output: progress bars, summaries and errors. The only module besides the CLI
that imports rich."""

from __future__ import annotations

import sys
import textwrap
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from gradlab.study.layout import Line
from gradlab.text import one_line

# emoji=False: a ``:name:`` in a user's text (a path, an address) prints as written
console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)


def user_text(text: object) -> str:
    """User text for a rich string: on one line, control characters shown as escapes
    (:func:`gradlab.text.one_line`), rich's markup escaped."""
    return escape(one_line(text))


def print_error(message: str) -> None:
    """One line on stderr: ``error: <message>``."""
    err_console.print(f"[bold red]error:[/] {user_text(message)}", highlight=False, soft_wrap=True)


class TrainingProgress:
    """A rich progress bar fed by the training loop's ``on_progress`` callback."""

    def __init__(self, name: str) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=20),
            TextColumn("step {task.completed}/{task.total} ep {task.fields[epoch]}"),
            TextColumn("loss {task.fields[loss]} acc {task.fields[acc]}"),
            TextColumn("{task.fields[rate]} steps/s"),
            TextColumn("eta"),
            TimeRemainingColumn(compact=True),
            console=err_console,
            transient=False,
        )
        self._started = False
        self._task = self._progress.add_task(
            name, total=None, epoch="-", loss="-", acc="-", rate="-"
        )

    def __enter__(self) -> TrainingProgress:
        return self  # the bar appears with the first report, after setup has succeeded

    def __exit__(self, *exc: Any) -> None:
        if self._started:
            self._progress.stop()

    def __call__(self, p: Any) -> None:
        if not self._started:
            self._progress.start()
            self._started = True
        self._progress.update(
            self._task,
            completed=p.step,
            total=p.total_steps,
            epoch=p.epoch,
            loss=f"{p.loss:.4f}",
            acc="-" if p.accuracy != p.accuracy else f"{p.accuracy:.3f}",  # NaN: not logged
            rate=f"{p.steps_per_second:,.0f}",
        )


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_run_summary(path: Any, summary: dict[str, Any]) -> None:
    """The short table printed when a run ends, with its folder."""
    status = summary["status"]
    colour = {"completed": "green", "interrupted": "yellow"}.get(status, "red")
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="dim")
    table.add_column()
    table.add_row("status", f"[{colour}]{status}[/]")
    table.add_row("steps", f"{summary['steps']} ({summary['epochs']} epochs)")
    resumed = summary.get("resumed")
    if isinstance(resumed, dict) and resumed.get("from_steps"):
        steps = ", ".join(str(s) for s in resumed["from_steps"])
        table.add_row("resumed", f"{resumed.get('count')}x, from step {steps}")
    table.add_row("final train loss", _fmt(summary.get("final_train_loss"), ".4f"))
    table.add_row(
        "test accuracy",
        f"{_fmt(summary.get('final_test_accuracy'), '.4f')} "
        f"(best {_fmt(summary.get('best_test_accuracy'), '.4f')})",
    )
    if "noise_multiplier" in summary:  # DP-SGD: the guarantee and the numbers behind it
        eps = summary.get("epsilon")
        table.add_row(
            "privacy",
            f"epsilon {'inf' if eps is None else format(eps, '.4g')} at delta "
            f"{summary.get('delta'):g} ({summary.get('accountant')}; sigma "
            f"{summary['noise_multiplier']:.4g}, q {summary.get('sample_rate'):.4g}, "
            f"{summary.get('privacy_steps')} steps)",
        )
        if summary.get("privacy_note"):
            table.add_row("", f"[yellow]{summary['privacy_note']}[/]")
    if summary.get("skipped_steps"):
        table.add_row("AMP skipped steps", str(summary["skipped_steps"]))
    if summary.get("nonfinite_skips"):
        table.add_row("non-finite steps skipped", str(summary["nonfinite_skips"]))
    if "diverged_step" in summary:
        table.add_row("diverged at step", str(summary["diverged_step"]))
    alerts = {k: n for k, n in (summary.get("alerts") or {}).items() if n}
    if alerts:
        table.add_row(
            "alerts", ", ".join(f"{k} {n}" for k, n in alerts.items()) + " (gradlab inspect)"
        )
    if "error" in summary:
        table.add_row("error", user_text(summary["error"]))
    table.add_row(
        "wall time",
        f"{summary['wall_seconds']:.2f} s ({_fmt(summary.get('steps_per_second'), ',.0f')} steps/s)",
    )
    console.print(table)
    console.print(f"[dim]run folder[/]        {user_text(path)}", soft_wrap=True, highlight=False)


def print_strategies(
    rows: list[dict[str, Any]],
    common: list[tuple[str, Any, str]],
    probe_common: list[tuple[str, Any, str]] = (),  # type: ignore[assignment]
) -> None:
    """The registry as a table: family, type, parameters with defaults, description; then
    the parameters every edit (and every probe, when some row is one) takes."""
    table = Table(title="Gradient-editing strategies", show_lines=True, title_justify="left")
    table.add_column("family", style="dim")
    table.add_column("type", style="bold cyan", overflow="fold")
    table.add_column("parameters (default)")
    table.add_column("what it does")
    for row in rows:
        params = "\n".join(
            f"[bold]{k}[/] ({escape(_default(d))}): {escape(text)}" for k, d, text in row["params"]
        )
        table.add_row(row["family"], row["name"], params or "-", escape(row["summary"]))
    console.print(table)
    shown = [("edit", common)]
    if any(row["family"] == "probe" for row in rows):
        shown.append(("probe (diagnostics.probes)", list(probe_common)))
    if all(row["family"] == "probe" for row in rows):
        shown = shown[1:]
    for what, keys in shown:
        console.print(f"Every {what} also takes:")
        for key, default, text in keys:
            console.print(f"  [bold]{key}[/] ({escape(_default(default))}): {escape(text)}")


def _default(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


PIPE_WIDTH = 100
"""Width of the tables written to a pipe or a file (no terminal to measure)."""


def table_width(width: int | None = None) -> int:
    """``width``, else the terminal's, else :data:`PIPE_WIDTH`."""
    if width is not None:
        return width
    return console.width if console.is_terminal else PIPE_WIDTH


_STYLES = {"title": "bold", "header": "bold", "rule": "dim", "note": "dim", "constants": ""}


def print_lines(lines: list[Line]) -> None:
    """Lines from :mod:`gradlab.study.layout`: styled on a terminal, plain text on a pipe."""
    if not console.is_terminal:
        sys.stdout.write("".join(one_line(line.text) + "\n" for line in lines))
        sys.stdout.flush()
        return
    for line in lines:
        style = "bold" if line.bold else _STYLES.get(line.kind, "")
        console.print(
            Text(one_line(line.text), style=style),
            no_wrap=True,
            overflow="ignore",
            crop=False,
            highlight=False,
        )


def print_warning(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {user_text(message)}", highlight=False, soft_wrap=True)


def print_check_edit(report: dict[str, Any]) -> None:
    """One row per setup and check: passed or FAILED, and what was seen; then the cost per
    step beside a step without the edit."""
    table = Table(
        title=f"check-edit {report['spec']}: {report['steps']} steps per run, on the CPU",
        title_justify="left",
    )
    for header in ("setup", "check", "result", "detail"):
        table.add_column(header, overflow="fold")
    for setup, checks in report["setups"].items():
        for check, (ok, detail) in checks.items():
            verdict = "[green]passed[/]" if ok else "[bold red]FAILED[/]"
            table.add_row(setup, check, verdict, escape(one_line(detail)))
    console.print(table)
    for setup, (with_edit, without) in report["seconds"].items():
        ratio = with_edit / without if without and without == without else float("nan")
        console.print(
            f"  {setup}: {with_edit * 1e3:.2f} ms per step with the edit, "
            f"{without * 1e3:.2f} ms without ({ratio:.2f}x)",
            highlight=False,
        )
    console.print("all checks passed" if report["passed"] else "[bold red]some checks failed[/]")


def print_evaluation(result: dict[str, Any], written: list[Any]) -> None:
    """A run's evaluation: loss and accuracy, then one row per class (its count, accuracy
    and its row of the confusion matrix), then the files written."""
    dataset = result["dataset"]
    console.print(
        f"{user_text(result['run'])} ({result['which']}) on {user_text(dataset['name'])} "
        f"({result['examples']:,} test examples, {user_text(dataset.get('prepared', ''))}): "
        f"test loss {result['test_loss']:.4f}, accuracy {result['test_accuracy']:.4f}",
        highlight=False,
        soft_wrap=True,
    )
    table = Table(title="per class; predicted as (confusion matrix)", title_justify="left")
    for header in ("class", "n", "acc"):
        table.add_column(header, justify="right")
    for j in range(len(result["confusion"])):
        table.add_column(str(j), justify="right")
    for row, counts in zip(result["per_class"], result["confusion"], strict=True):
        accuracy = "-" if row["accuracy"] is None else f"{row['accuracy']:.3f}"
        cells = [f"[bold]{c}[/]" if j == row["label"] else str(c) for j, c in enumerate(counts)]
        table.add_row(str(row["label"]), f"{row['count']:,}", accuracy, *cells)
    console.print(table)
    for path in written:
        console.print(f"wrote {user_text(path)}", highlight=False, soft_wrap=True)


def print_gradcheck(report: dict[str, Any]) -> None:
    """One table per engine: entries checked, kinks, relative error, largest difference,
    the worst entry's error beyond its floor and the verdict per parameter; below them the
    criterion with its floor, the kinks, and the entries below what finite differences
    resolve.

    Kinks (entries whose perturbation crossed a ReLU kink) are left out of the errors; a
    parameter whose every entry is a kink shows ``-`` and the verdict ``all kinks``.
    """
    colours = {"good": "green", "suspicious": "yellow", "wrong": "red", "all kinks": "yellow"}
    headers = ("param", "entries", "kinks", "relative error", "max |diff|", "beyond floor")

    def number(value: float | None) -> str:
        return "-" if value is None else "0" if value == 0 else f"{value:.2e}"

    for engine, result in report["engines"].items():
        table = Table(
            title=f"gradcheck, {engine} engine: eps {report['eps']:g}, "
            f"{report['samples']} {report['inputs']} samples, float64",
            title_justify="left",
        )
        rows = [*result["params"].items(), ("overall", result["overall"])]
        cells = [
            [
                name,
                f"{row['entries']:,}",
                f"{row['kinks']:,}",
                *(number(row.get(key)) for key in ("rel_error", "max_abs_diff", "entry_error")),
            ]
            for name, row in rows
        ]
        # the values keep their width on a narrow terminal; the headers wrap instead
        for i, header in enumerate(headers):
            width = max(len(line[i]) for line in cells)
            table.add_column(header, justify="left" if i == 0 else "right", min_width=width)
        table.add_column("verdict", min_width=max(len(row["verdict"]) for _, row in rows))
        for (name, row), line in zip(rows, cells, strict=True):
            colour = colours[row["verdict"]]
            table.add_row(
                *line,
                f"[{colour}]{row['verdict']}[/]",
                style="bold" if name == "overall" else None,
            )
        console.print(table)
    # the kinks and the floors are the same for every engine (they come from the losses)
    result = next(iter(report["engines"].values()))
    criterion = report.get("criterion")
    if criterion:
        largest = result["overall"].get("floor")
        console.print(
            f"criterion: an entry passes when |g - approx| <= floor + {criterion['rtol']:g} "
            "(|g| + |approx|); beyond floor is the worst entry's "
            "max(|g - approx| - floor, 0) / (|g| + |approx|)",
            highlight=False,
        )
        console.print(
            f"floor: round-off {criterion['roundoff_units']:g} x machine eps "
            f"{criterion['machine_eps']:.2g} ({criterion['dtype']}) x |J| {criterion['loss']:.3g}"
            f" / eps {report['eps']:g} = {criterion['roundoff']:.2g}, plus truncation "
            "2 |approx - approx at eps/2|"
            + ("" if largest is None else f"; largest floor {largest:.2g}"),
            highlight=False,
        )
    kinks = result["overall"]["kinks"]
    unchecked = [name for name, row in result["params"].items() if row["rel_error"] is None]
    if kinks:
        console.print(
            f"{kinks:,} {'entry' if kinks == 1 else 'entries'} left out of the errors as kinks: "
            "moving by eps (or eps/2) put some ReLU input on the other side of 0"
            + (f"; every entry of {', '.join(unchecked)} is a kink" if unchecked else "")
        )
    # a parameter of only such entries has a note in the report; this says it for all
    every = [name for name, row in result["params"].items() if row.get("note")]
    some = [
        f"{row['unresolved']:,} of {row['entries'] - row['kinks']:,} of {name}"
        for name, row in result["params"].items()
        if row.get("unresolved") and not row.get("note")
    ]
    if every or some:
        console.print(
            f"below what finite differences resolve at eps={report['eps']:g} (|approx| within "
            "its floor), compared by absolute difference: "
            + "; ".join(([f"every entry of {', '.join(every)}"] if every else []) + some),
            highlight=False,
        )
    if report["passed"]:
        others = " of every other parameter" if unchecked else ""
        console.print(f"[green]passed[/]: every entry{others} within its floor + 1e-5 relative")
    elif result["overall"]["rel_error"] is None:
        console.print("[red]failed[/]: every entry crossed a ReLU kink, nothing was compared")
    else:
        console.print(
            "[red]failed[/]: some entry beyond its floor by more than 1e-5 relative "
            "(about 1e-3 is suspicious, larger is a bug)"
        )


def print_inspection(run: Any, layers: Any, alerts: Any, width: int | None = None) -> None:
    """Per-layer first/last/min/max table and the alerts of one run, fitted to the width
    (numbers whole, in 4 significant digits)."""
    from gradlab.study import layout

    width = table_width(width)
    headers = ["param", "stat", "first", "last", "min", "max", "max at step"]
    rows, previous = [], None
    for row in layers.to_dict("records"):
        rows.append(
            [
                row["param"] if row["param"] != previous else "",
                row["stat"],
                *(f"{row[k]:.4g}" for k in ("first", "last", "min", "max")),
                "-" if row["argmax_step"] is None else str(row["argmax_step"]),
            ]
        )
        previous = row["param"]
    lines = [
        Line(t, "title") for t in layout.wrap(f"gradient statistics of {run} (before edits)", width)
    ]
    lines += layout.fit_table(headers, rows, width, keys=2)
    if alerts.empty:
        lines.append(Line("no alerts", "title"))
    else:
        lines.append(Line(f"{len(alerts)} alerts", "title"))
        for row in alerts.to_dict("records"):
            text = f"step {row['step']}  {row['alert']}: {row['message']}"
            lines += [Line(t) for t in textwrap.wrap(text, width, subsequent_indent="    ")]
    print_lines(lines)


def print_alert(alert: Any) -> None:
    err_console.print(
        f"[yellow]alert:[/] {user_text(alert.message)}", highlight=False, soft_wrap=True
    )


class SweepProgress:
    """A rich progress bar of a sweep: runs done / running / failed, with an ETA."""

    def __init__(self, total: int) -> None:
        self.counts = {"done": 0, "running": 0, "failed": 0, "skipped": 0, "interrupted": 0}
        self._progress = Progress(
            TextColumn("[bold]sweep"),
            BarColumn(bar_width=24),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[counts]}"),
            TextColumn("eta"),
            TimeRemainingColumn(compact=True),
            console=err_console,
        )
        self._task = self._progress.add_task("sweep", total=total, counts=self._text())
        self._started = False

    def _text(self) -> str:
        c = self.counts
        failed = f"[red]{c['failed']} failed[/]" if c["failed"] else "0 failed"
        stopped = f" · {c['interrupted']} interrupted" if c["interrupted"] else ""
        return (
            f"{c['done']} done · {c['running']} running · {failed} · {c['skipped']} skipped"
            f"{stopped}"
        )

    def __enter__(self) -> SweepProgress:
        return self  # the bar appears with the first event, once the sweep has started

    def __exit__(self, *exc: Any) -> None:
        if self._started:
            self._progress.stop()

    def __call__(self, kind: str, run: Any) -> None:
        if not self._started:
            self._progress.start()
            self._started = True
        if kind == "skip":  # already completed: not part of the bar
            self.counts["skipped"] += 1
            total = self._progress.tasks[0].total or 0
            self._progress.update(self._task, total=max(0, total - 1))
        elif kind == "start":
            self.counts["running"] += 1
            if getattr(run, "resume", False):
                self._progress.console.print(
                    f"resuming {user_text(run.name)} seed {run.seed} from its checkpoint "
                    f"({user_text(run.folder or '')})",
                    highlight=False,
                )
        else:
            self.counts["running"] = max(0, self.counts["running"] - 1)
            kind = run.status if run.status in ("done", "interrupted") else "failed"
            self.counts[kind] += 1
            if run.status not in ("done", "interrupted"):
                self._progress.console.print(
                    f"[red]{user_text(run.status)}:[/] {user_text(run.name)} seed {run.seed}: "
                    f"{user_text(run.error or '')}",
                    highlight=False,
                )
            self._progress.advance(self._task)
        self._progress.update(self._task, counts=self._text())
