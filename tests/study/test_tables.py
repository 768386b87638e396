"""Readable and publishable tables: precision that follows the uncertainty, a table that
fits any width without breaking a number, column choices, LaTeX, and inspect's numbers."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from test_study import fake_run
from typer.testing import CliRunner

from gradlab.cli import app
from gradlab.study import layout, numbers
from gradlab.study.compare import comparison
from gradlab.study.exports import display
from gradlab.study.exports import key_columns as exports_key_columns
from gradlab.study.latex import escape, to_latex

runner = CliRunner()
NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
EDITS = [
    [],
    [{"type": "clip_norm", "max_norm": 0.25}],
    [{"type": "clip_value", "value": 0.05}],
    [{"type": "mask", "p": 0.5, "params": ["fc2.bias"]}],
    [{"type": "noise", "sigma": 0.1, "params": ["fc1.weight", "fc2.weight"]}],
]


@pytest.fixture(scope="module")
def ten_groups(tmp_path_factory) -> Path:
    """10 experiments (5 edits x 2 learning rates) x 3 seeds, with long edit labels and
    numbers of every size: accuracies, losses, tiny gradient norms, counts."""
    root = tmp_path_factory.mktemp("ten")
    for g in range(10):
        edit, lr = EDITS[g % 5], (0.1, 0.5)[g // 5]
        for seed in range(3):
            run = fake_run(
                root,
                f"group-{g}",
                seed,
                0.8 + 0.01 * g + 0.003 * seed * (g % 3),
                config={"edit": edit, "optim": {"lr": lr}},
                meta={"edits": f"edit-label-{g}-" + "x" * (5 * g)},
                loss=0.5 - 0.02 * g + 0.011 * seed,
                alerts={"vanishing": seed, "exploding": 0, "dead_relu": g},
            )
            summary = json.loads((run / "summary.json").read_text())
            summary["grad_norm_mean"] = 2.4e-5 * (1 + g) * (1 + 0.1 * seed)
            summary["steps_per_second"] = 500.0 + 100 * seed
            (run / "summary.json").write_text(json.dumps(summary))
    return root


# ------------------------------------------------------------------- precision


@pytest.mark.parametrize(
    ("u", "decimals"),
    [(0.0191, 3), (0.05, 2), (0.0108, 3), (0.35, 1), (2.6, 1), (4.2, 0), (263, -1), (0.001, 4)],
)
def test_uncertainty_digits_keep_one_or_two_significant_digits(u, decimals):
    # two significant digits when the first is 1 or 2, else one
    assert numbers.uncertainty_digits(u) == decimals
    digits = 2 if f"{u:e}"[0] in "12" else 1
    assert 10 ** (digits - 1) <= round(u * 10**decimals) < 10**digits


def test_a_column_takes_the_finest_precision_its_rows_need_up_to_four_digits():
    # the example: 0.8622 ± 0.01733 beside 0.8339 ± 0.0108 -> one precision
    fmt = numbers.column_format([0.8622, 0.8339], [0.01733, 0.0108])
    assert fmt.decimals == 3 and [fmt(0.8622), fmt(0.01733)] == ["0.862", "0.017"]
    # a tiny spread never asks for more than 4 significant digits
    assert numbers.column_format([0.81234567], [1e-9]).decimals == 4
    assert numbers.column_format([2.3456], []).decimals == 3  # no spread: 4 digits
    assert numbers.column_format([400.0, 12.0], []).decimals == 0  # whole numbers
    tiny = numbers.column_format([2.4e-5, 2.64e-5], [])
    assert tiny.scientific and tiny(-2.415e-05) == "-2.415e-05"
    signed = numbers.column_format([0.001], [0.5], sign=True)
    assert signed(0.001) == "+0.0" and signed(-0.001) == "-0.0"  # a bound below 0 says so
    # a column spanning three orders of magnitude: scientific, so the small values keep
    # their digits (not "1 ± 0" beside 19498)
    wide = numbers.column_format([0.720, 19498.0], [0.027, 33927.0])
    assert wide.scientific and wide(0.720) == "7.20e-01" and wide.uncertainty(0.027) == "2.7e-02"
    assert wide.uncertainty(33927.0) == "3e+04"


def test_cells_of_a_grouped_table_follow_their_uncertainty(ten_groups: Path):
    table = comparison([ten_groups])
    headers, rows, _ = display(table)
    column = headers.index("final_train_loss")
    cells = [r[column] for r in rows]
    decimals = {len(c.split(" ± ")[0].split(".")[1]) for c in cells}
    assert len(decimals) == 1  # the same in every row
    half = (table["final_train_loss.ci_high"] - table["final_train_loss.ci_low"]) / 2
    expected = max(numbers.uncertainty_digits(h) for h in half if h > 0)
    assert decimals == {expected}
    for cell, mean, h in zip(cells, table["final_train_loss"], half, strict=True):
        text_mean, text_h = (float(x) for x in cell.split(" ± "))
        assert abs(text_mean - mean) <= 0.5 * 10**-expected + 1e-12
        assert abs(text_h - h) <= 0.5 * 10**-expected + 1e-12


# ------------------------------------------------------------------- fitting


def _blocks(text: str) -> list[list[str]]:
    """The table's blocks: lines from a header to the next blank line."""
    blocks, current = [], None
    for line in text.splitlines():
        if line.startswith("name") and current is None:
            current = [line]
        elif current is not None and line.strip() == "":
            blocks.append(current)
            current = None
        elif current is not None:
            current.append(line)
    if current:
        blocks.append(current)
    return blocks


def _decimals(token: str) -> int:
    mantissa = token.split("e")[0]
    return len(mantissa.split(".")[1]) if "." in mantissa else 0


def _shown(token: str, value: float) -> bool:
    """``token`` is ``value`` rounded to the digits the token has."""
    exponent = int(token.split("e")[1]) if "e" in token else 0
    return abs(float(token) - value) <= 0.5 * 10 ** (exponent - _decimals(token)) * 1.0001


@pytest.mark.parametrize("width", [60, 80, 120, 200])
def test_table_fits_every_width_and_keeps_every_number_whole(ten_groups: Path, width: int):
    args = ["compare", str(ten_groups), "--baseline", "group-0", "--width", str(width)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert max(len(line) for line in text.splitlines()) <= width
    records = json.loads(runner.invoke(app, [*args, "--format", "json"]).stdout)
    table = comparison([ten_groups], baseline="group-0")
    headers, _, constants = display(table)
    blocks = _blocks(text)
    assert blocks and sum(len(b) - 2 for b in blocks) == 10 * len(blocks)  # 10 rows each
    for i, record in enumerate(records):
        # the row's lines: one per block, found by position (names may be cut with …)
        lines = [block[2 + i] for block in blocks]
        assert all(line.startswith(record["name"][:8]) for line in lines)
        tokens = [t for line in lines for t in NUMBER.findall(line.split("  ", 1)[1])]
        for column in headers:
            value = record.get(column)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if column == "seed" or column in constants:
                continue
            assert any(_shown(t, value) for t in tokens), (column, value, lines)
            if f"{column}.ci_low" in record and record[f"{column}.ci_low"] is not None:
                h = (record[f"{column}.ci_high"] - record[f"{column}.ci_low"]) / 2
                bounds = [record[f"{column}.ci_low"], record[f"{column}.ci_high"]]
                if column.startswith("delta."):
                    assert all(any(_shown(t, b) for t in tokens) for b in bounds), column
                else:
                    assert any(_shown(t, h) for t in tokens), (column, h, lines)


def test_a_table_of_many_columns_is_split_into_blocks_of_whole_numbers():
    rng = [(f"r{i}", f"{(i + 1) * -1.2345e-5:.4g}", f"label-{'y' * 40}") for i in range(3)]
    headers = ["name", *(f"metric_number_{k}" for k in range(12)), "edits"]
    rows = [[n, *([v] * 12), e] for n, v, e in rng]
    lines = layout.fit_table(headers, rows, 60)
    assert max(len(line.text) for line in lines) <= 60
    text = "\n".join(line.text for line in lines)
    for _, value, _ in rng:
        assert text.count(value) == 12  # each value whole, in every one of its cells
    assert "…" in text  # the long label was cut instead
    assert sum(line.kind == "header" for line in lines) > 1  # and the columns in blocks


def test_headers_are_shortened_by_the_documented_rule():
    others = ["optim.lr", "model.lr", "train.amp"]
    assert layout.shorten_header("final_test_accuracy", others) == "fin_test_acc"
    assert layout.shorten_header("delta.final_test_accuracy", others) == "Δfin_test_acc"
    assert layout.shorten_header("train.amp", others) == "amp"
    assert layout.shorten_header("optim.lr", others) == "optim.lr"  # lr would be ambiguous


def test_transpose_puts_one_group_per_column(ten_groups: Path):
    result = runner.invoke(app, ["compare", str(ten_groups), "--transpose", "--width", "80"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    # the column names are shortened by the rule (never cut), in every block
    assert sum(line.startswith("fin_test_acc ") for line in lines) >= 2
    assert any(line.startswith("shortened names: ") for line in lines)
    assert any(line.lstrip().startswith("group-9") for line in lines)
    wide = runner.invoke(app, ["compare", str(ten_groups), "--transpose", "--width", "2000"])
    assert any(line.startswith("final_test_accuracy ") for line in wide.stdout.splitlines())


def test_rows_that_share_a_name_are_told_apart_by_what_differs(tmp_path: Path):
    for lr in (0.1, 0.5):
        for seed in (0, 1):
            fake_run(
                tmp_path,
                "clip",
                seed,
                0.8 + lr / 10 + seed / 100,
                config={"optim": {"lr": lr}},
                loss=0.5 + lr + seed / 10,
                alerts={"vanishing": seed, "exploding": 0, "dead_relu": int(lr * 10)},
            )
    table = comparison([tmp_path])
    headers, rows, constants = display(table)
    assert "run" not in headers and "run" not in constants  # "2 runs" says nothing n does not
    assert exports_key_columns(headers, rows) == headers.index("optim.lr") + 1
    result = runner.invoke(app, ["compare", str(tmp_path), "--width", "40", "--transpose"])
    assert result.exit_code == 0
    assert "clip 0.5" in result.stdout and "clip 0.1" in result.stdout  # name and optim.lr
    many = "optim.lr,final_test_accuracy,final_train_loss,alerts.vanishing,alerts.dead_relu"
    narrow = runner.invoke(app, ["compare", str(tmp_path), "--width", "40", "--columns", many])
    rows = [line for line in narrow.stdout.splitlines() if line.startswith("clip")]
    assert len(rows) >= 4  # two rows in each of several blocks, each naming its lr
    assert all(line.split()[1] in ("0.1", "0.5") for line in rows)


def test_long_names_are_cut_in_the_middle_and_stay_apart():
    names = [f"study-clip-norm-with-a-long-common-prefix-variant-{v}" for v in ("a", "b")]
    lines = layout.fit_table(["name", "x" * 30], [[n, "1"] for n in names], 40)
    shown = [line.text.split("  ")[0] for line in lines if line.kind == "row"]
    assert len(set(shown)) == 2 and all("…" in n for n in shown)
    assert layout.cut("abcdefghij", 5) == "ab…ij" and layout.cut("abc", 5) == "abc"


@pytest.mark.parametrize("width", [60, 80])
def test_names_that_differ_only_in_the_middle_are_never_cut_alike(width: int):
    names = [f"noise-lr=0.5-sigma={s}-activation=tanh" for s in ("0.001", "0.01")]
    headers = ["name", *(f"metric_number_{k}" for k in range(6))]
    rows = [[n, *(["0.1234"] * 6)] for n in names]
    lines = layout.fit_table(headers, rows, width)
    assert max(len(line.text) for line in lines) <= width
    shown = [line.text.split("  ")[0] for line in lines if line.kind == "row"]
    assert any("…" in n for n in shown)  # cut, yet the two rows still read apart
    for block in range(0, len(shown), 2):
        assert shown[block] != shown[block + 1], shown


def test_piped_tables_are_a_hundred_columns(ten_groups: Path):
    result = runner.invoke(app, ["compare", str(ten_groups)])
    assert max(len(line) for line in result.stdout.splitlines()) <= 100


# ------------------------------------------------------------------- columns


def test_steps_per_second_is_not_a_default_column_but_can_be_asked_for(ten_groups: Path):
    assert "steps_per_second" not in comparison([ten_groups]).columns
    table = comparison([ten_groups], columns=["steps_per_second", "edits"])
    assert [c for c in table.columns if "." not in c] == [
        "run",
        "name",
        "seed",
        "steps_per_second",
        "edits",
    ]
    assert table["steps_per_second"].iloc[0] == pytest.approx(600.0)  # mean of 500, 600, 700


def test_columns_drop_and_only_changed_accept_any_column(ten_groups: Path):
    default = comparison([ten_groups])
    for column in ("edits", "status", "alerts.vanishing"):
        assert column not in comparison([ten_groups], drop=[column]).columns
    dropped = comparison([ten_groups], drop=["final_test_accuracy"])
    assert not any(c.startswith("final_test_accuracy") for c in dropped.columns)
    chosen = comparison([ten_groups], columns=["alerts.dead_relu", "status"])
    assert list(chosen.columns)[-2:] == ["alerts.dead_relu.ci_high", "status"]
    changed = comparison([ten_groups], only_changed=True)
    for column in changed.columns:
        base = column.split(".std")[0].split(".ci_")[0]
        assert base in ("run", "name") or changed[base].map(str).nunique() > 1
    assert "status" in default.columns and "status" not in changed.columns  # all completed
    assert "optim.lr" in changed.columns and "dataset" not in changed.columns
    result = runner.invoke(app, ["compare", str(ten_groups), "--drop", "edits,status"])
    assert result.exit_code == 0
    assert "edit-label" not in result.stdout and "completed" not in result.stdout


# ------------------------------------------------------------------- LaTeX


def test_latex_is_booktabs_with_bold_best_values_and_escaped_names(ten_groups: Path):
    table = comparison([ten_groups], baseline="group-0", columns=["final_test_accuracy", "edits"])
    tex = to_latex(table, spread="std")
    body = tex.split("\\midrule\n")[1].split("\\bottomrule")[0].strip().splitlines()
    assert "\\toprule" in tex and "\\begin{tabular}" in tex and len(body) == 10
    assert "final\\_test\\_accuracy" in tex and "edit-label-9" in tex
    best = table["final_test_accuracy"].idxmax()
    bold = [i for i, line in enumerate(body) if "\\mathbf" in line.split(" & ")[1]]
    assert bold == [best]
    mean, std = table.loc[best, ["final_test_accuracy", "final_test_accuracy.std"]]
    fmt = numbers.column_format(table["final_test_accuracy"], table["final_test_accuracy.std"])
    assert f"$\\mathbf{{{fmt(mean)} \\pm {fmt(std)}}}$" in body[best]
    intervals = to_latex(table, spread="ci")
    low, high = table.loc[best, ["final_test_accuracy.ci_low", "final_test_accuracy.ci_high"]]
    assert "95% confidence interval" in intervals
    assert escape("a_b & 50% {x} #1 $ ~^\\") == (
        "a\\_b \\& 50\\% \\{x\\} \\#1 \\$ \\textasciitilde{}\\textasciicircum{}\\textbackslash{}"
    )
    assert all(not math.isnan(float(v)) for v in (low, high))


def test_latex_writes_scientific_numbers_and_bars_as_latex(tmp_path: Path):
    for lr, norm in ((0.1, 2.4e-5), (0.5, 3.1e-5)):
        for seed in (0, 1):
            run = fake_run(
                tmp_path, f"lr{lr}", seed, 0.8, config={"optim": {"lr": lr}}, loss=0.5 + seed
            )
            summary = json.loads((run / "summary.json").read_text())
            summary["grad_norm_mean"] = norm * (1 + seed / 10)
            (run / "summary.json").write_text(json.dumps(summary))
    table = comparison([tmp_path], columns=["grad_norm_mean", "edits"])
    table.loc[0, "edits"] = "a|b"  # a joined cell
    tex = to_latex(table, spread="std")
    assert "\\times10^{-5}" in tex and "e-05" not in tex and "a\\textbar{}b" in tex


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no LaTeX (pdflatex) installed")
def test_latex_compiles(ten_groups: Path, tmp_path: Path):
    result = runner.invoke(
        app, ["compare", str(ten_groups), "--baseline", "group-0", "--format", "latex"]
    )
    assert result.exit_code == 0, result.output
    document = (
        "\\documentclass{article}\\usepackage{booktabs}\\usepackage{graphicx}\n"
        "\\begin{document}\\resizebox{\\textwidth}{!}{%\n" + result.stdout + "}\\end{document}\n"
    )
    (tmp_path / "t.tex").write_text(document)
    run = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-2000:]
    assert (tmp_path / "t.pdf").read_bytes().startswith(b"%PDF")


def test_markdown_uses_the_same_precision_as_the_table(ten_groups: Path):
    table = comparison([ten_groups])
    markdown = runner.invoke(app, ["compare", str(ten_groups), "-f", "markdown"]).stdout
    _, rows, _ = display(table)
    for row in rows:
        assert "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" in markdown


# ------------------------------------------------------------------- inspect


def test_inspect_prints_scientific_values_whole(tmp_path: Path):
    run = fake_run(tmp_path, "tiny-grads", 0, 0.8)
    rows = [
        [step, p, -2.415e-05 * step, 1e-6, 0.001234, 0.5, 0.25, 3.2e-07, 5.5]
        for step in (1, 50)
        for p in ("fc1.weight", "fc2.bias")
    ]
    columns = ["step", "param", "mean", "std", "norm", "max_abs", "zero_frac"]
    frame = pd.DataFrame(rows, columns=[*columns, "update_ratio", "weight_norm"])
    frame.to_csv(run / "grads.csv", index=False)
    result = runner.invoke(app, ["inspect", str(run), "--width", "80"])
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    assert "-2.415e-05" in result.stdout and "-0.001208" in result.stdout
    assert "3.2e-07" in result.stdout
    sweep_folder = runner.invoke(app, ["inspect", str(tmp_path)])
    assert sweep_folder.exit_code == 2 and "not a run folder" in sweep_folder.stderr
