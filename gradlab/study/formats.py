"""The comparison table as text, in every format ``gradlab compare --format`` writes: the
fitted plain-text table, CSV, Markdown, LaTeX and JSON."""

from __future__ import annotations

import pandas as pd

from gradlab.errors import CompareError
from gradlab.study import exports
from gradlab.study.latex import to_latex
from gradlab.study.layout import MIN_WIDTH, Line, comparison_lines, lines_text

FORMATS = ("table", "csv", "markdown", "latex", "json")
"""What :func:`format_comparison` writes."""
SPREADS = ("ci", "std")
"""What ± shows: the half-width of the confidence interval, or the standard deviation."""
DEFAULT_WIDTH = 100
"""The plain-text table's width when none is given (the CLI's on a pipe or in a file)."""


def check_spread(spread: str) -> str:
    """``spread`` when it is one of :data:`SPREADS`; else a CompareError naming them."""
    if spread not in SPREADS:
        raise CompareError(f"spread {spread!r}: use ci or std", argument="spread")
    return spread


def table_lines(
    table: pd.DataFrame,
    spread: str = "ci",
    power: bool = False,
    width: int = DEFAULT_WIDTH,
    transposed: bool = False,
) -> list[Line]:
    """The table as ``gradlab compare`` prints it, line by line (each with its kind, for
    styling): the title (runs and groups), the constant columns, the table fitted to
    ``width`` columns (or ``transposed``: one column per row), the notes.

    Raises:
        CompareError: a ``spread`` other than ci or std, a ``width`` below 40.
    """
    check_spread(spread)
    if not (isinstance(width, int) and width >= MIN_WIDTH):
        raise CompareError(
            f"width {width}: use a number of columns from {MIN_WIDTH}", argument="width"
        )
    headers, rows, constants = exports.display(table, spread, power)
    runs = table.attrs.get("runs", len(table))
    title = _plural(runs, "run") + (
        f" in {_plural(len(table), 'group')}" if table.attrs.get("grouped") else ""
    )
    return comparison_lines(
        headers,
        rows,
        constants,
        title,
        width,
        notes=exports.notes(table, spread, headers),
        marked=exports.significant(table),
        transposed=transposed,
        keys=exports.key_columns(headers, rows),
    )


def format_comparison(
    table: pd.DataFrame,
    fmt: str = "table",
    spread: str = "ci",
    power: bool = False,
    width: int = DEFAULT_WIDTH,
    transposed: bool = False,
) -> str:
    """The comparison table (from :func:`gradlab.study.compare.comparison`) as text.

    Args:
        fmt: ``table`` (plain text fitted to ``width``, ``transposed`` on request),
            ``csv`` and ``json`` (every column, full precision), ``markdown`` or ``latex``
            (the cells of the table: each number at the precision its uncertainty calls for).
        spread: what ± shows: ``ci`` (the interval's half-width) or ``std``.
        power: also show ``seeds_needed``.

    Raises:
        CompareError: an unknown ``fmt`` or ``spread``, a ``width`` below 40.
    """
    if fmt not in FORMATS:
        raise CompareError(f"fmt {fmt!r}: use one of {', '.join(FORMATS)}", argument="fmt")
    check_spread(spread)
    if fmt in ("csv", "json"):
        return exports.export(table, fmt)
    if fmt == "markdown":
        return exports.to_markdown(table, spread, power)
    if fmt == "latex":
        return to_latex(table, spread, power)
    return lines_text(table_lines(table, spread, power, width, transposed))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
