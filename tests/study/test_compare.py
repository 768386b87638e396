"""gradlab compare, on run folders written by gradlab's own training loop and run writer."""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny
from typer.testing import CliRunner

from gradlab.cli import app
from gradlab.config import config_from_dict
from gradlab.study.compare import comparison, constant_columns
from gradlab.study.reading import load_runs, load_steps
from gradlab.train import train

runner = CliRunner()


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """Two configurations x two seeds, and one single run: five real, tiny runs."""
    runs = tmp_path_factory.mktemp("study")
    for seed in (0, 1):
        train(config_from_dict(tiny(name="plain", seed=seed)), runs)
        train(
            config_from_dict(
                tiny(name="clipped", seed=seed, edit=[{"type": "clip_norm", "max_norm": 0.1}])
            ),
            runs,
        )
    train(config_from_dict(tiny(name="fast", optim={"lr": 0.5})), runs)
    return runs


def summaries(folder: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for run in sorted(folder.iterdir()):
        if (run / "summary.json").exists():
            name = run.name.split("-")[0]
            out.setdefault(name, []).append(json.loads((run / "summary.json").read_text()))
    return out


def test_load_runs_has_one_row_per_run_with_config_columns(study: Path):
    runs = load_runs([study])
    assert len(runs) == 5 and runs.attrs["skipped"] == []
    assert set(runs["name"]) == {"plain", "clipped", "fast"}
    clipped = runs[runs["name"] == "clipped"].iloc[0]
    assert clipped["edits"] == "clip_norm(0.1)" and clipped["dataset"] == "mnist-sample"
    assert runs.loc[runs["name"] == "fast", "optim.lr"].item() == 0.5
    assert runs["group"].nunique() == 3
    steps = load_steps(clipped["path"])
    assert len(steps) == 12 and "grad_norm.fc1.weight" in steps.columns


def test_grouping_arithmetic_matches_the_individual_runs(study: Path):
    table = comparison(load_runs([study]))
    assert table.attrs["grouped"]
    by_name = {row["name"]: row for row in table.to_dict("records")}
    assert by_name["fast"]["n"] == 1 and by_name["plain"]["n"] == 2
    for name, runs in summaries(study).items():
        row = by_name[name]
        for metric in ("final_test_accuracy", "final_train_loss", "grad_norm_mean", "steps"):
            values = [r[metric] for r in runs]
            assert row[metric] == pytest.approx(statistics.mean(values))
            if len(values) > 1:
                assert row[f"{metric}.std"] == pytest.approx(statistics.stdev(values))
        assert row["seed"] == ",".join(str(s) for s in range(len(runs)))
    changed = by_name["clipped"]["edit_changed_frac"]
    assert 0 < changed <= 1 and by_name["plain"]["edit_changed_frac"] == 0


def test_sorting_metrics_and_baseline(study: Path):
    runs = load_runs([study])
    table = comparison(runs, group=False)
    accuracy = list(table["final_test_accuracy"])
    assert accuracy == sorted(accuracy, reverse=True) and len(table) == 5
    table = comparison(runs, group=False, sort_by="final_train_loss")
    loss = list(table["final_train_loss"])
    assert loss == sorted(loss)
    table = comparison(runs, group=False, sort_by="final_train_loss", ascending=False)
    assert list(table["final_train_loss"]) == sorted(loss, reverse=True)
    table = comparison(runs, metrics=["final_test_accuracy", "optim.lr"], baseline="fast")
    assert "grad_norm_mean" not in table.columns and "optim.lr" in table.columns
    fast = table[table["name"] == "fast"].iloc[0]
    assert fast["delta.final_test_accuracy"] == 0
    for _, row in table.iterrows():
        assert row["delta.final_test_accuracy"] == pytest.approx(
            row["final_test_accuracy"] - fast["final_test_accuracy"]
        )


def test_constant_columns_move_out_of_the_rows(study: Path):
    table = comparison(load_runs([study]))
    constants = constant_columns(table)
    assert constants["dataset"] == "mnist-sample" and constants["steps"] == 12
    assert "name" not in constants and "final_test_accuracy" not in constants


@pytest.mark.parametrize("fmt", ["csv", "json", "markdown", "table"])
def test_every_format_keeps_column_names(study: Path, fmt: str, tmp_path: Path):
    args = [
        "compare",
        str(study),
        "--format",
        fmt,
        "--metrics",
        "final_test_accuracy,optim.lr,grad_norm_max",
    ]
    result = runner.invoke(
        app, [*args, "--group"] + (["--baseline", "plain"] if fmt != "table" else [])
    )
    assert result.exit_code == 0, result.output
    text = result.stdout
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        assert len(rows) == 3
        assert {
            "final_test_accuracy",
            "final_test_accuracy.std",
            "optim.lr",
            "grad_norm_max",
            "delta.final_test_accuracy",
            "n",
        } <= set(rows[0])
    elif fmt == "json":
        rows = json.loads(text)
        assert len(rows) == 3 and rows[0]["n"] in (1, 2)
        assert "final_test_accuracy.std" in rows[0] and "delta.final_test_accuracy" in rows[0]
    elif fmt == "markdown":
        lines = text.splitlines()
        header = next(line for line in lines if line.startswith("| "))
        assert (
            "| final_test_accuracy |" in header
            and "| optim.lr |" in header
            and "delta.final_test_accuracy" in header
        )
        assert sum(line.startswith("| ") for line in lines) == 4  # header and three rows
        assert " ± " in text
    else:
        assert "final_test_accuracy" in text and "optim.lr" in text and "± " in text
    out = tmp_path / f"table.{fmt}"
    result = runner.invoke(app, [*args, "--output", str(out)])
    assert result.exit_code == 0 and out.read_text() and result.stdout == ""


def test_ungrouped_table_has_a_row_per_run(study: Path):
    result = runner.invoke(app, ["compare", str(study), "--no-group", "--format", "json"])
    rows = json.loads(result.stdout)
    assert len(rows) == 5 and all("n" not in row for row in rows)


def test_plot_is_a_real_picture(study: Path, tmp_path: Path):
    from matplotlib.image import imread

    out = tmp_path / "runs.png"
    result = runner.invoke(app, ["compare", str(study), "--plot", str(out), "--format", "csv"])
    assert result.exit_code == 0, result.output
    image = imread(out)
    assert image.shape[0] > 300 and image.shape[1] > 800
    assert image[..., :3].std() > 0.05  # not blank
    colours = {tuple(px) for px in (image[::7, ::7, :3] * 255).astype(int).reshape(-1, 3)}
    assert len(colours) > 20  # lines, bands, text: many colours


def make_broken_folders(root: Path, good: Path) -> None:
    """Every way a folder can fail to be a finished run, next to a good one."""
    import shutil

    shutil.copytree(good, root / "good")
    missing = root / "missing-summary"
    shutil.copytree(good, missing)
    (missing / "summary.json").unlink()
    truncated = root / "truncated-summary"
    shutil.copytree(good, truncated)
    (truncated / "summary.json").write_text('{"status": "compl')
    cut = root / "cut-steps"
    shutil.copytree(good, cut)
    text = (cut / "steps.csv").read_text()
    (cut / "steps.csv").write_text(text[: len(text) - 25])  # a killed run: half a last row
    crashed = root / "crashed"
    shutil.copytree(good, crashed)
    (crashed / "summary.json").write_text(json.dumps({"status": "running", "pid": 2**22 + 12345}))
    alive = root / "alive"
    shutil.copytree(good, alive)
    (alive / "summary.json").write_text(json.dumps({"status": "running", "pid": os.getpid()}))
    (root / "not-a-run").mkdir()
    (root / "notes.txt").write_text("hello")


def test_broken_folders_never_crash(study: Path, tmp_path: Path):
    good = next(p for p in study.iterdir() if p.name.startswith("plain"))
    make_broken_folders(tmp_path, good)
    paths = [str(p) for p in sorted(tmp_path.iterdir())] + [str(tmp_path / "does-not-exist")]
    result = runner.invoke(app, ["compare", *paths, "--format", "json", "--no-group"])
    assert result.exit_code == 0, result.output
    rows = {row["run"]: row for row in json.loads(result.stdout)}
    assert set(rows) == {"good", "cut-steps", "crashed", "alive"}
    assert rows["crashed"]["status"] == "crashed" and rows["alive"]["status"] == "running"
    # what the crashed run logged before it died, not blanks
    assert rows["crashed"]["final_test_accuracy"] == rows["good"]["final_test_accuracy"]
    assert rows["crashed"]["steps"] == rows["good"]["steps"]
    warning, duplicates = result.stderr.strip().splitlines()
    assert duplicates.startswith("warning: 1 duplicate run not counted")
    assert f"{tmp_path / 'cut-steps'} (repeats {tmp_path / 'good'})" in duplicates
    assert rows["cut-steps"]["status"] == "duplicate" and rows["good"]["status"] == "completed"
    assert warning.startswith("warning: skipped 5: ") and "more" not in warning
    assert "missing-summary (summary.json: missing)" in warning
    assert "truncated-summary (summary.json: unreadable" in warning
    assert (
        "does-not-exist (no such file or folder)" in warning
        and "notes.txt (not a run folder)" in warning
    )
    assert len(load_steps(tmp_path / "cut-steps")) == 11  # the half row is dropped
    plot = tmp_path / "broken.png"
    result = runner.invoke(app, ["compare", str(tmp_path), "--plot", str(plot)])
    assert result.exit_code == 0 and plot.stat().st_size > 10_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sort-by", "accuracy"], "--sort-by 'accuracy': unknown column; columns: run, name"),
        (["--metrics", "final_test_accuracy,speed"], "--metrics 'speed': unknown column"),
        (["--baseline", "nobody"], "--baseline 'nobody' matches no row; names: "),
        (["--format", "xml"], "--format 'xml': use one of table, csv, markdown, latex, json"),
        (["--plot", "out.jpg"], "--plot out.jpg"),
        (["--plot", "out.jpg"], ".png, .pdf or .svg"),
        (["--columns", "final_test_accuracy,speed"], "--columns 'speed': unknown column; "),
        (["--drop", "edits,nothing"], "--drop 'nothing': unknown column; columns: run, name"),
        (["--columns", " , "], "--columns ' , ': name at least one"),
        (["--drop", ""], "--drop '': name at least one"),
        (
            [
                "--drop",
                "run,name,edits,dataset,seed,n,final_train_loss,final_test_accuracy,"
                "best_test_accuracy,grad_norm_mean,grad_norm_max,edit_changed_frac,alerts,steps,status,"
                "optim.lr",
            ],
            "--drop: every column was dropped",
        ),
        (["--drop", "p_value"], "--drop 'p_value': unknown column"),  # no --baseline: no tests
        (["--plot", "o.png", "--panels", "train_loss,nope"], "--panels"),
        (["--panels", "train_loss"], "--panels needs --plot"),
        (["--width", "12"], "--width 12: use a number of columns from 40"),
        (["--output", "/nonexistent/dir/t.txt"], "--output /nonexistent/dir/t.txt: cannot write"),
        (["--plot", "/nonexistent/dir/p.pdf"], "--plot /nonexistent/dir/p.pdf: cannot write"),
    ],
)
def test_bad_choices_end_in_one_line(study: Path, args, message):
    result = runner.invoke(app, ["compare", str(study), *args])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line


def test_nothing_to_compare(tmp_path: Path):
    result = runner.invoke(app, ["compare", str(tmp_path)])
    assert result.exit_code == 2
    assert "error: no readable run folders in" in result.stderr


def test_output_file_is_replaced_whole_or_kept(study: Path, tmp_path: Path):
    out = tmp_path / "table.csv"
    out.write_text("previous\n")
    result = runner.invoke(
        app, ["compare", str(study), "--format", "csv", "--output", str(out), "--sort-by", "nope"]
    )
    assert result.exit_code == 2 and out.read_text() == "previous\n"
    blocked = tmp_path / "dir.csv"
    blocked.mkdir()
    result = runner.invoke(
        app, ["compare", str(study), "--format", "csv", "--output", str(blocked)]
    )
    assert result.exit_code == 2 and "is a folder; name a file" in result.stderr
    # an output that cannot be written is refused before anything is printed or written
    table = tmp_path / "t.csv"
    result = runner.invoke(
        app,
        ["compare", str(study), "-f", "csv", "-o", str(table), "--plot", str(tmp_path / "x/p.png")],
    )
    assert result.exit_code == 2 and "--plot" in result.stderr and "no folder" in result.stderr
    assert not table.exists() and result.stdout == ""


def test_compare_never_imports_torch(study: Path):
    code = (
        "import sys\nfrom gradlab.cli import app\n"
        f"try:\n    app(['compare', {str(study)!r}, '--format', 'csv'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_python_api_is_lazy():
    code = "import sys, gradlab; print('pandas' in sys.modules); gradlab.load_runs; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
