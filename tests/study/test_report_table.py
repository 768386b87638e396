"""The report's comparison table (gradlab.report.table), parsed as HTML: the cells of
exports.display row by row, the colour key, the classes of rows and cells, escaping, wide
tables and the notes under the table. (test_report.py checks a whole report end to end.)"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from test_study import fake_run

from gradlab.report.table import LONG_TEXT, PRINT_SIZES, WIDE, comparison_table
from gradlab.study import exports
from gradlab.study.compare import comparison

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c"]
HOSTILE_NAME = "<script>alert(1)</script>"
HOSTILE_RUN = "<img src=x onerror=alert(1)>"


class Table(HTMLParser):
    """The parts of the comparison section: the constants line, the table's attributes,
    header cells, body rows (class, cells as (class, text, span attributes)), the swatch
    colour and link of each row, and the notes."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.table: dict[str, str | None] = {}
        self.tables = 0
        self.headers: list[tuple[str, str]] = []  # (class, text)
        self.rows: list[dict] = []
        self.constants: list[str] = []
        self.notes: list[str] = []
        self._text: list[str] | None = None
        self._cell: dict | None = None
        self._in: str | None = None  # thead, tbody, constants, notes
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.table, self.tables = attrs, self.tables + 1
        elif tag in ("thead", "tbody"):
            self._in = tag
        elif tag == "p":
            self._in = "constants" if attrs.get("class") == "constants" else "notes"
            self._text = []
        elif tag == "tr" and self._in == "tbody":
            self.rows.append({"class": attrs.get("class"), "cells": []})
        elif tag in ("td", "th"):
            self._cell = {"class": attrs.get("class"), "span": None}
            self._text = []
        elif tag == "span" and self._cell is not None:
            if attrs.get("class") == "swatch":
                self.rows[-1]["swatch"] = attrs.get("style")
            elif self._cell["span"] is None:
                self._cell["span"] = attrs
        elif tag == "a" and self._in == "tbody":
            self.rows[-1]["href"] = attrs.get("href")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            text = "".join(self._text)
            if self._in == "thead":
                self.headers.append((self._cell["class"], text))
            else:
                self.rows[-1]["cells"].append((self._cell["class"], text, self._cell["span"]))
            self._cell = self._text = None
        elif tag == "p" and self._text is not None:
            (self.constants if self._in == "constants" else self.notes).append("".join(self._text))
            self._text, self._in = None, None
        elif tag in ("thead", "tbody"):
            self._in = None

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """base and clip (three seeds each, clip clearly better: significant), and fast (one
    seed at another learning rate)."""
    root = tmp_path_factory.mktemp("runs")
    for seed, value in enumerate([0.80, 0.82, 0.79]):
        fake_run(root, "base", seed, value)
    for seed, value in enumerate([0.90, 0.91, 0.92]):
        fake_run(
            root,
            "clip",
            seed,
            value,
            config={"edit": [{"type": "clip_norm", "max_norm": 0.25}]},
            meta={"edits": "clip_norm(0.25)"},
        )
    fake_run(root, "fast", 0, 0.5, config={"optim": {"lr": 0.5}})
    return root


@pytest.fixture(scope="module")
def table(study: Path) -> pd.DataFrame:
    return comparison([study], baseline="base")


def hand_built(columns: dict, **attrs) -> pd.DataFrame:
    out = pd.DataFrame(columns)
    out.attrs.update(attrs)
    return out


# --------------------------------------------------------------------------- a real table


def test_one_row_per_row_of_the_table_with_the_cells_compare_prints(table):
    headers, rows, _ = exports.display(table)
    parsed = Table(comparison_table(table, "ci", False, COLORS, table.attrs["baseline"]))
    assert parsed.tables == 1 and parsed.table["id"] == "comparison-table"
    assert [text for _, text in parsed.headers] == ["#", *headers]
    assert len(parsed.rows) == len(table) == 3
    assert [[text for _, text, _ in r["cells"][1:]] for r in parsed.rows] == rows
    assert [r["cells"][0][1] for r in parsed.rows] == ["1", "2 baseline", "3"]
    assert [r["href"] for r in parsed.rows] == ["#group-0", "#group-1", "#group-2"]
    assert [r["swatch"] for r in parsed.rows] == [f"border-color:{c}" for c in COLORS]


def test_the_baseline_is_tagged_and_significant_rows_are_marked(table):
    baseline = table.attrs["baseline"]
    marks = exports.significant(table)
    assert marks.count(True) == 1 and not marks[baseline]  # the fixture: clip beats base
    parsed = Table(comparison_table(table, "ci", False, COLORS, baseline))
    expected = [
        {"baseline"} if i == baseline else {"significant"} if mark else set()
        for i, mark in enumerate(marks)
    ]
    assert [set((r["class"] or "").split()) for r in parsed.rows] == expected
    html = comparison_table(table, "ci", False, COLORS, baseline)
    assert html.count('<span class="tag">baseline</span>') == 1


def test_without_a_baseline_no_row_is_tagged(table):
    html = comparison_table(table, "ci", False, COLORS, None)
    parsed = Table(html)
    assert 'class="tag"' not in html
    assert [r["cells"][0][1] for r in parsed.rows] == ["1", "2", "3"]
    # the bold-row note needs a baseline
    assert not any("bold rows" in line for line in parsed.notes)


def test_numbers_are_right_aligned_cells_and_text_wraps_in_a_span(table):
    headers, _, _ = exports.display(table)
    parsed = Table(comparison_table(table, "ci", False, COLORS, table.attrs["baseline"]))
    kinds = dict(zip(headers, (k for k, _ in parsed.headers[1:]), strict=True))
    assert kinds["name"] == "text stick"  # the column that names a row stays in view
    for header in ("edits", "seed", "test", "status"):
        assert kinds[header] == "text"
    for header in ("n", "optim.lr", "final_test_accuracy", "p_adjusted"):
        assert kinds[header] == "num"
    assert parsed.headers[0] == ("key", "#")
    for row in parsed.rows:
        assert row["cells"][0][0] == "key"
        for (kind, _, span), header_kind in zip(row["cells"][1:], kinds.values(), strict=True):
            assert kind == header_kind
            assert (span is not None) == kind.startswith("text")


def test_the_constants_and_the_notes_are_those_of_the_table(table):
    _, _, constants = exports.display(table)
    parsed = Table(comparison_table(table, "ci", False, COLORS, table.attrs["baseline"]))
    (line,) = parsed.constants
    assert line == " · ".join(f"{k}: {v}" for k, v in constants.items())
    assert parsed.notes == [
        *exports.notes(table, "ci"),
        "bold rows: significantly different from the baseline (p_adjusted < 0.05)",
    ]


def test_the_spread_and_power_reach_the_cells(table):
    for spread, power in (("std", False), ("ci", True)):
        headers, rows, _ = exports.display(table, spread, power)
        parsed = Table(comparison_table(table, spread, power, COLORS, None))
        assert [text for _, text in parsed.headers[1:]] == headers
        assert [[text for _, text, _ in r["cells"][1:]] for r in parsed.rows] == rows
    assert "seeds_needed" in headers
    assert Table(comparison_table(table, "std", False, COLORS, None)).notes[0] == (
        "± = standard deviation over seeds"
    )


# --------------------------------------------------------------------------- hand-built


def hostile_table(**attrs) -> pd.DataFrame:
    return hand_built(
        {
            "run": [HOSTILE_RUN, "r2"],
            "name": [HOSTILE_NAME, "a&b \"q\" 'x'"],
            "dataset": ["<i>d</i>", "<i>d</i>"],
            "optim.lr": [0.1, 0.5],
            "final_test_accuracy": [0.5, 0.25],
            "status": ["completed", "completed"],
        },
        **attrs,
    )


def test_every_cell_is_escaped_and_reads_back_as_written():
    table = hostile_table()
    html = comparison_table(table, "ci", False, COLORS[:2], None)
    assert "<script" not in html and "<img" not in html and "<i>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    parsed = Table(html)
    assert [text for _, text, _ in parsed.rows[0]["cells"][1:3]] == [HOSTILE_RUN, HOSTILE_NAME]
    assert parsed.rows[1]["cells"][2][1] == "a&b \"q\" 'x'"
    assert parsed.constants == ["dataset: <i>d</i>"]


def test_a_long_text_cell_has_its_whole_text_as_a_tooltip():
    long, short = "x" * (LONG_TEXT + 1), "y" * LONG_TEXT
    table = hand_built({"name": [long, short], "final_test_accuracy": [0.5, 0.25]})
    parsed = Table(comparison_table(table, "ci", False, COLORS[:2], None))
    assert parsed.rows[0]["cells"][1][2] == {"title": long}
    assert parsed.rows[1]["cells"][1][2] == {}
    assert len(HOSTILE_NAME) > LONG_TEXT  # and a hostile one is escaped in its title too
    parsed = Table(comparison_table(hostile_table(), "ci", False, COLORS[:2], None))
    assert parsed.rows[0]["cells"][2][2] == {"title": HOSTILE_NAME}


def test_headers_are_escaped_and_breakable_after_underscores_and_dots():
    table = hand_built({"name": ["a", "b"], "x<y>.z_w": [1.0, 2.0]})
    html = comparison_table(table, "ci", False, COLORS[:2], None)
    assert "<span>x&lt;y&gt;.<wbr>z_<wbr>w</span>" in html
    assert [text for _, text in Table(html).headers] == ["#", "name", "x<y>.z_w"]


def test_without_a_name_column_the_first_column_names_the_rows():
    table = hand_built({"run": ["r1", "r2"], "final_test_accuracy": [0.5, 0.25]})
    parsed = Table(comparison_table(table, "ci", False, COLORS[:2], None))
    assert parsed.headers[1:] == [("text stick", "run"), ("num", "final_test_accuracy")]


def test_true_and_false_are_text_not_numbers():
    table = hand_built({"name": ["a", "b"], "optim.nesterov": [True, False]})
    parsed = Table(comparison_table(table, "ci", False, COLORS[:2], None))
    assert parsed.headers[2] == ("text", "optim.nesterov")
    assert [r["cells"][2][1] for r in parsed.rows] == ["True", "False"]


@pytest.mark.parametrize(("columns", "wide"), [(WIDE, False), (WIDE + 1, True), (30, True)])
def test_a_table_of_many_columns_is_marked_wide(columns: int, wide: bool):
    table = hand_built(
        {"name": ["a", "b"], **{f"metric_{j}": [0.5 + j, 0.25] for j in range(columns - 1)}}
    )
    headers, _, _ = exports.display(table)
    assert len(headers) == columns
    parsed = Table(comparison_table(table, "ci", False, COLORS[:2], None))
    assert (parsed.table.get("class") == "wide") == wide
    assert len(parsed.headers) == columns + 1


@pytest.mark.parametrize(("columns", "size"), [(1, "7.5"), (20, "7.5"), (25, "6.3"), (40, "5.5")])
def test_the_printed_font_is_the_largest_at_which_the_cells_fit_a_page(columns: int, size: str):
    """Every metric cell is six characters (``0.5000``): 0.6 + 0.6 * 6 = 4.2 ems a column,
    the one-letter names 2.2 ems (an upright header), the ``#`` column 5 ems; 940 CSS px
    of a landscape page at 0.75 pt a px, kept within 5.5 and 7.5 pt. 25 columns: 705 /
    112.2 = 6.28 pt."""
    assert PRINT_SIZES == (5.5, 7.5)
    table = hand_built({"name": ["a", "b"], **{f"m{j}": [0.5, 0.25] for j in range(columns)}})
    _, rows, _ = exports.display(table)
    assert {len(cell) for cell in rows[0][1:] + rows[1][1:]} == {6}
    parsed = Table(comparison_table(table, "ci", False, COLORS[:2], None))
    assert parsed.table["style"] == f"--print-size: {size}pt"


def test_left_out_and_repeated_runs_are_listed_under_the_table():
    table = hostile_table(
        skipped=["broken<1> (summary.json: missing)", "other (no config)"],
        duplicates=[("runs/old-<a>", "runs/new-a"), ("runs/old-b", "runs/new-b")],
    )
    html = comparison_table(table, "ci", False, COLORS[:2], None)
    assert "broken<1>" not in html and "old-<a>" not in html
    assert Table(html).notes == [
        "left out (unreadable): broken<1> (summary.json: missing); other (no config)",
        "not counted (repeats a newer run): runs/old-<a>; runs/old-b",
    ]


def test_nothing_left_out_adds_no_note():
    table = hostile_table(skipped=[], duplicates=[])
    assert Table(comparison_table(table, "ci", False, COLORS[:2], None)).notes == []
