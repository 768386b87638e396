"""Plain-text tables that fit a width, without ever breaking a number or a header.

When a table is wider than the width, in this order:

1. headers are shortened by :data:`ABBREVIATIONS` (``final_test_accuracy`` -> ``fin_test_acc``)
   and a config key loses its section (``optim.lr`` -> ``lr``) when that stays unique; a
   line under the table lists the shortenings used;
2. text cells (names, edit labels, status) are cut with ``…``, down to 10 characters; the
   columns that name the rows are never cut so far that two different names read the same
   (unless the names alone could not fit the width);
3. if that is not enough, the table is split into blocks of the same rows, each repeating
   the row names (up to a third of the width, or what keeps them apart) and holding the columns that fit (text cut
   at 24 characters).

Numbers are never cut; every line is at most the width (the CLI refuses widths below 40, so
that a name and the widest cell always fit). Pure Python: the terminal colours are added by
:mod:`gradlab.cli.render`.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

GAP = "  "
ELLIPSIS = "…"
MIN_TEXT = 10
MAX_TEXT_IN_BLOCKS = 24
MIN_KEY = 8
MIN_WIDTH = 40
# (long, short), applied in this order to a header that must shrink
ABBREVIATIONS = (
    ("steps_per_second", "steps/s"),
    ("delta.", "Δ"),
    ("accuracy", "acc"),
    ("final_", "fin_"),
    ("grad_norm", "gnorm"),
    ("changed", "chg"),
    ("p_adjusted", "p_adj"),
    ("p_value", "p"),
    ("seeds_needed", "seeds"),
    ("alerts.", "al."),
)
CONFIG_SECTIONS = ("data.", "model.", "optim.", "train.", "diagnostics.", "resolved.")
_NUMBER = re.compile(r"^[-+]?(\d[\d,]*(\.\d*)?([eE][-+]?\d+)?|inf|nan)$")


def is_numeric_cell(text: str) -> bool:
    """A number, ``-``, or a number with its ``± u``, ``[low, high]`` or ``*``."""
    head = text.split(" ± ")[0].split(" [")[0].removesuffix(" *")
    return head == "-" or bool(_NUMBER.match(head))


def shorten_header(header: str, others: list[str]) -> str:
    """``header`` by the rule of :data:`ABBREVIATIONS`; a config key without its section
    when no other header (``others``) ends the same way."""
    short = header
    for section in CONFIG_SECTIONS:
        rest = header.removeprefix(section)
        if rest != header and not any(o != header and o.endswith("." + rest) for o in others):
            short = rest
            break
    for long, abbreviation in ABBREVIATIONS:
        short = short.replace(long, abbreviation)
    return short


def cut(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, ``…`` in the middle when cut: names that
    share a long beginning still read differently (``study-clip…norm=0.25``)."""
    if len(text) <= width:
        return text
    if width < 2:
        return ELLIPSIS[:width]
    head = width // 2
    tail = width - 1 - head
    return text[:head] + ELLIPSIS + (text[-tail:] if tail else "")


@dataclass
class Line:
    """One line of output and how it is meant: ``header``, ``rule``, ``row`` (``bold``
    when marked), ``note`` or ``title``."""

    text: str
    kind: str = "row"
    bold: bool = False


def _widths(headers: list[str], rows: list[list[str]]) -> list[int]:
    return [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]


def _total(widths: list[int]) -> int:
    return sum(widths) + len(GAP) * (len(widths) - 1)


def _numeric_columns(headers: list[str], rows: list[list[str]]) -> list[bool]:
    return [bool(rows) and all(is_numeric_cell(r[i]) for r in rows) for i in range(len(headers))]


def fit_table(
    headers: list[str],
    rows: list[list[str]],
    width: int,
    marked: list[bool] | None = None,
    keys: int = 1,
    cut_headers: bool = False,
    right: bool = False,
    uncut_keys: bool = False,
) -> list[Line]:
    """The table as lines no wider than ``width`` (see the module's rule). The first
    ``keys`` columns name the rows and are repeated in every block; ``cut_headers`` allows
    headers to be cut like text cells and ``right`` aligns every other cell to the right
    (a transposed table's columns mix text and numbers); otherwise numbers go right and
    text left. ``uncut_keys``: the key columns are never cut (a transposed table's column
    names, already shortened)."""
    headers, rows = list(headers), [list(r) for r in rows]
    marked = marked or [False] * len(rows)
    numeric = _numeric_columns(headers, rows)
    shortened: dict[str, str] = {}
    widths = _widths(headers, rows)
    if _total(widths) > width and not cut_headers:
        for i, header in enumerate(headers):
            short = shorten_header(header, headers)
            if short != header:
                shortened[header] = short
                headers[i] = short
        widths = _widths(headers, rows)

    # numbers are never cut, in a column of text either (a transposed table mixes them)
    longest_number = [
        max([0, *(len(r[i]) for r in rows if is_numeric_cell(r[i]))]) for i in range(len(headers))
    ]

    apart: dict[tuple[int, int], int] = {}

    def floor(i: int, key_floor: int = MIN_TEXT, distinct: bool = True) -> int:
        if numeric[i] or (uncut_keys and i < keys):
            return widths[i]
        lowest = key_floor if i < keys else MIN_TEXT
        lowest = max(lowest, longest_number[i], 0 if cut_headers else len(headers[i]))
        if i >= keys or not distinct:
            return lowest
        if (i, lowest) not in apart:  # a key column: no narrower than its names stay apart
            apart[i, lowest] = _distinct_width([r[i] for r in rows], lowest)
        return apart[i, lowest]

    def shrink(
        columns: list[int], limit: int, key_floor: int = MIN_TEXT, give_way: bool = False
    ) -> None:
        # give_way (the names and one column): names too long to stay apart are cut anyway
        for distinct in (True, False) if give_way else (True,):
            while _total([widths[i] for i in columns]) > limit:
                candidates = [i for i in columns if widths[i] > floor(i, key_floor, distinct)]
                if not candidates:
                    break
                widest = max(candidates, key=lambda i: widths[i])
                widths[widest] -= 1

    everything = list(range(len(headers)))
    shrink(everything, width)
    blocks = [everything]
    if _total(widths) > width:
        # blocks: the names stay readable (up to a third of the width), other text up to 24
        natural = _widths(headers, rows)
        for i in everything:
            if not numeric[i]:
                cap = max(MIN_KEY, width // 3) if i < keys else MAX_TEXT_IN_BLOCKS
                widths[i] = max(floor(i), min(natural[i], cap))
        if uncut_keys:  # the other columns share what the names leave
            room = width - _total([widths[i] for i in everything[:keys]]) - len(GAP)
            for i in everything[keys:]:
                widths[i] = max(floor(i), min(natural[i], max(MIN_TEXT, room)))
        key_columns = everything[:keys]
        rest = everything[keys:]
        blocks = []
        while rest:
            block = [*key_columns, rest.pop(0)]
            shrink(block, width, MIN_KEY, give_way=True)  # a lone wide column: the names give way
            while rest and _total([widths[i] for i in [*block, rest[0]]]) <= width:
                block.append(rest.pop(0))
            blocks.append(block)

    lines: list[Line] = []
    for b, block in enumerate(blocks):
        if b:
            lines.append(Line("", "blank"))
        head = GAP.join(
            _pad(cut(headers[i], widths[i]), widths[i], numeric[i] or (right and i >= keys))
            for i in block
        ).rstrip()
        lines.append(Line(head, "header"))
        lines.append(Line("─" * len(head), "rule"))
        for row, bold in zip(rows, marked, strict=True):
            text = GAP.join(
                _pad(
                    cut(row[i], widths[i]),
                    widths[i],
                    (right and i >= keys) or is_numeric_cell(row[i]),
                )
                for i in block
            )
            lines.append(Line(text.rstrip(), "row", bold))
    if shortened:
        used = _used_abbreviations(shortened)
        lines.append(Line("", "blank"))
        lines += [Line(t, "note") for t in wrap("shortened headers: " + used, width)]
    return lines


def _distinct_width(texts: list[str], lowest: int) -> int:
    """The smallest width, at least ``lowest``, at which the :func:`cut` texts read as
    differently as the texts themselves."""
    wanted = len(set(texts))
    width = lowest
    while len({cut(t, width) for t in texts}) < wanted:
        width += 1
    return width


def _used_abbreviations(shortened: dict[str, str]) -> str:
    used = []
    for long, short in ABBREVIATIONS:
        if any(long in header for header in shortened):
            used.append(f"{short} = {long}")
    if any(h.startswith(CONFIG_SECTIONS) for h in shortened):
        used.append("config keys without their section")
    return ", ".join(used)


def _pad(text: str, width: int, right: bool) -> str:
    return text.rjust(width) if right else text.ljust(width)


def transpose(
    headers: list[str], rows: list[list[str]], keys: int = 1
) -> tuple[list[str], list[list[str]]]:
    """One row per column and one column per row, headed by the rows' names."""
    names = [" ".join(r[:keys]) for r in rows]
    return ["", *names], [[h, *(r[i] for r in rows)] for i, h in enumerate(headers) if i >= keys]


def wrap(text: str, width: int) -> list[str]:
    """Prose wrapped at spaces (a word longer than the width is split)."""
    return textwrap.wrap(text, width, break_on_hyphens=False) or [""]


def wrap_items(items: list[str], width: int, sep: str = "   ") -> list[str]:
    """``items`` (each kept whole, or cut with ``…`` when longer than a line) joined by
    ``sep`` into lines of at most ``width``."""
    lines: list[str] = []
    for item in (cut(i, width) for i in items):
        if lines and len(lines[-1]) + len(sep) + len(item) <= width:
            lines[-1] += sep + item
        else:
            lines.append(item)
    return lines


def comparison_lines(
    headers: list[str],
    rows: list[list[str]],
    constants: dict[str, str],
    title: str,
    width: int,
    notes: list[str] | tuple[str, ...] = (),
    marked: list[bool] | None = None,
    transposed: bool = False,
    keys: int = 1,
) -> list[Line]:
    """The comparison as it is printed: the title, the constant columns, the table (fitted,
    or transposed), then the notes; no line wider than ``width``. The first ``keys``
    columns name the rows (repeated in every block)."""
    lines = [Line(t, "title") for t in wrap(title, width)]
    items = [f"{k}: {v}" for k, v in constants.items()]
    lines += [Line(t, "constants") for t in wrap_items(items, width)]
    if transposed:
        t_headers, t_rows = transpose(headers, rows, keys)
        shortened = {}
        if _total(_widths(t_headers, t_rows)) > width:  # the column names, by the rule
            names = [r[0] for r in t_rows]
            for r in t_rows:
                short = shorten_header(r[0], names)
                if short != r[0]:
                    shortened[r[0]] = r[0] = short
        lines += fit_table(t_headers, t_rows, width, cut_headers=True, right=True, uncut_keys=True)
        if shortened:
            lines.append(Line("", "blank"))
            used = _used_abbreviations(shortened)
            lines += [Line(t, "note") for t in wrap("shortened names: " + used, width)]
    else:
        lines += fit_table(headers, rows, width, marked, keys=keys)
    if notes and lines[-1].kind != "note":
        lines.append(Line("", "blank"))
    for note in notes:
        lines += [Line(t, "note") for t in wrap(note, width)]
    return lines


def lines_text(lines: list[Line]) -> str:
    """The lines as plain text, one per line (what ``gradlab compare -o FILE`` writes)."""
    return "".join(line.text + "\n" for line in lines)
