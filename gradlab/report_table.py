"""The comparison table of a study report, in HTML: the cells of
:func:`gradlab.exports.display` (what ``gradlab compare`` prints), each row keyed by its
colour, significant rows in bold, the baseline tagged, and the table's notes under it.
"""

from __future__ import annotations

import pandas as pd

from gradlab import exports
from gradlab.report_page import esc, swatch

TEXT_COLUMNS = ("run", "name", "edits", "dataset", "status", "seed", "test")
WIDE = 12  # columns from which a printed comparison turns its headers upright


def comparison_table(
    table: pd.DataFrame, spread: str, power: bool, colors: list[str], baseline: int | None
) -> str:
    """The comparison section: the constant settings, the table (its ``#`` column keyed by
    each row's colour and linked to its section), and the notes under it.

    Args:
        table: from :func:`gradlab.compare.comparison`.
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
    head = "".join(f'<th scope="col"{_align(h)}><span>{_breakable(h)}</span></th>' for h in headers)
    body = []
    for i, (cells, mark) in enumerate(zip(rows, marks, strict=True)):
        classes = " ".join(
            c for c, on in (("significant", mark), ("baseline", i == baseline)) if on
        )
        tag = ' <span class="tag">baseline</span>' if i == baseline else ""
        key = f'<td><a href="#group-{i}">{swatch(colors[i])}{i + 1}</a>{tag}</td>'
        tds = "".join(f"<td{_align(h)}>{esc(c)}</td>" for h, c in zip(headers, cells, strict=True))
        body.append(f'<tr class="{classes}">{key}{tds}</tr>' if classes else f"<tr>{key}{tds}</tr>")
    wide = ' class="wide"' if len(headers) > WIDE else ""
    parts.append(
        f'<div class="scroll"><table id="comparison-table"{wide}>'
        f'<thead><tr><th scope="col">#</th>{head}</tr></thead>'
        f"<tbody>\n{chr(10).join(body)}\n</tbody></table></div>"
    )
    notes = exports.notes(table, spread)
    if baseline is not None:
        notes.append("bold rows: significantly different from the baseline (p_adjusted < 0.05)")
    for label, items in (
        ("left out (unreadable)", table.attrs.get("skipped") or []),
        ("not counted (repeats a newer run)", [a for a, _ in table.attrs.get("duplicates") or []]),
    ):
        if items:
            notes.append(f"{label}: " + "; ".join(str(i) for i in items))
    parts += [f'<p class="notes">{esc(line)}</p>' for line in notes]
    return "\n".join(parts)


def _align(header: str) -> str:
    return "" if header in TEXT_COLUMNS else ' class="num"'


def _breakable(header: str) -> str:
    """``header`` escaped, with a line-break opportunity after each ``_`` and ``.`` (a
    printed page wraps ``final_test_accuracy``; a screen scrolls the table instead)."""
    return esc(header).replace("_", "_<wbr>").replace(".", ".<wbr>")
