"""The search for run folders under what compare, report and plots are given: symlinks,
loops and unreadable folders end in one warning line, never a traceback or a hang."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import tiny
from typer.testing import CliRunner

from gradlab.cli import app
from gradlab.config import config_from_dict
from gradlab.study import reading
from gradlab.study.reading import find_runs, load_runs
from gradlab.train import train

runner = CliRunner()


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> list[Path]:
    """Two real, tiny runs (seeds 0 and 1)."""
    folder = tmp_path_factory.mktemp("walk")
    return [train(config_from_dict(tiny(name="walk", seed=s)), folder).path for s in (0, 1)]


def runs_folder(root: Path, runs: list[Path]) -> Path:
    """``root/runs`` holding copies of ``runs``."""
    folder = root / "runs"
    folder.mkdir()
    for run in runs:
        shutil.copytree(run, folder / run.name)
    return folder


def one_warning(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: skipped "), stderr
    return lines[0]


def test_symlink_loops_are_one_warning_then_the_table(two_runs: list[Path], tmp_path: Path):
    runs = runs_folder(tmp_path, two_runs)
    (runs / "loop2").symlink_to("loop2")  # ln -s loop2 runs/loop2
    (runs / "loop").symlink_to("../runs")  # ln -s ../runs runs/loop
    tree = tmp_path / "usr" / "bin"  # like Debian's /usr/bin/X11 -> .
    tree.mkdir(parents=True)
    (tree / "X11").symlink_to(".")
    (runs / "usr").symlink_to(tmp_path / "usr")
    (runs / "proc").symlink_to("/proc")
    (runs / "up").mkdir()
    (runs / "up" / "again").symlink_to("..")
    result = runner.invoke(app, ["compare", str(runs), "--format", "json", "--no-group"])
    assert result.exit_code == 0, result.output
    assert sorted(r["run"] for r in json.loads(result.stdout)) == sorted(r.name for r in two_runs)
    warning = one_warning(result.stderr)
    assert f"{runs / 'loop2'} (a symlink loop)" in warning
    assert f"{runs / 'loop'} (a symlink to a folder that holds it" in warning
    _, problems = find_runs([runs])
    assert (
        f"{runs / 'usr' / 'bin' / 'X11'} (a symlink to a folder that holds it; not followed)"
        in (problems)
    )
    assert f"{runs / 'up' / 'again'} (a symlink to a folder that holds it; not followed)" in (
        problems
    )
    if Path("/proc/self/mounts").exists():
        assert f"{runs / 'proc'} (the kernel's file system /proc; not searched)" in problems
    assert len(problems) == 5
    out = tmp_path / "report.html"
    result = runner.invoke(app, ["report", str(runs), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 1000 and "Traceback" not in result.output


def test_the_real_usr_and_proc_are_searched_without_a_traceback(
    two_runs: list[Path], tmp_path: Path
):
    """``ln -s /usr runs/usr`` and ``ln -s /proc runs/proc``, as the issue tried them."""
    runs = runs_folder(tmp_path, two_runs)
    (runs / "usr").symlink_to("/usr")
    (runs / "proc").symlink_to("/proc")
    result = runner.invoke(app, ["compare", str(runs), "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert "walk" in result.stdout
    one_warning(result.stderr)


def test_a_folder_linked_twice_is_searched_once(two_runs: list[Path], tmp_path: Path):
    runs = runs_folder(tmp_path, two_runs)
    (tmp_path / "elsewhere").symlink_to(runs)
    (runs / "alias").symlink_to(runs / two_runs[0].name)  # a second way to one run
    found, problems = find_runs([runs, tmp_path / "elsewhere", runs])
    assert [p.name for p in found] == sorted(r.name for r in two_runs)
    assert problems == []


def test_a_folder_that_cannot_be_read_is_a_warning(
    two_runs: list[Path], tmp_path: Path, monkeypatch
):
    """Mode 700 and another owner: as root the mode is not enforced, so os.stat and
    os.scandir are made to refuse as the kernel would for another user."""
    runs = runs_folder(tmp_path, two_runs)
    locked = runs / "theirs"
    shutil.copytree(two_runs[0], locked / "their-run")
    locked.chmod(0o700)
    sweep = runs / "sweep"
    sweep.mkdir()
    (sweep / "private").mkdir()
    if os.geteuid() == 0:
        real_stat, real_scandir = os.stat, os.scandir

        def refuse(path, *args, **kwargs):
            text = os.fspath(path)
            if text.startswith(str(locked) + os.sep) or text.startswith(str(sweep / "private")):
                raise PermissionError(13, "Permission denied", text)
            return real_stat(path, *args, **kwargs)

        def refuse_listing(path="."):
            if os.fspath(path) in (str(locked), str(sweep / "private")):
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real_scandir(path)

        monkeypatch.setattr(reading.os, "stat", refuse)
        monkeypatch.setattr(reading.os, "scandir", refuse_listing)
    else:
        (sweep / "private").chmod(0)
    try:
        df = load_runs([runs])
    finally:
        if os.geteuid() != 0:
            (sweep / "private").chmod(0o700)
    assert sorted(df["run"]) == sorted(r.name for r in two_runs)
    assert any(
        s.startswith(str(locked)) and "permission denied" in s for s in df.attrs["skipped"]
    ), df.attrs["skipped"]
    assert f"{sweep / 'private'} (cannot be read: permission denied)" in df.attrs["skipped"]


def test_a_path_given_twice_or_missing(two_runs: list[Path], tmp_path: Path):
    runs = runs_folder(tmp_path, two_runs)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "self").symlink_to("self")
    found, problems = find_runs([runs, runs, tmp_path / "dangling", tmp_path / "self"])
    assert len(found) == 2
    assert problems == [
        f"{tmp_path / 'dangling'} (a symlink to nothing)",
        f"{tmp_path / 'self'} (a symlink loop)",
    ]
