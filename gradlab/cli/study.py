"""The commands that read run folders: ``compare``, ``report``, ``inspect``."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from gradlab.cli.common import WidthOption, check_width, check_writable, names, user_errors
from gradlab.errors import CompareError, GradlabError

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


class Spread(str, Enum):
    ci = "ci"
    std = "std"


SpreadOption = Annotated[
    Spread,
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
        "grad_norm, grad_norm_after, lr, edit_stats (fractions), edit_norms, "
        "accuracy_vs_epsilon, dp_clipped_frac, dp_norm_median, noise_scale, diversity "
        "(the probes). Default: "
        "train_loss, test_accuracy, grad_norm, grad_norm_after (and accuracy_vs_epsilon "
        "when a run is private).",
        show_default=False,
    ),
]


class Format(str, Enum):
    table = "table"
    csv = "csv"
    markdown = "markdown"
    latex = "latex"
    json = "json"


PLOT_OPTIONS = {"path": "--plot", "out": "--plot"}
"""The plotting functions' path arguments are the --plot option."""


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
    spread: SpreadOption = Spread.ci,
    power: PowerOption = False,
    fmt: Annotated[
        Format, typer.Option("--format", "-f", help="table, csv, markdown, latex or json.")
    ] = Format.table,
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
    from gradlab.study.formats import DEFAULT_WIDTH, format_comparison

    with user_errors(PLOT_OPTIONS):
        check_width(width)
        chosen_panels = _check_plot(plot, panels)
        check_writable(output, "--output")
        check_writable(plot, "--plot")
        table = _comparison(
            paths, group, sort_by, ascending, metrics, columns, drop, only_changed,
            baseline, test_metric, ci,
        )  # fmt: skip
        if fmt is Format.table and output is None:
            _print_table(table, spread.value, power, width, transpose)
        else:
            text = format_comparison(
                table, fmt.value, spread.value, power, width or DEFAULT_WIDTH, transpose
            )
            if output is None:
                typer.echo(text, nl=False)
            else:
                _write_atomically(output, text)
        if plot is not None:
            _write_plot(table, plot, chosen_panels)


def _comparison(
    paths, group, sort_by, ascending, metrics, columns, drop, only_changed, baseline,
    test_metric, ci,
):  # fmt: skip
    """The comparison table from the options compare and report share."""
    from gradlab.study.compare import check_ci, comparison

    check_ci(ci)  # before reading any run folder
    return comparison(
        load_runs_or_fail(paths),
        group,
        sort_by,
        ascending,
        names(metrics, "--metrics"),
        baseline,
        test_metric=test_metric,
        ci=ci,
        columns=names(columns, "--columns"),
        drop=names(drop, "--drop"),
        only_changed=only_changed,
    )


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
    spread: SpreadOption = Spread.ci,
    power: PowerOption = False,
    panels: PanelsOption = None,
) -> None:
    """Write a study report: one self-contained HTML file with the comparison and its
    statistics, the plots, each group's per-layer gradient health, configs and commands."""
    from gradlab.report import write_report
    from gradlab.study.plots import check_panels

    with user_errors({"out": "--output"}):
        if output.suffix.lower() not in (".html", ".htm"):
            raise GradlabError(f"--output {output}: the report is HTML; name a .html file")
        check_writable(output, "--output")
        chosen_panels = None if panels is None else check_panels(names(panels, "--panels"))
        table = _comparison(
            paths, group, sort_by, ascending, metrics, columns, drop, only_changed,
            baseline, test_metric, ci,
        )  # fmt: skip
        write_report(
            table,
            output,
            spread=spread.value,
            power=power,
            panels=chosen_panels,
            title=title,
            command=["gradlab", *sys.argv[1:]],
        )
    typer.echo(f"report written to {output}")


def _check_plot(plot: Path | None, panels: str | None) -> list[str] | None:
    """The panels asked for (checked), and the plot's suffix; errors name what is allowed."""
    if panels is not None and plot is None:
        raise CompareError("--panels needs --plot (the file to draw them in)")
    if plot is None:
        return None
    from gradlab.study.figures import check_plot_path
    from gradlab.study.plots import check_panels

    check_plot_path(plot)
    return None if panels is None else check_panels(names(panels, "--panels"))


def _write_plot(table, plot: Path, panels: list[str] | None) -> None:
    from gradlab.cli import render
    from gradlab.study.plots import plot_comparison

    try:
        plot_comparison(table, plot, panels=panels)
    except OSError as exc:
        raise CompareError(f"--plot {plot}: cannot write ({exc.strerror or exc})") from None
    render.err_console.print(
        f"plot written to {render.user_text(plot)}", highlight=False, soft_wrap=True
    )


def load_runs_or_fail(paths: list[Path]):
    """load_runs, with one warning line for the folders it skipped, one for impossible
    summary values and one for duplicate runs; an error when none is left."""
    from gradlab.cli import render
    from gradlab.study.reading import load_runs

    runs = load_runs(paths)
    skipped = runs.attrs["skipped"]
    if skipped:
        more = f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        render.print_warning(f"skipped {len(skipped)}: " + "; ".join(skipped[:5]) + more)
    invalid = runs.attrs.get("invalid") or []
    if invalid:
        more = f"; and {len(invalid) - 5} more" if len(invalid) > 5 else ""
        render.print_warning(
            f"impossible values left empty in {len(invalid)} summar"
            f"{'ies' if len(invalid) > 1 else 'y'}: " + "; ".join(invalid[:5]) + more
        )
    duplicates = runs.attrs["duplicates"]
    if duplicates:
        shown = "; ".join(f"{old} (repeats {new})" for old, new in duplicates[:3])
        more = f"; and {len(duplicates) - 3} more" if len(duplicates) > 3 else ""
        render.print_warning(
            f"{len(duplicates)} duplicate run{'s' if len(duplicates) > 1 else ''} not counted "
            f"(same experiment and seed as a newer completed run): {shown}{more}"
        )
    if runs.empty:
        raise CompareError("no readable run folders in " + ", ".join(str(p) for p in paths))
    return runs


def _print_table(
    table, spread: str = "ci", power: bool = False, width: int | None = None, transposed=False
) -> None:
    """Print the comparison table fitted to the terminal (or ``width``), styled."""
    from gradlab.cli import render
    from gradlab.study.formats import table_lines

    render.print_lines(table_lines(table, spread, power, render.table_width(width), transposed))


def print_comparison(paths: list[Path], width: int | None = None) -> None:
    """The default comparison table (seeds grouped when they repeat) of some runs."""
    from gradlab.study.compare import comparison

    _print_table(comparison(load_runs_or_fail(paths)), width=width)


def _write_atomically(path: Path, text: str) -> None:
    """Write through a temporary file and a rename: an existing file is replaced whole or
    left as it was."""
    from gradlab.runlog import write_text_atomically

    try:
        write_text_atomically(path, text)
    except OSError as exc:
        raise GradlabError(f"--output {path}: cannot write ({exc.strerror or exc})") from None


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
    from gradlab.cli import render
    from gradlab.study.inspection import layer_table, load_alerts, load_grads, plot_layers

    with user_errors(PLOT_OPTIONS):
        check_width(width)
        if plot is not None:
            from gradlab.study.figures import check_plot_path

            check_plot_path(plot)
            check_writable(plot, "--plot")
        grads = load_grads(run)
        alerts = load_alerts(run)
        render.print_inspection(run, layer_table(grads), alerts, width)
        if plot is not None:
            try:
                plot_layers(grads, plot, title=run.name)
            except OSError as exc:
                raise CompareError(f"--plot {plot}: cannot write ({exc.strerror})") from None
            render.err_console.print(
                f"plot written to {render.user_text(plot)}", highlight=False, soft_wrap=True
            )
