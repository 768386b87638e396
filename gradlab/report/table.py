"""The comparison table of a study report, in HTML: the cells of
:func:`gradlab.study.exports.display` (what ``gradlab compare`` prints), each row keyed by its
colour, significant rows in bold, the baseline tagged, and the table's notes under it.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from gradlab.report.page import esc, swatch
from gradlab.study import exports

TEXT_COLUMNS = ("run", "name", "edits", "dataset", "status", "seed", "test")
WIDE = 12  # columns from which a printed comparison turns its headers upright
PRINT_WIDTH = 940  # CSS px of a landscape Letter page (A4 is wider) less its margins, a spare
PRINT_SIZES = (5.5, 7.5)  # points: the printed comparison's smallest and largest font
LONG_TEXT = 24  # a text cell longer than this (it may wrap) has its whole text as a tooltip


def comparison_table(
    table: pd.DataFrame, spread: str, power: bool, colors: list[str], baseline: int | None
) -> str:
    """The comparison section: the constant settings, the table (its ``#`` column keyed by
    each row's colour and linked to its section), and the notes under it.

    Args:
        table: from :func:`gradlab.study.compare.comparison`.
        spread: ``ci`` or ``std``; power: show ``seeds_needed`` (as in ``gradlab compare``).
        colors: one per row (``#rrggbb``).
        baseline: the baseline row's index, or None.
    """
    headers, rows, constants = exports.display(table, spread, power)
    marks = exports.significant(table)
    parts = []
    if constants:
        items = (f"<span><b>{esc(k)}:</b> {esc(v)}</span>" for k, v in constants.items())
        parts.append(f'<p class="constants">{" · ".join(items)}</p>')
    kinds = [_kind(table, h) for h in headers]
    stick = headers.index("name") if "name" in headers else 0  # the column that names a row
    kinds[stick] += " stick"
    head = "".join(
        f'<th scope="col" class="{k}"><span>{_breakable(h)}</span></th>'
        for h, k in zip(headers, kinds, strict=True)
    )
    body = []
    for i, (cells, mark) in enumerate(zip(rows, marks, strict=True)):
        classes = " ".join(
            c for c, on in (("significant", mark), ("baseline", i == baseline)) if on
        )
        tag = ' <span class="tag">baseline</span>' if i == baseline else ""
        key = f'<td class="key"><a href="#group-{i}">{swatch(colors[i])}{i + 1}</a>{tag}</td>'
        tds = "".join(_cell(c, k) for c, k in zip(cells, kinds, strict=True))
        body.append(f'<tr class="{classes}">{key}{tds}</tr>' if classes else f"<tr>{key}{tds}</tr>")
    wide = ' class="wide"' if len(headers) > WIDE else ""
    size = f' style="--print-size: {_print_size(rows, kinds):.2g}pt"'
    parts.append(
        f'<div class="scroll"><table id="comparison-table"{wide}{size}>'
        f'<thead><tr><th scope="col" class="key">#</th>{head}</tr></thead>'
        f"<tbody>\n{chr(10).join(body)}\n</tbody></table></div>"
    )
    notes = exports.notes(table, spread)
    if baseline is not None:
        notes.append("bold rows: significantly different from the baseline (p_adjusted < 0.05)")
    left_out: list[tuple[str, list[Any]]] = [
        ("left out (unreadable)", list(table.attrs.get("skipped") or [])),
        ("not counted (repeats a newer run)", [a for a, _ in table.attrs.get("duplicates") or []]),
    ]
    for label, paths in left_out:
        if paths:
            notes.append(f"{label}: " + "; ".join(str(p) for p in paths))
    parts += [f'<p class="notes">{esc(line)}</p>' for line in notes]
    return "\n".join(parts)


def _print_size(rows: list[list[str]], kinds: list[str]) -> float:
    """The printed table's font size (points): the largest, up to :data:`PRINT_SIZES`' top,
    at which its cells fit :data:`PRINT_WIDTH` (numbers on one line, text cells wrapped
    at their spaces and hyphens), down to its bottom (then the table scrolls off the page)."""
    ems = 5.0  # the # column: its number, or the baseline tag under it
    for j, kind in enumerate(kinds):
        texts = [row[j] for row in rows] or [""]
        if kind.startswith("num"):
            chars = max(len(t) for t in texts)
        else:  # a text cell wraps, but its longest word stays whole
            words = [w for t in texts for w in re.split(r"(?<=-)|\s+", t)]
            chars = max(max(len(w) for w in words), min(max(len(t) for t in texts), 8))
        ems += max(2.2, 0.6 + 0.6 * chars)  # an upright header is about 2 ems wide
    low, high = PRINT_SIZES
    return max(low, min(high, PRINT_WIDTH / ems * 0.75))  # CSS px -> pt


def _kind(table: pd.DataFrame, header: str) -> str:
    """``num`` for a column of numbers (right-aligned, never wrapped: ``0.301 ± 0.030`` stays
    on one line), else ``text`` (names, edit labels, settings written as words: they wrap
    instead of widening the table)."""
    if header in TEXT_COLUMNS or header not in table.columns:
        return "text"
    column = table[header]
    numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
    return "num" if numeric else "text"


def _cell(text: str, kind: str) -> str:
    """A body cell; a text cell's words in a block of bounded width (a table cell's own
    ``max-width`` is ignored by browsers), a long text also its tooltip."""
    if kind.startswith("num"):
        return f'<td class="{kind}">{esc(text)}</td>'
    title = f' title="{esc(text)}"' if len(text) > LONG_TEXT else ""
    return f'<td class="{kind}"><span{title}>{esc(text)}</span></td>'


def _breakable(header: str) -> str:
    """``header`` escaped, with a line-break opportunity after each ``_`` and ``.`` (a
    printed page wraps ``final_test_accuracy``; a screen scrolls the table instead)."""
    return esc(header).replace("_", "_<wbr>").replace(".", ".<wbr>")
