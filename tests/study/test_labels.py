"""Legend labels and colours of a comparison's rows (gradlab.study.labels) on hand-built
tables: which columns make a label, how values are written, the fallbacks that keep labels
distinct, and colours that follow the natural order of the labels, not the table's.

The label cases already in test_plots.py (names against parts, keys that end alike, the
unnamed row, the seeds of ungrouped runs) are not repeated here."""

from __future__ import annotations

import re

import matplotlib
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from gradlab.study.labels import row_colors, row_labels

# the reference: matplotlib's own tab10 colours and their light partners in tab20
TAB10 = [to_hex(c) for c in matplotlib.colormaps["tab10"].colors]
TAB10_LIGHT = [to_hex(c) for c in matplotlib.colormaps["tab20"].colors[1::2]]


def frame(columns: dict, **attrs) -> pd.DataFrame:
    table = pd.DataFrame(columns)
    table.attrs.update(attrs)
    return table


def reversed_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The same rows in the opposite order, their per-row attrs (paths) reversed with them."""
    out = table.iloc[::-1].reset_index(drop=True)
    out.attrs = dict(table.attrs)
    if "paths" in out.attrs:
        out.attrs["paths"] = out.attrs["paths"][::-1]
    return out


# --------------------------------------------------------------------------- labels


def test_an_empty_table_has_no_labels_and_no_colours():
    assert row_labels(pd.DataFrame()) == []
    assert row_colors(pd.DataFrame()) == []


def test_a_single_row_is_named_by_its_name_whatever_differs_elsewhere():
    assert row_labels(frame({"name": ["solo"], "optim.lr": [0.1], "edits": ["sign"]})) == ["solo"]
    assert row_labels(frame({"optim.lr": [0.1]})) == ["row 1"]  # no name: its position


def test_rows_without_names_or_differences_are_numbered():
    assert row_labels(frame({"name": [None, None], "optim.lr": [0.1, 0.1]})) == [
        "row 1",
        "row 2",
    ]


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (  # the settings first, then the edits label, whatever the column order
            {"name": ["r", "r"], "edits": ["none", "sign"], "optim.lr": [0.1, 0.5]},
            ["lr=0.1, no edits", "lr=0.5, sign"],
        ),
        (  # the dataset is a part of its own, written as it is, after the settings
            {"name": ["r", "r"], "dataset": ["mnist", "cifar10"], "model.hidden": [16, 32]},
            ["hidden=16, mnist", "hidden=32, cifar10"],
        ),
        (  # the resolved setup is part of the experiment
            {"name": ["r", "r"], "resolved.device": ["cpu", "cuda"]},
            ["device=cpu", "device=cuda"],
        ),
        (  # a whole section outside the experiment (diagnostics.*) is left out
            {"name": ["r", "r"], "diagnostics.every": [1, 4], "train.steps": [10, 20]},
            ["steps=10", "steps=20"],
        ),
        (  # metrics and bookkeeping never make a label
            {
                "name": ["r", "r"],
                "final_test_accuracy": [0.5, 0.6],
                "status": ["completed", "crashed"],
                "optim.lr": [0.1, 0.2],
            },
            ["lr=0.1", "lr=0.2"],
        ),
        (  # booleans in lower case, floats as %g
            {"name": ["r", "r"], "optim.nesterov": [True, False], "optim.lr": [1e-05, 0.0015]},
            ["nesterov=true, lr=1e-05", "nesterov=false, lr=0.0015"],
        ),
        (  # a missing value leaves its part out
            {"name": ["r", "r"], "optim.lr": [0.1, 0.2], "model.hidden": [16.0, float("nan")]},
            ["lr=0.1, hidden=16", "lr=0.2"],
        ),
    ],
)
def test_parts_name_what_differs_in_the_documented_order(columns: dict, expected: list[str]):
    assert row_labels(frame(columns)) == expected


def test_the_raw_edit_config_and_the_data_name_are_shown_by_other_columns():
    """``edit`` (the config list) and ``data.name`` never make a part: ``edits`` and
    ``dataset`` say them. Rows that differ only there fall back to their position."""
    table = frame({"name": ["r", "r"], "edit": ["[a]", "[b]"], "data.name": ["x", "y"]})
    assert row_labels(table) == ["r #1", "r #2"]


def test_a_long_value_is_cut_in_the_middle_to_26_and_12_characters():
    first, second = "a" * 20 + "x" * 9 + "1" * 12, "a" * 20 + "x" * 9 + "2" * 12
    assert len(first) == 41
    labels = row_labels(frame({"name": ["r", "r"], "edits": [first, second]}))
    assert labels == ["a" * 20 + "x" * 6 + "…" + "1" * 12, "a" * 20 + "x" * 6 + "…" + "2" * 12]
    forty = "b" * 39 + "1"  # 40 characters: kept whole
    assert row_labels(frame({"name": ["r", "r"], "edits": [forty, "c"]})) == [forty, "c"]


def test_equal_labels_get_the_run_folder_when_there_are_no_seeds():
    table = frame({"name": ["a", "a"], "run": ["a-1", "a-2"], "optim.lr": [0.1, 0.1]})
    assert row_labels(table) == ["a [a-1]", "a [a-2]"]


def test_equal_labels_of_a_grouped_table_get_their_seeds_then_the_number_of_seeds():
    table = frame(
        {"run": ["2 runs", "2 runs"], "name": ["a", "a"], "seed": ["0,1", "2,3"], "n": [2, 2]},
        grouped=True,
    )
    assert row_labels(table) == ["a, seeds 0,1 (n=2)", "a, seeds 2,3 (n=2)"]


def test_the_seeds_are_skipped_when_they_do_not_tell_the_rows_apart():
    table = frame(
        {"run": ["2 runs", "3 runs"], "name": ["a", "a"], "seed": ["0,1", "0,1"], "n": [2, 3]},
        grouped=True,
    )
    assert row_labels(table) == ["a [2 runs] (n=2)", "a [3 runs] (n=3)"]


def test_rows_that_nothing_tells_apart_are_numbered():
    assert row_labels(frame({"name": ["a", "a"]})) == ["a #1", "a #2"]


def test_a_group_without_a_count_gets_no_n():
    table = frame({"name": ["a", "a"], "n": [3.0, float("nan")], "optim.lr": [1, 2]})
    assert row_labels(table) == ["lr=1 (n=3)", "lr=2"]


@pytest.mark.parametrize(
    "columns",
    [
        {"name": ["a", "b", "a", "b"], "optim.lr": [0.1, 0.1, 0.2, 0.2]},
        {"name": ["x"] * 4, "seed": [0, 1, 0, 1], "optim.lr": [0.1, 0.1, 0.1, 0.1]},
        {"name": ["x"] * 3},
        {"name": ["x", None, "x"], "optim.lr": [0.1, 0.1, 0.1]},
        {"optim.lr": [0.1, 0.1, 0.5], "edits": ["none", "none", "none"]},
    ],
)
def test_distinct_rows_always_get_distinct_labels(columns: dict):
    labels = row_labels(frame(columns))
    assert len(labels) == len(next(iter(columns.values())))
    assert len(set(labels)) == len(labels), labels


# --------------------------------------------------------------------------- colours


def test_colours_go_to_the_labels_in_natural_order():
    """``lr=2`` comes before ``lr=10`` (numbers compared as numbers, 1e-05 too)."""
    table = frame({"optim.lr": [10.0, 2.0, 1e-05, 0.5]})
    assert row_labels(table) == ["lr=10", "lr=2", "lr=1e-05", "lr=0.5"]
    assert row_colors(table) == [TAB10[3], TAB10[2], TAB10[0], TAB10[1]]


def test_numbers_inside_names_sort_as_numbers():
    table = frame({"name": ["run-10", "run-9", "run-100", "alpha"]})
    assert row_colors(table) == [TAB10[2], TAB10[1], TAB10[3], TAB10[0]]


def test_a_row_keeps_its_colour_when_the_table_is_reordered():
    table = frame({"name": ["b", "c", "a", "d"], "optim.lr": [0.1, 0.5, 2.0, 0.01]})
    colours = dict(zip(row_labels(table), row_colors(table), strict=True))
    other = reversed_rows(table)
    assert dict(zip(row_labels(other), row_colors(other), strict=True)) == colours
    assert colours == {"a": TAB10[0], "b": TAB10[1], "c": TAB10[2], "d": TAB10[3]}


@pytest.mark.parametrize("n", [1, 10, 11, 20])
def test_up_to_twenty_rows_take_tab10_then_its_light_shades(n: int):
    table = frame({"name": [f"r{i:02d}" for i in range(n)]})  # in natural order already
    assert row_colors(table) == (TAB10 + TAB10_LIGHT)[:n]


@pytest.mark.parametrize("n", [21, 40])
def test_more_rows_take_distinct_evenly_spaced_hues(n: int):
    table = frame({"name": [f"r{i:02d}" for i in range(n)]})
    colours = row_colors(table)
    assert len(colours) == n and len(set(colours)) == n
    assert all(re.fullmatch("#[0-9a-f]{6}", c) for c in colours)
    assert colours[0] == "#e05252"  # hue 0 (red), the lighter of the two shades


def test_rows_told_apart_only_by_their_folders_keep_their_colours_when_reordered():
    """A grouped table whose differing column was dropped: same name, same seeds, same
    ``run`` text; only the run paths (``attrs['paths']``) tell the rows apart."""
    table = frame(
        {"run": ["2 runs", "2 runs"], "name": ["b", "b"], "seed": ["0,1", "0,1"], "n": [2, 2]},
        grouped=True,
        paths=[["runs/b-lr1-s0", "runs/b-lr1-s1"], ["runs/b-lr2-s0", "runs/b-lr2-s1"]],
    )
    other = reversed_rows(table)
    first = dict(zip(map(tuple, table.attrs["paths"]), row_colors(table), strict=True))
    second = dict(zip(map(tuple, other.attrs["paths"]), row_colors(other), strict=True))
    assert first == second
