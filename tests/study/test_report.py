"""gradlab report: one self-contained HTML page on a study of real, tiny runs. The text is
checked here; a headless Chromium (Playwright) loads it, lays it out and prints it."""

from __future__ import annotations

import base64
import errno
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from conftest import tiny

from gradlab import report, runlog
from gradlab.config import config_from_dict
from gradlab.errors import CompareError
from gradlab.report import build_report, write_report
from gradlab.report.health import health_table, layer_health
from gradlab.study import exports
from gradlab.study.compare import comparison
from gradlab.train import train

HOSTILE_ROOT = "<script>alert(1)</script>"
HOSTILE_FOLDER = "<img src=x onerror=alert(1)>"  # a run folder renamed by hand
LONG = "runs/" + "a-long-folder-name/" * 8  # a command line wider than a printed page
COMMAND = ["gradlab", "train", "my study.yaml", "--set", "seed=0", "--runs-dir", LONG]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """Three groups: plain (2 seeds, a vanishing alert on every check), clipped (2 seeds),
    and fast (1 seed, diagnostics off, a hostile data.root, a hostile folder name)."""
    runs = tmp_path_factory.mktemp("study")
    checks = {"every": 4}
    for seed in (0, 1):
        alerting = {**checks, "vanishing_norm": 1e3, "patience": 1}
        train(
            config_from_dict(tiny(name="plain", seed=seed, diagnostics=alerting)),
            runs,
            command=COMMAND,
        )
        clipped = tiny(
            name="clipped",
            seed=seed,
            diagnostics=checks,
            edit=[{"type": "clip_norm", "max_norm": 0.1}],
        )
        train(config_from_dict(clipped), runs, command=COMMAND)
    fast = tiny(
        name="fast", optim={"lr": 0.5}, diagnostics={"every": 0}, data={"root": HOSTILE_ROOT}
    )
    result = train(config_from_dict(fast), runs, command=COMMAND)
    result.path.rename(result.path.with_name(HOSTILE_FOLDER))
    return runs


@pytest.fixture(scope="module")
def table(study: Path) -> pd.DataFrame:
    return comparison([study], baseline="plain")


REPORT_COMMAND = ["gradlab", "report", "runs/", "-o", "report.html"]


@pytest.fixture(scope="module")
def page(study: Path, tmp_path_factory) -> str:
    """The report's HTML, made in a fresh interpreter: which shows on the way that making a
    report imports neither torch nor rich (the comparison code starts fast)."""
    out = tmp_path_factory.mktemp("made") / "report.html"
    code = (
        "import sys\n"
        "from gradlab.study.compare import comparison\n"
        "from gradlab.report import write_report\n"
        f"table = comparison([{str(study)!r}], baseline='plain')\n"
        f"write_report(table, {str(out)!r}, command={REPORT_COMMAND!r})\n"
        "print(sorted({'torch', 'rich'} & set(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", "making a report imported " + done.stdout
    return out.read_text(encoding="utf-8")


class Page(HTMLParser):
    """Every start tag with its attributes, and the cells of the comparison table."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.headers: list[str] = []
        self.rows: list[tuple[str, list[str]]] = []  # (class, cell texts)
        self._where: list[str] = []
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "table" and attrs.get("id") == "comparison-table":
            self._where = ["table"]
        elif self._where and tag in ("thead", "tbody"):
            self._where.append(tag)
        elif self._where and tag == "tr" and self._where[-1] == "tbody":
            self.rows.append((attrs.get("class") or "", []))
        elif self._where and tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if self._cell is not None and tag in ("td", "th"):
            text = "".join(self._cell)
            if self._where[-1] == "thead":
                self.headers.append(text)
            else:
                self.rows[-1][1].append(text)
            self._cell = None
        elif self._where and tag in ("thead", "tbody"):
            self._where.pop()
        elif self._where and tag == "table":
            self._where = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


# --------------------------------------------------------------------------- the text


def test_the_table_has_one_row_per_group_with_the_cells_compare_prints(table, page):
    headers, rows, constants = exports.display(table)
    parsed = Page(page)
    assert len(table) == 3 and len(parsed.rows) == 3
    assert parsed.headers == ["#", *headers]
    assert [cells[1:] for _, cells in parsed.rows] == rows
    assert [cells[0].split()[0] for _, cells in parsed.rows] == ["1", "2", "3"]
    names = {row["name"] for row in table.to_dict("records")}
    assert names == {"plain", "clipped", "fast"}
    for i, (classes, _) in enumerate(parsed.rows):
        assert ("baseline" in classes) == (i == table.attrs["baseline"])
        assert ("significant" in classes) == exports.significant(table)[i]
    text = unescape(page)
    for key, value in constants.items():
        assert f"{key}:</b> {value}" in text
    for line in exports.notes(table):
        assert line in text
    assert "5 runs in 3 groups" in text and "gradlab report runs/ -o report.html" in text


def test_the_page_is_self_contained(page):
    tags = Page(page).tags
    for tag, attrs in tags:
        for name in ("src", "href"):
            value = attrs.get(name)
            if value is not None:
                assert value.startswith(("data:", "#")), (tag, value[:80])
                assert "http:" not in value and "https:" not in value
    scripts = [attrs for tag, attrs in tags if tag == "script"]
    assert scripts == [{}]  # our own inline one: it opens the configs for print
    links = [attrs for tag, attrs in tags if tag == "link"]
    assert all(a["href"].startswith("data:") for a in links)
    style = page[page.index("<style>") : page.index("</style>")]
    assert "url(" not in style and "@import" not in style and "@font-face" not in style


def test_every_image_decodes(page):
    from matplotlib.image import imread

    sources = [attrs["src"] for tag, attrs in Page(page).tags if tag == "img"]
    assert len(sources) == 3  # the comparison, and the layers of the two groups with grads.csv
    for src in sources:
        head, _, data = src.partition(",")
        blob = base64.b64decode(data, validate=True)
        if head == "data:image/svg+xml;base64":
            svg = ET.fromstring(blob)
            assert svg.tag == "{http://www.w3.org/2000/svg}svg"
            assert float(svg.get("width").removesuffix("pt")) > 0
        else:
            assert head == "data:image/png;base64"
            assert imread(io.BytesIO(blob), format="png").shape[1] > 0


def test_hostile_text_is_escaped(page):
    assert HOSTILE_ROOT not in page and HOSTILE_FOLDER not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the config and the table
    assert "&lt;img src=x onerror=alert(1)&gt;" in page  # the run folder's path
    assert page.count("<script") == 1 and page.count("<img ") == 3


def test_each_group_shows_its_gradient_health_config_and_commands(page):
    text = unescape(page)
    assert text.count('class="group"') == 3
    assert text.count("per parameter, mean over 2 runs; checks at steps 1 to 12 (5 checks)") == 2
    assert text.count("fc1.weight</code></td>") >= 2
    assert "no gradient statistics:" in text and "diagnostics.every: 0" in text
    assert "vanishing" in text and "alerts: none" in text
    assert shlex.join(COMMAND) in text and "'my study.yaml'" in text
    assert text.count("config.yaml of") == 3 and "hidden: 16" in text
    assert "torch_version" in text and "python_version" in text


def test_layer_health_averages_first_and_last_over_the_runs():
    def grads(norms: list[float], zero: float) -> pd.DataFrame:
        rows = []
        for step, norm in zip((10, 20, 30), norms, strict=True):
            for param, scale in (("fc1.weight", 1.0), ("fc2.bias", 10.0)):
                stats = dict(mean=0, std=1, norm=norm * scale, max_abs=norm, zero_frac=zero)
                rows.append(
                    {
                        "step": step,
                        "param": param,
                        **stats,
                        "update_ratio": 0.01 * step,
                        "weight_norm": 2.0,
                    }
                )
        return pd.DataFrame(rows)

    health = layer_health([grads([1.0, 5.0, 2.0], 0.5), grads([3.0, 1.0, 4.0], 0.1)])
    assert list(health.index) == ["fc1.weight", "fc2.bias"]
    first = health.loc["fc1.weight"]
    assert first["norm_first"] == pytest.approx(2.0) and first["norm_last"] == pytest.approx(3.0)
    assert first["max_abs_max"] == pytest.approx(4.5)  # (5 + 4) / 2
    assert first["zero_frac_last"] == pytest.approx(0.3)
    assert first["ratio_first"] == pytest.approx(0.1) and first["ratio_last"] == pytest.approx(0.3)
    assert health.loc["fc2.bias", "norm_last"] == pytest.approx(30.0)


def test_health_numbers_keep_one_precision_per_column():
    """Not ``%g`` (``0.05 → 0.0343``, ``0.5 → 0.25``): every number of a column at one
    precision, as in the comparison (:func:`gradlab.study.numbers.column_format`)."""
    health = pd.DataFrame(
        {
            "norm_first": [0.05, 0.5],
            "norm_last": [0.0343, 0.25],
            "ratio_first": [0.002, 0.01],
            "ratio_last": [0.0015, 0.0012],
            "zero_frac_last": [0.0, 0.625],
            "max_abs_max": [3.0, 0.125],
            "weight_norm_last": [12.5, 2.0],
        },
        index=["fc1.weight", "fc2.bias"],
    )
    rows = [
        [unescape(c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
        for row in re.findall(r"<tr>(<td>.*?)</tr>", health_table(health))
    ]
    assert [row[1:] for row in rows] == [
        ["0.0500 → 0.0343", "0.00200 → 0.00150", "0.0%", "3.000", "12.50"],
        ["0.5000 → 0.2500", "0.01000 → 0.00120", "62.5%", "0.125", "2.00"],
    ]


def test_an_unwritable_output_is_one_line_and_leaves_the_old_file(table, tmp_path, monkeypatch):
    monkeypatch.setattr(report.build, "build_report", lambda *args, **options: "<p>new</p>")
    with pytest.raises(CompareError) as missing:
        write_report(table, tmp_path / "no-such-folder" / "report.html")
    assert str(missing.value).startswith(f"{tmp_path}") and "\n" not in str(missing.value)

    out = tmp_path / "report.html"
    out.write_text("the old report")

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(runlog.os, "fsync", disk_full)
    with pytest.raises(CompareError, match="cannot write .No space left on device"):
        write_report(table, out)
    assert out.read_text() == "the old report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_a_bad_spread_or_panel_is_refused(table):
    with pytest.raises(CompareError, match="^spread 'iqr': use ci or std"):
        build_report(table, spread="iqr")
    with pytest.raises(CompareError, match="^panels nope: unknown panel"):
        build_report(table, panels=["train_loss", "nope"])


# --------------------------------------------------------------------------- a real browser


def chromium_executable() -> str | None:
    """``$GRADLAB_CHROMIUM``, or a Chromium or Chrome on the PATH; None: Playwright's own."""
    if os.environ.get("GRADLAB_CHROMIUM"):
        return os.environ["GRADLAB_CHROMIUM"]
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed: pip install -e .[dev]"
    )
    executable = chromium_executable()
    with sync_api.sync_playwright() as playwright:
        try:
            # --no-sandbox: Chromium refuses to run as root (containers, CI) otherwise
            browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        except sync_api.Error:
            if executable is not None:
                raise
            pytest.skip("no Chromium found: apt-get install chromium, or set GRADLAB_CHROMIUM")
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def report_file(page: str, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    out.write_text(page, encoding="utf-8")
    return out


def open_page(browser, report_file: Path, width: int):
    """The report in a new page ``width`` pixels wide, and what went wrong while loading it."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    trouble: list[str] = []
    url = report_file.as_uri()
    page.on("console", lambda m: m.type == "error" and trouble.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: trouble.append(f"page error: {e}"))
    page.on("dialog", lambda d: trouble.append(f"dialog: {d.message}") or d.dismiss())
    page.on(
        "request",
        lambda r: r.url == url or r.url.startswith("data:") or trouble.append(f"request: {r.url}"),
    )
    page.goto(url, wait_until="load")
    return page, trouble


def overflow(page, selector: str) -> list[int]:
    """How many pixels each element matching ``selector`` is wider than its box."""
    return page.eval_on_selector_all(selector, "els => els.map(e => e.scrollWidth - e.clientWidth)")


def test_the_page_loads_cleanly_in_chromium(browser, report_file: Path, table):
    page, trouble = open_page(browser, report_file, 1366)
    assert trouble == []
    assert page.locator("#comparison-table tbody tr").count() == len(table) == 3
    images = page.eval_on_selector_all(
        "img", "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])"
    )
    assert len(images) == 3 and all(done and w > 0 and h > 0 for done, w, h in images), images
    svgs = page.eval_on_selector_all(
        "svg",
        "els => els.map(e => e.getBoundingClientRect().width * e.getBoundingClientRect().height)",
    )
    assert all(area > 0 for area in svgs)
    page.close()


@pytest.mark.parametrize("width", [1366, 390])
def test_the_page_never_scrolls_sideways(browser, report_file: Path, width: int):
    """On a laptop and on a phone, wide tables scroll inside their own box, not the page."""
    page, trouble = open_page(browser, report_file, width)
    assert trouble == []
    assert overflow(page, "html") == [0]
    assert page.eval_on_selector("main", "e => e.getBoundingClientRect().right") <= width
    page.close()


def test_the_printed_page_cuts_nothing_off(browser, report_file: Path):
    """Printed, nothing scrolls: every table and block fits the page's width (portrait A4
    or Letter is about 700 CSS pixels wide; the comparison gets a landscape page)."""
    page, trouble = open_page(browser, report_file, 700)
    page.emulate_media(media="print")
    outside = ":not(#comparison) > .scroll, pre, figure"
    assert set(overflow(page, outside)) == {0}
    assert page.eval_on_selector_all("img", "els => els.map(e => e.width <= 700)") == [True] * 3
    config = page.locator("details pre").first  # the configs print even when collapsed
    assert config.bounding_box() is not None and config.bounding_box()["height"] > 0
    page.set_viewport_size({"width": 960, "height": 700})  # a landscape page
    assert overflow(page, "#comparison .scroll") == [0]
    assert trouble == []
    page.close()


@pytest.fixture(scope="module")
def wide_file(study: Path, tmp_path_factory) -> Path:
    """The report of the study against a baseline, with ``seeds_needed``: a table wider than
    a laptop's screen (deltas with their intervals, p-values, tests, counts)."""
    out = tmp_path_factory.mktemp("wide") / "report.html"
    out.write_text(build_report(comparison([study], baseline="plain"), power=True))
    return out


def test_the_row_names_stay_in_view_when_a_wide_table_scrolls(browser, wide_file: Path):
    page, trouble = open_page(browser, wide_file, 1366)
    box = page.locator("#comparison .scroll")
    assert page.locator("#comparison-table thead th").count() > 15
    assert box.evaluate("e => e.scrollWidth - e.clientWidth") > 100  # it does scroll
    names = page.locator("#comparison-table tbody td.stick")
    assert names.count() == 3 and names.first.inner_text() in ("plain", "clipped", "fast")
    edits = page.locator("#comparison-table tbody td:nth-child(3)").first  # after the name
    box.evaluate("e => { e.scrollLeft = e.scrollWidth; }")
    page.wait_for_timeout(50)
    frame = box.bounding_box()
    assert box.evaluate("e => e.scrollLeft") > 100
    assert edits.bounding_box()["x"] + edits.bounding_box()["width"] < frame["x"] + 200
    for cells in (page.locator("#comparison-table tbody td.key"), names):
        for i in range(cells.count()):
            cell = cells.nth(i).bounding_box()
            assert frame["x"] <= cell["x"] and cell["x"] + cell["width"] <= frame["x"] + 400
            # and on top, opaque: what shows at its centre is the cell, not what scrolled under
            on_top = page.evaluate(
                "([x, y]) => document.elementFromPoint(x, y).closest('td')?.className",
                [cell["x"] + cell["width"] / 2, cell["y"] + cell["height"] / 2],
            )
            assert on_top in ("key", "text stick"), on_top
    backgrounds = names.evaluate_all("els => els.map(e => getComputedStyle(e).backgroundColor)")
    assert all(b.startswith("rgb(") for b in backgrounds), backgrounds  # no alpha: opaque
    assert trouble == []
    page.close()


LINES = """els => els.map(e => {
  const range = document.createRange();
  range.selectNodeContents(e);
  const lines = new Set([...range.getClientRects()].map(r => Math.round(r.top))).size;
  return [e.textContent, lines, range.getBoundingClientRect().height,
          parseFloat(getComputedStyle(e).lineHeight)];
})"""


@pytest.mark.parametrize("media", ["screen", "print"])
def test_numbers_never_wrap(browser, wide_file: Path, media: str):
    """``0.301 ± 0.030`` on one line, never ``0.301 / ± / 0.030``: on a laptop's screen,
    and printed on a landscape page (the table then fits the page whole)."""
    page, trouble = open_page(browser, wide_file, 1366 if media == "screen" else 960)
    if media == "print":
        page.emulate_media(media="print")
        page.set_viewport_size({"width": 960, "height": 700})  # landscape Letter; A4 is wider
        assert overflow(page, "#comparison .scroll") == [0]
    cells = page.eval_on_selector_all("#comparison-table tbody td.num", LINES)
    assert len(cells) > 30 and any(" ± " in text for text, *_ in cells)
    assert any(" [" in text for text, *_ in cells)  # the deltas' intervals
    for text, lines, height, line_height in cells:
        assert lines == 1 and height <= line_height, (media, text, lines, height)
    assert trouble == []
    page.close()


def test_the_report_command_writes_the_page_and_refuses_bad_input(study: Path, tmp_path: Path):
    from typer.testing import CliRunner

    from gradlab.cli import app

    runner = CliRunner()
    out = tmp_path / "study.html"
    result = runner.invoke(app, ["report", str(study), "--baseline", "plain", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"report written to {out}"
    html = out.read_text()
    assert "gradlab report" in html and "delta.<wbr>final_<wbr>test_<wbr>accuracy" in html
    kept = out.read_text()
    for args, message in [
        (["--panels", "train_loss,nope"], "--panels nope: unknown panel"),
        (["--columns", "nothing"], "--columns 'nothing': unknown column"),
        (["--baseline", "nobody"], "--baseline 'nobody' matches no row"),
        (["-o", str(tmp_path / "missing" / "r.html")], "cannot write"),
        (["-o", str(tmp_path)], "is a directory"),
    ]:
        bad = runner.invoke(app, ["report", str(study), "-o", str(out), *args])
        assert bad.exit_code == 2, (args, bad.output)
        (line,) = bad.stderr.strip().splitlines()
        assert line.startswith("error: ") and message in line, line
    assert out.read_text() == kept  # nothing already written is lost
