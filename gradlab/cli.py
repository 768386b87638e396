"""The ``gradlab`` command: thin commands that parse, validate, call the library and render.

Heavy libraries (torch, pandas) are imported inside the commands that need them, so
``gradlab --help`` answers at once.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
import typer.core

import gradlab


class OneLineErrors(typer.core.TyperGroup):
    """Command-line mistakes (an unknown option, a value of the wrong type, a directory given
    for a file) end like every other bad input: one ``error:`` line, exit 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:  # typer vendors click from 0.2x on
            from typer._click import exceptions
        except ImportError:  # pragma: no cover - older typer
            from click import exceptions

        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except exceptions.NoArgsIsHelpError as exc:
            typer.echo(exc.ctx.get_help())
            sys.exit(exc.exit_code)
        except exceptions.ClickException as exc:
            from gradlab.render import print_error

            ctx = getattr(exc, "ctx", None)
            hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            print_error(exc.format_message().rstrip(".") + hint)
            sys.exit(exc.exit_code)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
    name="gradlab",
    help="Study what happens when you edit gradients during training.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_CODES = {"completed": 0, "failed": 1, "diverged": 3, "interrupted": 130}

ConfigArg = Annotated[
    Path, typer.Argument(help="Experiment config (YAML).", show_default=False, dir_okay=False)
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        metavar="KEY=VALUE",
        help="Override a config key, e.g. [bold]--set optim.lr=0.1[/]; the value is parsed as "
        "YAML. Repeatable.",
        show_default=False,
    ),
]


WidthOption = Annotated[
    int | None,
    typer.Option(
        help="Fit tables to N columns (default: the terminal's width; 100 on a pipe or in a "
        "file). At least 40.",
        show_default=False,
    ),
]


def _check_width(width: int | None) -> None:
    from gradlab.errors import GradlabError
    from gradlab.layout import MIN_WIDTH

    if width is not None and not MIN_WIDTH <= width <= 10_000:
        raise GradlabError(f"--width {width}: use a number of columns from {MIN_WIDTH} to 10000")


def _check_writable(path: Path | None, flag: str) -> None:
    """Refuse, before any work, an output that cannot be written: a folder, a missing or
    read-only folder to put it in."""
    import os

    from gradlab.errors import GradlabError

    if path is None:
        return
    if path.is_dir():
        raise GradlabError(f"{flag} {path}: is a folder; name a file")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise GradlabError(f"{flag} {path}: cannot write (no folder {parent})")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise GradlabError(f"{flag} {path}: cannot write (permission denied)")


def _names(text: str | None, flag: str) -> list[str] | None:
    """A comma-separated option as a list (None when not given; an error when empty)."""
    if text is None:
        return None
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        from gradlab.errors import GradlabError

        raise GradlabError(f"{flag} {text!r}: name at least one, separated by commas")
    return names


PathsArg = Annotated[
    list[Path],
    typer.Argument(help="Run folders, or folders that hold run folders.", show_default=False),
]

GroupOption = Annotated[
    bool | None,
    typer.Option(
        "--group/--no-group",
        help="One row per experiment: the mean over its seeds with std and confidence "
        "interval, n. "
        "Default: on when some configuration has several seeds.",
        show_default=False,
    ),
]

SortOption = Annotated[
    str,
    typer.Option("--sort-by", help="Column to sort by (loss ascending, others descending)."),
]

AscendingOption = Annotated[
    bool | None,
    typer.Option(
        "--ascending/--descending", help="Override the sort direction.", show_default=False
    ),
]

MetricsOption = Annotated[
    str | None,
    typer.Option(
        help="Comma-separated metrics to show instead of the default ones (the name, "
        "edits, differing config keys and status stay).",
        show_default=False,
    ),
]

ColumnsOption = Annotated[
    str | None,
    typer.Option(
        help="Comma-separated columns to show, in this order, after the row names: any "
        "column (metrics, config keys, edits, status, alerts.<kind>, steps_per_second).",
        show_default=False,
    ),
]

DropOption = Annotated[
    str | None,
    typer.Option(help="Comma-separated columns to leave out.", show_default=False),
]

OnlyChangedOption = Annotated[
    bool,
    typer.Option("--only-changed", help="Keep only the columns that differ between rows."),
]

BaselineOption = Annotated[
    str | None,
    typer.Option(
        help="The reference row: a name, a run folder, or selectors such as "
        "[bold]optim.lr=0.1[/] or [bold]edits=none[/] (comma-separated). Grouped, every other "
        "row is tested against it (delta with its interval, paired or Welch t-test, "
        "Holm-adjusted p).",
        show_default=False,
    ),
]

TestMetricOption = Annotated[
    str | None,
    typer.Option(
        "--test-metric",
        help="The metric compared with the baseline. Default: the --sort-by column.",
        show_default=False,
    ),
]

CiOption = Annotated[
    float,
    typer.Option("--ci", help="Level of the confidence intervals, between 0 and 1."),
]

SpreadOption = Annotated[
    str,
    typer.Option(
        help="What ± shows in the table and Markdown: ci (half-width of the interval) or std."
    ),
]

PowerOption = Annotated[
    bool,
    typer.Option(
        "--power",
        help="Show seeds_needed: seeds for 80% power at alpha 0.05 to detect each "
        "row's difference to the baseline.",
    ),
]

PanelsOption = Annotated[
    str | None,
    typer.Option(
        help="Comma-separated plot panels: train_loss, test_loss, test_accuracy, "
        "grad_norm, grad_norm_after, lr, edit_stats (fractions), edit_norms. Default: "
        "train_loss, test_accuracy, grad_norm, grad_norm_after.",
        show_default=False,
    ),
]


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn gradlab's user-facing errors into one line on stderr and their exit code."""
    from gradlab.errors import GradlabError

    try:
        yield
    except GradlabError as exc:
        from gradlab.render import print_error

        print_error(str(exc))
        raise typer.Exit(exc.exit_code) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gradlab {gradlab.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Study what happens when you edit gradients during training."""


def _overrides(sets: list[str] | None, **named: object) -> list[str]:
    overrides = list(sets or [])
    for key, value in named.items():
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")  # JSON is YAML: strings stay strings
    return overrides


@app.command()
def train(
    config: ConfigArg,
    set_: SetOption = None,
    runs_dir: Annotated[
        Path, typer.Option("--runs-dir", help="Where run folders are created.")
    ] = Path("runs"),
    name: Annotated[
        str | None, typer.Option(help="Run name (overrides `name`).", show_default=False)
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            help="auto, cpu, cuda, cuda:N or mps (overrides `train.device`).", show_default=False
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Random seed (overrides `seed`).", show_default=False)
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar; print only the run folder.")
    ] = False,
) -> None:
    """Train one experiment and write its run folder under [bold]runs/[/].

    Exit codes: 0 completed, 1 failed, 2 bad input, 3 diverged; interrupted: 130 (Ctrl-C),
    143 (SIGTERM), 129 (SIGHUP).
    """
    from gradlab.config import load_config

    with user_errors():
        cfg = load_config(
            config, _overrides(set_, name=name, seed=seed, **{"train.device": device})
        )
        from gradlab import render
        from gradlab.train import train as run_training

        if quiet:
            result = run_training(cfg, runs_dir, on_alert=render.print_alert)
            typer.echo(str(result.path))
        else:
            with render.TrainingProgress(cfg.name[:24]) as progress:
                result = run_training(
                    cfg, runs_dir, on_progress=progress, on_alert=render.print_alert
                )
            render.print_run_summary(result.path, result.summary)
    status = result.summary["status"]
    if status == "failed":
        from gradlab.render import print_error

        trace = result.path / "traceback.txt"
        where = f" (traceback in {trace})" if trace.exists() and trace.stat().st_size else ""
        print_error(f"the run failed: {result.summary.get('error')}{where}")
    if status == "interrupted":
        from gradlab.environment import signal_exit_code

        raise typer.Exit(signal_exit_code(result.summary.get("signal")))
    raise typer.Exit(EXIT_CODES[status])


@app.command()
def validate(config: ConfigArg, set_: SetOption = None) -> None:
    """Check a config and print it fully resolved (defaults filled in); creates nothing."""
    from gradlab.config import load_config

    with user_errors():
        cfg = load_config(config, _overrides(set_))
    typer.echo(cfg.to_yaml(), nl=False)


@app.command()
def compare(
    paths: PathsArg,
    group: GroupOption = None,
    sort_by: SortOption = "final_test_accuracy",
    ascending: AscendingOption = None,
    metrics: MetricsOption = None,
    columns: ColumnsOption = None,
    drop: DropOption = None,
    only_changed: OnlyChangedOption = False,
    baseline: BaselineOption = None,
    test_metric: TestMetricOption = None,
    ci: CiOption = 0.95,
    spread: SpreadOption = "ci",
    power: PowerOption = False,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="table, csv, markdown, latex or json.")
    ] = "table",
    width: WidthOption = None,
    transpose: Annotated[
        bool,
        typer.Option("--transpose", help="Table: one column per row, one line per column."),
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Write to this file instead of stdout.", show_default=False
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            help="Also write a figure (.png, .pdf or .svg): one line per row, a band over "
            "seeds, in the panels of --panels.",
            show_default=False,
        ),
    ] = None,
    panels: PanelsOption = None,
) -> None:
    """Compare runs: one row per run, or per experiment with its mean and confidence
    interval over seeds; tests against a baseline."""
    from gradlab import compare as cmp
    from gradlab import exports

    formats = ("table", "csv", "markdown", "latex", "json")
    with user_errors():
        if fmt not in formats:
            raise cmp.CompareError(f"--format {fmt!r}: use one of {', '.join(formats)}")
        _check_width(width)
        chosen_panels = _check_plot(plot, panels)
        _check_writable(output, "--output")
        _check_writable(plot, "--plot")
        runs, table = _comparison(
            paths, group, sort_by, ascending, metrics, columns, drop, only_changed,
            baseline, test_metric, ci, spread,
        )  # fmt: skip
        if fmt in ("csv", "json"):
            text = exports.export(table, fmt)
        elif fmt == "markdown":
            text = exports.to_markdown(table, spread, power)
        elif fmt == "latex":
            from gradlab.latex import to_latex

            text = to_latex(table, spread, power)
        else:
            text = _render_table(
                runs, table, spread, power, width, transpose, plain=output is not None
            )
        if text is not None:
            if output is None:
                typer.echo(text, nl=False)
            else:
                _write_atomically(output, text)
        if plot is not None:
            _write_plot(table, plot, chosen_panels)


def _comparison(
    paths, group, sort_by, ascending, metrics, columns, drop, only_changed, baseline,
    test_metric, ci, spread,
):  # fmt: skip
    """The runs and their comparison table from the options compare and report share."""
    from gradlab import compare as cmp

    if spread not in ("ci", "std"):
        raise cmp.CompareError(f"--spread {spread!r}: use ci or std")
    if not 0 < ci < 1:
        raise cmp.CompareError(
            f"--ci {ci}: the confidence level must be between 0 and 1, e.g. 0.95"
        )
    runs = _load_runs_or_fail(paths)
    table = cmp.comparison(
        runs,
        group,
        sort_by,
        ascending,
        _names(metrics, "--metrics"),
        baseline,
        test_metric=test_metric,
        ci=ci,
        columns=_names(columns, "--columns"),
        drop=_names(drop, "--drop"),
        only_changed=only_changed,
    )
    return runs, table


@app.command()
def report(
    paths: PathsArg,
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="The HTML file to write (self-contained).", dir_okay=False
        ),
    ] = Path("report.html"),
    title: Annotated[
        str | None, typer.Option(help="The report's title.", show_default=False)
    ] = None,
    group: GroupOption = None,
    sort_by: SortOption = "final_test_accuracy",
    ascending: AscendingOption = None,
    metrics: MetricsOption = None,
    columns: ColumnsOption = None,
    drop: DropOption = None,
    only_changed: OnlyChangedOption = False,
    baseline: BaselineOption = None,
    test_metric: TestMetricOption = None,
    ci: CiOption = 0.95,
    spread: SpreadOption = "ci",
    power: PowerOption = False,
    panels: PanelsOption = None,
) -> None:
    """Write a study report: one self-contained HTML file with the comparison and its
    statistics, the plots, each group's per-layer gradient health, configs and commands."""
    from gradlab.errors import GradlabError
    from gradlab.plots import check_panels
    from gradlab.report import write_report

    with user_errors():
        if output.suffix.lower() not in (".html", ".htm"):
            raise GradlabError(f"--output {output}: the report is HTML; name a .html file")
        _check_writable(output, "--output")
        chosen_panels = None if panels is None else check_panels(_names(panels, "--panels"))
        _, table = _comparison(
            paths, group, sort_by, ascending, metrics, columns, drop, only_changed,
            baseline, test_metric, ci, spread,
        )  # fmt: skip
        write_report(
            table,
            output,
            spread=spread,
            power=power,
            panels=chosen_panels,
            title=title,
            command=["gradlab", *sys.argv[1:]],
        )
    typer.echo(f"report written to {output}")


def _check_plot(plot: Path | None, panels: str | None) -> list[str] | None:
    """The panels asked for (checked), and the plot's suffix; errors name what is allowed."""
    from gradlab.compare import CompareError

    if panels is not None and plot is None:
        raise CompareError("--panels needs --plot (the file to draw them in)")
    if plot is None:
        return None
    from gradlab.plots import check_panels, check_plot_path

    check_plot_path(plot)
    return None if panels is None else check_panels(_names(panels, "--panels"))


def _write_plot(table, plot: Path, panels: list[str] | None) -> None:
    from gradlab import render
    from gradlab.compare import CompareError
    from gradlab.plots import plot_comparison

    try:
        plot_comparison(table, plot, panels=panels)
    except OSError as exc:
        raise CompareError(f"--plot {plot}: cannot write ({exc.strerror or exc})") from None
    render.err_console.print(f"plot written to {plot}", highlight=False, soft_wrap=True)


def _load_runs_or_fail(paths: list[Path]):
    """load_runs, with one warning line for the folders it skipped and one for duplicate runs;
    an error when none is left."""
    from gradlab import compare as cmp
    from gradlab import render

    runs = cmp.load_runs(paths)
    skipped = runs.attrs["skipped"]
    if skipped:
        more = f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        render.print_warning(f"skipped {len(skipped)}: " + "; ".join(skipped[:5]) + more)
    duplicates = runs.attrs["duplicates"]
    if duplicates:
        shown = "; ".join(f"{old} (repeats {new})" for old, new in duplicates[:3])
        more = f"; and {len(duplicates) - 3} more" if len(duplicates) > 3 else ""
        render.print_warning(
            f"{len(duplicates)} duplicate run{'s' if len(duplicates) > 1 else ''} not counted "
            f"(same experiment and seed as a newer completed run): {shown}{more}"
        )
    if runs.empty:
        raise cmp.CompareError("no readable run folders in " + ", ".join(str(p) for p in paths))
    return runs


def _render_table(
    runs,
    table,
    spread: str = "ci",
    power: bool = False,
    width: int | None = None,
    transposed: bool = False,
    plain: bool = False,
):
    """Print the comparison table fitted to the width (or, ``plain``, return its text)."""
    from gradlab import exports, layout, render

    headers, rows, constants = exports.display(table, spread, power)
    title = _plural(len(runs), "run") + (
        f" in {_plural(len(table), 'group')}" if table.attrs["grouped"] else ""
    )
    lines = layout.comparison_lines(
        headers,
        rows,
        constants,
        title,
        render.table_width(width),
        notes=exports.notes(table, spread, headers),
        marked=exports.significant(table),
        transposed=transposed,
        keys=exports.key_columns(headers, rows),
    )
    if plain:
        return render.lines_text(lines)
    render.print_lines(lines)
    return None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _print_comparison(paths: list[Path], width: int | None = None) -> None:
    """The default comparison table (seeds grouped when they repeat) of some runs."""
    from gradlab import compare as cmp

    runs = _load_runs_or_fail(paths)
    _render_table(runs, cmp.comparison(runs), width=width)


def _write_atomically(path: Path, text: str) -> None:
    """Write through a temporary file and a rename: an existing file is replaced whole or
    left as it was."""
    from gradlab.errors import GradlabError
    from gradlab.runlog import write_text_atomically

    try:
        write_text_atomically(path, text)
    except OSError as exc:
        raise GradlabError(f"--output {path}: cannot write ({exc.strerror or exc})") from None


@app.command()
def gradcheck(
    config: ConfigArg,
    set_: SetOption = None,
    samples: Annotated[int, typer.Option(min=1, help="Examples in the batch.")] = 8,
    eps: Annotated[float, typer.Option(help="Perturbation of each entry (> 0).")] = 1e-5,
    entries: Annotated[
        str, typer.Option(help="Random entries per parameter tensor, or 'all'.")
    ] = "all",
    inputs: Annotated[
        str, typer.Option(help="'dataset' (the first training examples) or 'random' pixels.")
    ] = "dataset",
    fmt: Annotated[str, typer.Option("--format", "-f", help="table or json.")] = "table",
) -> None:
    """Check the gradients of every engine against finite differences (float64).

    Relative error ||approx - g|| / (||approx|| + ||g||): <= 1e-5 good, ~1e-3 suspicious,
    larger wrong. Entries whose +-eps moves some ReLU input across 0 are kinks, counted and
    left out. Exit 0 when no parameter is suspicious or wrong (and some entry is not a
    kink), 1 otherwise.
    """
    from gradlab.config import load_config
    from gradlab.errors import GradlabError

    with user_errors():
        if fmt not in ("table", "json"):
            raise GradlabError(f"--format {fmt!r}: use table or json")
        if inputs not in ("dataset", "random"):
            raise GradlabError(f"--inputs {inputs!r}: use dataset or random")
        if not 1e-10 <= eps <= 0.1:  # nan and inf fail this too; smaller drowns in round-off
            raise GradlabError(
                f"--eps {eps}: must be a number greater than 0 and at most 0.1, "
                "at least 1e-10 (typically 1e-5)"
            )
        if entries != "all" and not (re.fullmatch(r"[0-9]{1,9}", entries) and int(entries) > 0):
            raise GradlabError(f"--entries {entries!r}: use a positive whole number or 'all'")
        if samples > 10_000:
            raise GradlabError(
                f"--samples {samples}: at most 10000 (the check is exact on a few examples)"
            )
        cfg = load_config(config, _overrides(set_))
        from gradlab import render
        from gradlab.gradcheck import gradcheck as run_gradcheck

        if fmt == "table":
            render.err_console.print(
                "checking gradients against finite differences ...", highlight=False
            )
        report = run_gradcheck(
            cfg, samples, eps, None if entries == "all" else int(entries), inputs
        )
    if fmt == "json":
        typer.echo(json.dumps(report, indent=2))
    else:
        render.print_gradcheck(report)
    raise typer.Exit(0 if report["passed"] else 1)


@app.command()
def inspect(
    run: Annotated[Path, typer.Argument(help="A run folder.", show_default=False)],
    plot: Annotated[
        Path | None,
        typer.Option(
            help="Write a figure (.png, .pdf or .svg) of per-layer gradient norms over time "
            "(log scale).",
            show_default=False,
        ),
    ] = None,
    width: WidthOption = None,
) -> None:
    """Gradient health of one run: per-layer statistics and the alerts that fired."""
    from gradlab import render
    from gradlab.compare import CompareError
    from gradlab.inspection import layer_table, load_alerts, load_grads, plot_layers

    with user_errors():
        _check_width(width)
        if plot is not None:
            from gradlab.plots import check_plot_path

            check_plot_path(plot)
            _check_writable(plot, "--plot")
        grads = load_grads(run)
        alerts = load_alerts(run)
        render.print_inspection(run, layer_table(grads), alerts, width)
        if plot is not None:
            try:
                plot_layers(grads, plot, title=run.name)
            except OSError as exc:
                raise CompareError(f"--plot {plot}: cannot write ({exc.strerror})") from None
            render.err_console.print(f"plot written to {plot}", highlight=False, soft_wrap=True)


@app.command()
def sweep(
    sweep_file: Annotated[
        Path, typer.Argument(help="Sweep file (YAML).", show_default=False, dir_okay=False)
    ],
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            "-s",
            metavar="KEY=VALUE",
            help="Override a config key in every run (over the file's set, entries and "
            "grid), e.g. [bold]--set optim.epochs=1[/]; parsed as YAML. Repeatable.",
            show_default=False,
        ),
    ] = None,
    grid: Annotated[
        list[str] | None,
        typer.Option(
            "--grid",
            "-g",
            metavar="KEY=V1,V2,...",
            help="Add a grid axis crossing every entry (or replace the file's axis of that "
            "key), e.g. [bold]--grid optim.lr=0.1,0.5[/]; each value parsed as YAML. "
            "Repeatable.",
            show_default=False,
        ),
    ] = None,
    seeds: Annotated[
        str | None,
        typer.Option(
            metavar="S1,S2,...",
            help="The seeds of every run, instead of the file's (and its entries'), e.g. "
            "[bold]--seeds 0[/] for a smoke run.",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print the runs (names, count, what varies); create nothing."
        ),
    ] = False,
    executor: Annotated[str, typer.Option(help="local (worker processes) or ray.")] = "local",
    jobs: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Runs at a time (local: worker processes). Default: the number of cores.",
            show_default=False,
        ),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster address: host:port, ray://host:port, auto (default: "
            "$RAY_ADDRESS when set, else start a local Ray).",
            show_default=False,
        ),
    ] = None,
    shared_dir: Annotated[
        bool | None,
        typer.Option(
            "--shared-dir/--no-shared-dir",
            help="Ray: the tasks write into the sweep folder, which every node must see "
            "(watch long runs as they write); --no-shared-dir: they train in a temporary "
            "folder and send the run folder back. Default: shared when the tasks can see it.",
            show_default=False,
        ),
    ] = None,
    runs_dir: Annotated[
        Path, typer.Option("--runs-dir", help="The sweep folder goes here.")
    ] = Path("runs"),
    rerun: Annotated[
        bool, typer.Option("--rerun", help="Train again runs that are already completed.")
    ] = False,
    max_runs: Annotated[
        int,
        typer.Option("--max-runs", min=1, help="Refuse sweeps that expand to more runs than this."),
    ] = 10_000,
    width: WidthOption = None,
) -> None:
    """Run a grid of experiments in parallel and print the grouped comparison.

    The sweep folder is [bold]<runs-dir>/<sweep name>/[/]: its run folders and sweep.json.
    Running a sweep again skips runs already completed (same experiment and seed). Exit
    codes: 0 all done, 1 some run failed, 2 bad input (or the sweep is already running);
    interrupted: 130 (Ctrl-C), 143 (SIGTERM), 129 (SIGHUP).
    """
    import os

    from gradlab import render
    from gradlab.errors import GradlabError
    from gradlab.sweep import describe, execute, load_sweep

    with user_errors():
        _check_width(width)
        if executor not in ("local", "ray"):
            raise GradlabError(f"--executor {executor!r}: use local or ray")
        if shared_dir is not None and executor != "ray":
            raise GradlabError("--shared-dir/--no-shared-dir apply to --executor ray only")
        if executor == "ray":
            import importlib.util

            if importlib.util.find_spec("ray") is None:
                raise GradlabError("--executor ray needs Ray: pip install 'gradlab[ray]'")
        spec = load_sweep(
            sweep_file, max_runs=max_runs, sets=set_ or [], grids=grid or [], seeds=seeds
        )
        if executor == "ray" and address and not dry_run:
            from gradlab.ray_executor import check_address

            check_address(address)  # before the sweep folder exists
        if dry_run:
            typer.echo(describe(spec, runs_dir / spec.name), nl=False)
            raise typer.Exit(0)
        import signal

        progress = render.SweepProgress(len(spec.runs))
        stopped_by: list[str] = []

        def stop(signum, frame) -> None:  # SIGTERM, SIGHUP: end the sweep like Ctrl-C
            if not stopped_by:
                stopped_by.append(signal.Signals(signum).name)
                raise KeyboardInterrupt

        handlers = {signal.SIGINT: signal.default_int_handler}  # even if inherited ignored
        handlers.update({s: stop for s in (signal.SIGTERM, signal.SIGHUP)})
        previous = {s: signal.signal(s, h) for s, h in handlers.items()}
        try:
            with progress:
                folder = execute(
                    spec,
                    runs_dir,
                    executor,
                    jobs or os.cpu_count(),
                    address,
                    rerun,
                    on_event=progress,
                    shared_dir=shared_dir,
                )
        except KeyboardInterrupt:
            stopped_by.append("SIGINT")
            folder = runs_dir / spec.name
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
    if spec.write_error:
        render.print_warning(spec.write_error)
    counts: dict[str, int] = {}
    for run in spec.runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    line = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    render.console.print(f"sweep {spec.name}: {line} -> {folder}", highlight=False, soft_wrap=True)
    if any(r.folder for r in spec.runs):
        with user_errors():
            _print_comparison([folder], width)
    failed = any(r.status not in ("done", "skipped", "interrupted") for r in spec.runs)
    if stopped_by:
        from gradlab.environment import signal_exit_code

        raise typer.Exit(signal_exit_code(stopped_by[0]))
    raise typer.Exit(1 if failed else 0)


@app.command()
def strategies() -> None:
    """List every gradient-editing strategy with its parameters, defaults and description."""
    from gradlab import render
    from gradlab.editing import EditParams, param_docs
    from gradlab.editing import strategies as registry

    rows = [
        {
            "family": cls.family,
            "name": name,
            "summary": cls.summary,
            "params": param_docs(cls.Params),
        }
        for name, cls in registry().items()
    ]
    render.print_strategies(rows, param_docs(EditParams, common=True))


def main() -> None:
    """Console-script entry point."""
    app(prog_name="gradlab")


if __name__ == "__main__":
    sys.exit(main())
