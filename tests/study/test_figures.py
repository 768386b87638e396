"""Figure files (gradlab.study.figures): the suffixes a plot path may have, figures made
outside pyplot, and files written whole in each format or not at all."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gradlab.errors import CompareError, GradlabError
from gradlab.study.figures import FORMATS, check_plot_path, new_figure, save_figure

MAGIC = {".png": b"\x89PNG\r\n\x1a\n", ".pdf": b"%PDF-"}


def small_figure() -> Figure:
    fig = new_figure(2.0, 1.5)
    fig.add_subplot().plot([1, 2, 3], [3, 1, 2])
    return fig


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------- paths


def test_the_formats_are_png_pdf_and_svg():
    assert FORMATS == (".png", ".pdf", ".svg")


@pytest.mark.parametrize(
    "name", ["a.png", "a.PNG", "a.Pdf", "a.pDF", "b.svg", "b.SVG", "dir.x/c.tar.png", "~/p.png"]
)
def test_a_known_suffix_in_any_case_is_accepted_as_given(name: str):
    assert check_plot_path(name) == Path(name)
    assert check_plot_path(Path(name)) == Path(name)
    assert isinstance(check_plot_path(name), Path)


@pytest.mark.parametrize("name", ["a.jpg", "a.jpeg", "a.gif", "a.eps", "a.png.bak", "png", ".png"])
def test_another_suffix_or_none_is_a_compare_error_about_the_path(name: str):
    with pytest.raises(CompareError) as bad:
        check_plot_path(name)
    assert isinstance(bad.value, GradlabError)
    assert str(bad.value) == f"{name}: unsupported format; use .png, .pdf or .svg"
    assert bad.value.about == "path"


# --------------------------------------------------------------------------- new figures


def test_a_new_figure_has_the_size_asked_on_an_agg_canvas():
    fig = new_figure(6.5, 2.25)
    assert tuple(fig.get_size_inches()) == (6.5, 2.25)
    assert fig.dpi == 110
    assert isinstance(fig.canvas, FigureCanvasAgg)
    assert type(fig.get_layout_engine()).__name__ == "ConstrainedLayoutEngine"
    assert fig.axes == []


def test_a_new_figure_is_not_registered_with_pyplot():
    before = plt.get_fignums()
    fig = new_figure(3, 2)
    fig.add_subplot().plot([0, 1])
    assert plt.get_fignums() == before
    assert fig.canvas.manager is None


# --------------------------------------------------------------------------- saving


@pytest.mark.parametrize("suffix", FORMATS)
def test_each_format_is_written_with_its_magic_bytes(suffix: str, tmp_path: Path):
    out = tmp_path / f"plot{suffix}"
    assert save_figure(small_figure(), out) == out
    data = out.read_bytes()
    if suffix == ".svg":
        assert b"<svg" in data[:1000]
        assert ET.fromstring(data).tag == "{http://www.w3.org/2000/svg}svg"
    else:
        assert data.startswith(MAGIC[suffix])
    assert listing(tmp_path) == [f"plot{suffix}"]  # no temporary file left


@pytest.mark.parametrize(("suffix", "magic"), [(".PNG", b"\x89PNG"), (".Pdf", b"%PDF")])
def test_an_upper_case_suffix_writes_the_format_it_names(suffix: str, magic: bytes, tmp_path):
    out = save_figure(small_figure(), str(tmp_path / f"plot{suffix}"))
    assert out == tmp_path / f"plot{suffix}" and isinstance(out, Path)
    assert out.read_bytes().startswith(magic)


def test_pdf_and_svg_carry_no_creation_date(tmp_path: Path):
    fig = small_figure()
    assert b"/CreationDate" not in save_figure(fig, tmp_path / "a.pdf").read_bytes()
    assert b"<dc:date>" not in save_figure(fig, tmp_path / "a.svg").read_bytes()
    fig.savefig(tmp_path / "plain.pdf")  # matplotlib's default: a date
    assert b"/CreationDate" in (tmp_path / "plain.pdf").read_bytes()


def test_an_existing_file_is_replaced(tmp_path: Path):
    out = tmp_path / "plot.png"
    out.write_bytes(b"old")
    save_figure(small_figure(), out)
    assert out.read_bytes().startswith(MAGIC[".png"])
    assert listing(tmp_path) == ["plot.png"]


def test_an_unsupported_suffix_writes_nothing(tmp_path: Path):
    with pytest.raises(CompareError, match="unsupported format"):
        save_figure(small_figure(), tmp_path / "plot.jpg")
    assert listing(tmp_path) == []


def test_a_missing_folder_is_an_os_error_and_is_not_created(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        save_figure(small_figure(), tmp_path / "missing" / "plot.png")
    assert listing(tmp_path) == []


def test_a_folder_in_the_way_is_an_os_error_and_is_left_as_it_was(tmp_path: Path):
    folder = tmp_path / "plot.svg"
    folder.mkdir()
    (folder / "inside.txt").write_text("kept")
    with pytest.raises(IsADirectoryError):
        save_figure(small_figure(), folder)
    assert listing(tmp_path) == ["plot.svg"] and listing(folder) == ["inside.txt"]


def test_a_pyplot_figure_is_closed_once_saved(tmp_path: Path):
    fig = plt.figure(figsize=(2, 1))
    try:
        assert fig.number in plt.get_fignums()
        save_figure(fig, tmp_path / "plot.png")
        assert fig.number not in plt.get_fignums()
    finally:
        plt.close(fig)


def test_a_pyplot_figure_is_closed_even_when_the_write_fails(tmp_path: Path):
    fig = plt.figure(figsize=(2, 1))
    try:
        with pytest.raises(FileNotFoundError):
            save_figure(fig, tmp_path / "missing" / "plot.png")
        assert fig.number not in plt.get_fignums()
    finally:
        plt.close(fig)


def test_a_figure_outside_pyplot_can_be_saved_again(tmp_path: Path):
    fig = small_figure()
    save_figure(fig, tmp_path / "one.png")
    save_figure(fig, tmp_path / "two.svg")
    assert listing(tmp_path) == ["one.png", "two.svg"]
