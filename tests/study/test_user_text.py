"""User text (names, config values, paths, folder names) reaches the terminal, TeX and
Markdown as written, on one line: control characters escaped, markup neutralized."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny
from typer.testing import CliRunner

from gradlab.cli import app
from gradlab.config import config_from_dict
from gradlab.text import markdown, one_line
from gradlab.train import train

runner = CliRunner()
PATTERN = "fc[1\n\\input{/etc/hostname}]*"  # a valid glob: fc1... or fc\n...


@pytest.fixture(scope="module")
def injected(tmp_path_factory) -> Path:
    """Two experiments (lr 0.1, 0.2) whose edit, constant, has a newline in its pattern."""
    runs = tmp_path_factory.mktemp("injected")
    edit = [{"type": "clip_norm", "max_norm": 1.0, "params": PATTERN}]
    for lr in (0.1, 0.2):
        for seed in (0, 1):
            config = tiny(name="inj", seed=seed, edit=edit, optim={"lr": lr})
            train(config_from_dict(config), runs)
    return runs


def test_one_line_escapes_every_control_character():
    assert one_line("a\nb\tc\rd") == "a\\nb\\tc\\rd"
    assert one_line("\x1b[31mred\x07") == "\\x1b[31mred\\x07"
    assert one_line("\x9b2J") == "\\x9b2J"  # C1: the 8-bit CSI
    assert one_line("x\u2028y\u202eevil") == "x\\u2028y\\u202eevil"  # line separator, RTL override
    assert one_line("ε ± 0.5 — naïve 日本") == "ε ± 0.5 — naïve 日本"  # printable text unchanged
    for code in [*range(0x20), 0x7F, *range(0x80, 0xA0)]:
        assert one_line(chr(code)).isprintable()


def test_markdown_reads_as_written():
    assert markdown("final_test_accuracy") == "final_test_accuracy"
    assert markdown("_x_ *y* [a](b) <i> a|b `c` #") == (
        "\\_x\\_ \\*y\\* \\[a\\](b) \\<i\\> a\\|b \\`c\\` \\#"
    )
    assert markdown("0.012 *") == "0.012 *"  # the significance mark stays a mark
    assert markdown("a\nb") == "a\\\\nb"  # the backslash of the escape, escaped: a\nb


def test_a_newline_in_a_config_value_cannot_start_live_tex(injected: Path):
    result = runner.invoke(app, ["compare", str(injected), "--format", "latex"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    constants = [line for line in lines if line.startswith("% the same in every row")]
    assert len(constants) == 1 and "input{/etc/hostname}" in constants[0]
    assert "fc[1\\n\\input{/etc/hostname}]*" in constants[0]  # on the comment line, as text
    live = [line for line in lines if not line.startswith("%")]
    assert not any("\\input" in line for line in live), live
    begin, end = (
        lines.index(next(x for x in lines if x.startswith("\\begin"))),
        lines.index("\\end{tabular}"),
    )
    assert all(line.startswith("%") for line in lines[:begin] + lines[end + 1 :])


def test_a_newline_in_a_config_value_keeps_tables_whole(injected: Path):
    table = runner.invoke(app, ["compare", str(injected), "--width", "200"])
    assert table.exit_code == 0, table.output
    assert "fc[1\\n\\input{/etc/hostname}]*" in table.stdout
    header = next(line for line in table.stdout.splitlines() if line.startswith("name"))
    assert "optim.lr" in header or " lr" in header
    md = runner.invoke(app, ["compare", str(injected), "--format", "markdown"])
    assert md.exit_code == 0, md.output
    lines = md.stdout.splitlines()
    assert lines[0].startswith("dataset: ") or ": " in lines[0]  # the constants, one line
    assert "fc\\[1\\\\n\\\\input{/etc/hostname}\\]\\*" in lines[0]
    rows = [line for line in lines if line.startswith("|")]
    assert len(rows) == 2 + 2  # header, rule, two groups
    assert len({line.count(" | ") for line in rows if "---" not in line}) == 1
    data = runner.invoke(app, ["compare", str(injected), "--format", "json"])
    assert all(PATTERN in row["edits"] for row in json.loads(data.stdout))  # JSON: raw data


def test_emoji_codes_in_user_text_print_as_written(tmp_path: Path):
    result = runner.invoke(app, ["compare", str(tmp_path / "x:smile:")])
    assert result.exit_code == 2
    assert f"{tmp_path / 'x:smile:'} (no such file or folder)" in result.stderr
    assert "😄" not in result.stderr
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: s\nbase: {data: {name: mnist-sample}}\nseeds: [0]\n")
    result = runner.invoke(app, ["sweep", str(sweep), "--executor", "ray", "--address", "a:b:c"])
    assert result.exit_code == 2
    assert "--address a:b:c: not a Ray address" in result.stderr and "🅱" not in result.stderr


def test_a_planted_folder_name_cannot_drive_the_terminal(injected: Path, tmp_path: Path):
    runs = tmp_path / "runs"
    shutil.copytree(injected, runs / "sweep")
    evil = "\x1b[2J\x1b]0;owned\x07\x1b[31mred"
    (runs / "sweep" / "sweep.json").write_text(json.dumps({"runs": [{"folder": evil}]}))
    result = runner.invoke(app, ["compare", str(runs)])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
    assert "\\x1b[2J\\x1b]0;owned\\x07\\x1b[31mred (listed in sweep.json, not found)" in (
        result.stderr
    )


def test_a_real_terminal_gets_no_escape_sequence_from_a_name(injected: Path, tmp_path: Path):
    """The same through a pseudo-terminal: rich styles the lines, the name stays text."""
    runs = tmp_path / "runs"
    shutil.copytree(injected, runs / "sweep")
    (runs / "sweep" / "sweep.json").write_text(json.dumps({"runs": [{"folder": "\x1b[2Jgone"}]}))
    script = (
        "import sys; from gradlab.cli import main; sys.argv = ['gradlab', 'compare', "
        f"{str(runs)!r}]; main()"
    )
    out = subprocess.run(
        ["script", "-qec", f"{sys.executable} -c {json.dumps(script)}", "/dev/null"],
        capture_output=True,
        timeout=120,
    )
    if out.returncode == 127 or b"not found" in out.stderr[:200]:
        pytest.skip("no script(1) to give the command a terminal")
    assert b"\x1b[2J" not in out.stdout and b"\\x1b[2Jgone" in out.stdout
