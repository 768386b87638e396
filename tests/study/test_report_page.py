"""The report's HTML building blocks (gradlab.report.page): escaping, plurals, sections,
swatches, figures inlined as data: URIs, and the page template."""

from __future__ import annotations

import base64
import io
import string
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest

from gradlab.report import page
from gradlab.report.page import PAGE, count, esc, figure, figure_uri, section, swatch
from gradlab.study.figures import new_figure


class Tags(HTMLParser):
    """Start and end tags with their attributes, and the text, in order."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.starts: list[tuple[str, dict[str, str | None]]] = []
        self.ends: list[str] = []
        self.text: list[str] = []
        self.decl: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.starts.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        self.ends.append(tag)

    def handle_data(self, data):
        self.text.append(data)

    def handle_decl(self, decl):
        self.decl.append(decl)


def small_figure():
    fig = new_figure(2.0, 1.5)
    fig.add_subplot().plot([1, 2, 3], [3, 1, 2])
    return fig


def payload(uri: str) -> tuple[str, bytes]:
    head, comma, data = uri.partition(",")
    assert comma and head.startswith("data:") and head.endswith(";base64")
    return head.removeprefix("data:").removesuffix(";base64"), base64.b64decode(data, validate=True)


# --------------------------------------------------------------------------- text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        ("a & b", "a &amp; b"),
        ('say "hi"', "say &quot;hi&quot;"),
        ("it's", "it&#x27;s"),
        ("&lt;", "&amp;lt;"),  # already-escaped text is escaped again: shown as written
        ("plain-text_0.5", "plain-text_0.5"),
        (3, "3"),
        (0.25, "0.25"),
        (None, "None"),
    ],
)
def test_esc_escapes_every_html_special_character(value, expected: str):
    assert esc(value) == expected


def test_escaped_text_reads_back_as_written_inside_an_attribute():
    hostile = """x" onload="alert(1)' <b>&"""
    parsed = Tags(f"<p title=\"{esc(hostile)}\" data-x='{esc(hostile)}'>{esc(hostile)}</p>")
    assert parsed.starts == [("p", {"title": hostile, "data-x": hostile})]
    assert "".join(parsed.text) == hostile


@pytest.mark.parametrize(
    ("n", "word", "expected"),
    [(0, "run", "0 runs"), (1, "run", "1 run"), (2, "run", "2 runs"), (12, "group", "12 groups")],
)
def test_count_is_plural_unless_one(n: int, word: str, expected: str):
    assert count(n, word) == expected


def test_a_section_has_its_anchor_and_escaped_heading_around_its_content():
    html = section("plots", "Plots & <notes>", "<p>inside</p>")
    assert html == (
        '<section class="part" id="plots">\n<h2>Plots &amp; &lt;notes&gt;</h2>\n'
        "<p>inside</p>\n</section>"
    )
    parsed = Tags(html)
    assert parsed.starts == [("section", {"class": "part", "id": "plots"}), ("h2", {}), ("p", {})]
    assert parsed.ends == ["h2", "p", "section"]


def test_a_swatch_is_an_empty_span_in_the_rows_colour():
    assert swatch("#1f77b4") == '<span class="swatch" style="border-color:#1f77b4"></span>'
    parsed = Tags(swatch('red" onclick="x'))  # a colour cannot leave its attribute
    assert parsed.starts == [("span", {"class": "swatch", "style": 'border-color:red" onclick="x'})]


# --------------------------------------------------------------------------- figures


def test_a_figure_is_inlined_as_an_svg_data_uri():
    mime, data = payload(figure_uri(small_figure()))
    assert mime == "image/svg+xml"
    root = ET.fromstring(data)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert float(root.get("width").removesuffix("pt")) == pytest.approx(2.0 * 72)
    assert b"<dc:date>" not in data  # no date: the same figure gives the same page


def test_a_figure_whose_svg_is_too_large_is_inlined_as_a_png(monkeypatch):
    from matplotlib.image import imread

    monkeypatch.setattr(page, "SVG_LIMIT", 0)
    mime, data = payload(figure_uri(small_figure()))
    assert mime == "image/png" and data.startswith(b"\x89PNG\r\n\x1a\n")
    image = imread(io.BytesIO(data), format="png")
    assert image.shape[:2] == (round(1.5 * 150), round(2.0 * 150))  # 150 dpi


def test_an_svg_up_to_the_limit_is_kept_whole_and_one_byte_more_is_a_png(monkeypatch):
    """The SVG is given up as soon as it passes the limit: the choice is the one a whole
    SVG would have given, and a kept SVG is all of it."""
    import matplotlib

    whole = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # as figure_uri writes it
        small_figure().savefig(whole, format="svg", metadata={"Date": None})
    monkeypatch.setattr(page, "SVG_LIMIT", whole.tell())
    mime, data = payload(figure_uri(small_figure()))
    assert mime == "image/svg+xml" and len(data) == whole.tell()  # (clip ids differ)
    assert data.rstrip().endswith(b"</svg>") and ET.fromstring(data) is not None
    monkeypatch.setattr(page, "SVG_LIMIT", whole.tell() - 1)
    assert payload(figure_uri(small_figure()))[0] == "image/png"


def test_figure_markup_escapes_its_alt_text_and_caption():
    uri = "data:image/png;base64,AAAA"
    html = figure(uri, 'a "plot" <of> runs', caption="lr & <b>clip</b>")
    assert html == (
        '<figure><img src="data:image/png;base64,AAAA" alt="a &quot;plot&quot; &lt;of&gt; runs">'
        "<figcaption>lr &amp; &lt;b&gt;clip&lt;/b&gt;</figcaption></figure>"
    )
    parsed = Tags(html)
    assert parsed.starts == [
        ("figure", {}),
        ("img", {"src": uri, "alt": 'a "plot" <of> runs'}),
        ("figcaption", {}),
    ]
    assert "".join(parsed.text) == "lr & <b>clip</b>"


def test_a_figure_without_a_caption_has_no_figcaption():
    assert figure("data:,", "alt") == '<figure><img src="data:," alt="alt"></figure>'


# --------------------------------------------------------------------------- the page


def test_the_page_takes_exactly_a_title_a_version_and_a_body():
    fields = {name for _, name, _, _ in string.Formatter().parse(PAGE) if name is not None}
    assert fields == {"title", "version", "body"}


def test_the_page_is_a_complete_html_document():
    html = PAGE.format(title="My &amp; study", version="1.2.3", body="<h1>hello</h1>")
    assert html.startswith('<!DOCTYPE html>\n<html lang="en">') and html.endswith("</html>\n")
    assert "{{" not in html and "}}" not in html  # the styles' braces were doubled
    parsed = Tags(html)
    assert parsed.decl == ["DOCTYPE html"]
    tags = [t for t, _ in parsed.starts]
    assert tags[:2] == ["html", "head"] and tags.count("html") == 1
    for tag in ("head", "title", "style", "body", "main", "script"):
        assert tags.count(tag) == 1 and parsed.ends.count(tag) == 1, tag
    assert parsed.ends[-1] == "html" and parsed.ends[-2] == "body"
    assert tags.index("head") < tags.index("title") < tags.index("style") < tags.index("body")
    assert tags.index("body") < tags.index("main") < tags.index("h1") < tags.index("script")
    metas = [a for t, a in parsed.starts if t == "meta"]
    assert {"charset": "utf-8"} in metas
    assert {"name": "generator", "content": "gradlab 1.2.3"} in metas
    assert "<title>My &amp; study</title>" in html  # the title goes in as given (escaped)
    (link,) = [a for t, a in parsed.starts if t == "link"]
    assert link["href"] == "data:,"  # no favicon fetched
    style = html[html.index("<style>") : html.index("</style>")]
    assert style.count("{") == style.count("}") > 50
    assert "url(" not in style and "@import" not in style


def test_figure_text_is_svg_text_in_a_sans_serif_font():
    """Text as <text> (not glyph paths): the page names no font file, and the fallback is
    the viewer's sans-serif."""
    mime, data = payload(figure_uri(small_figure()))
    assert mime == "image/svg+xml"
    svg = data.decode()
    assert "<text" in svg and "sans-serif" in svg and "@font-face" not in svg
