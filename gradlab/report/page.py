"""The HTML of a study report: the page template with its inline styles, and the small
building blocks the report's sections are made of (escaped text, sections, colour swatches,
figures inlined as ``data:`` URIs). Nothing is fetched from the network.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

SVG_LIMIT = 1_500_000
"""Bytes of SVG above which a figure is embedded as a PNG instead (long runs: many points)."""


def esc(value: Any) -> str:
    """``value`` as HTML text: all that users wrote (names, configs, paths) passes here."""
    return html.escape(str(value), quote=True)


def count(n: int, word: str) -> str:
    """``n`` and ``word``, plural unless one: ``1 run``, ``3 runs``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def section(key: str, heading: str, content: str) -> str:
    """A top-level part of the page, ``key`` its anchor."""
    return f'<section class="part" id="{key}">\n<h2>{esc(heading)}</h2>\n{content}\n</section>'


def swatch(color: str) -> str:
    """A small square of a row's colour (as in the plots)."""
    return f'<span class="swatch" style="border-color:{esc(color)}"></span>'


def figure_uri(fig: Any) -> str:
    """``fig`` as a ``data:`` URI: SVG (small, sharp in print), or PNG when the SVG would
    be larger than :data:`SVG_LIMIT` (long runs: many points). The SVG is given up as soon
    as it passes the limit, not written to its end first. Its text is SVG text in the
    page's sans-serif font, not glyphs drawn as paths: half the time, a third smaller, and
    still no font to fetch."""
    import matplotlib

    buffer: io.BytesIO = _LimitedBuffer(SVG_LIMIT)
    mime = "image/svg+xml"
    try:
        with matplotlib.rc_context({"svg.fonttype": "none"}):
            fig.savefig(buffer, format="svg", metadata={"Date": None})
    except _TooLarge:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=150)
        mime = "image/png"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


class _TooLarge(Exception):
    """The SVG passed :data:`SVG_LIMIT`."""


class _LimitedBuffer(io.BytesIO):
    """A buffer that refuses to grow past ``limit`` bytes (raises :class:`_TooLarge`)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def write(self, data: Any) -> int:
        written = super().write(data)
        if self.tell() > self.limit:
            raise _TooLarge
        return written


def figure(uri: str, alt: str, caption: str = "") -> str:
    """An inline image (``uri`` from :func:`figure_uri`) with its alt text and caption."""
    text = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{esc(alt)}">{text}</figure>'


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="gradlab {version}">
<link rel="icon" href="data:,">
<title>{title}</title>
<style>
:root {{ --fg: #1d232a; --muted: #59636e; --line: #d5dae0; --soft: #f3f5f7;
  --accent: #235f9c; --warn: #a4461a; }}
* {{ box-sizing: border-box; }}
html {{ -webkit-text-size-adjust: 100%; }}
body {{ margin: 0; color: var(--fg); background: #fff;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; }}
main {{ max-width: 1240px; margin: 0 auto; padding: 1.2rem 1.5rem 3rem; }}
h1 {{ font-size: 1.6rem; margin: .2rem 0; }}
h2 {{ font-size: 1.3rem; margin: 2.2rem 0 .6rem; border-bottom: 2px solid var(--line); }}
h3 {{ font-size: 1.1rem; margin: 1.8rem 0 .2rem; }}
h4 {{ font-size: .95rem; margin: 1rem 0 .3rem; }}
p {{ margin: .3rem 0; }}
.summary, .muted, .notes, figcaption {{ color: var(--muted); }}
.notes {{ font-size: .85rem; }}
.warn {{ color: var(--warn); font-weight: 600; }}
code, pre {{ font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono",
  monospace; font-size: .85em; }}
code {{ overflow-wrap: anywhere; }}
pre {{ background: var(--soft); padding: .6rem .8rem; overflow-x: auto; border-radius: 4px; }}
nav ul {{ list-style: none; padding: 0; margin: .8rem 0; display: flex; flex-wrap: wrap;
  gap: .3rem 1.2rem; }}
a {{ color: var(--accent); }}
.scroll {{ overflow-x: auto; width: fit-content; max-width: 100%; border: 1px solid var(--line);
  border-radius: 4px; margin: .4rem 0; }}
table {{ border-collapse: collapse; font-size: .88rem; }}
th, td {{ padding: .3rem .6rem; border-bottom: 1px solid var(--line); text-align: left;
  vertical-align: top; white-space: nowrap; }}
thead th {{ background: var(--soft); }}
tbody tr:last-child > * {{ border-bottom: none; }}
.num {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }}
td.wrap {{ white-space: normal; min-width: 16rem; }}
tr.significant td {{ font-weight: 700; }}
tr.baseline td {{ background: #eaf2fb; }}
/* the comparison: numbers on one line; names and edit labels wrap in a bounded width */
#comparison-table {{ border-collapse: separate; border-spacing: 0; }}
#comparison-table td.text > span {{ display: block; width: max-content; max-width: 13em;
  white-space: normal; overflow-wrap: break-word; }}
#comparison-table td.stick > span {{ max-width: 15em; }}
#comparison-table .key .tag {{ display: block; width: fit-content; margin: .15rem 0 0; }}
@media screen {{  /* the # and name columns stay in view (opaque), the rest scrolls under them */
  #comparison-table {{ --key: 5rem; }}
  #comparison-table .key {{ width: var(--key); min-width: var(--key); max-width: var(--key);
    padding-right: .2rem; left: 0; }}
  #comparison-table .key, #comparison-table .stick {{ position: sticky; z-index: 1;
    background: #fff; }}
  #comparison-table .stick {{ left: var(--key); box-shadow: inset -1px 0 var(--line); }}
  #comparison-table thead .key, #comparison-table thead .stick {{ z-index: 2;
    background: var(--soft); }}
  #comparison-table tr.baseline .key, #comparison-table tr.baseline .stick {{
    background: #eaf2fb; }}
}}
.tag {{ white-space: nowrap; font-size: .72rem; font-weight: 600; padding: 0 .35rem; margin-left: .3rem;
  border: 1px solid var(--accent); color: var(--accent); border-radius: 3px; }}
.swatch {{ display: inline-block; width: 0; height: .8em; border-left: .8em solid;
  margin-right: .4em; vertical-align: -.05em; }}
figure {{ margin: .8rem 0; }}
figure img {{ display: block; max-width: 100%; height: auto; }}
details {{ margin: .4rem 0; }}
summary {{ cursor: pointer; color: var(--accent); }}
ul {{ margin: .3rem 0; }}
@media (max-width: 640px) {{
  body {{ font-size: 14px; }}
  main {{ padding: .8rem; }}
  #comparison-table td.stick > span {{ max-width: 8em; }}  /* leave room to scroll */
}}
@media print {{
  @page {{ margin: 12mm; }}
  @page wide {{ size: landscape; }}
  header, #comparison {{ page: wide; }}  /* the title and the wide table: landscape */
  body {{ font-size: 9.5pt; }}
  main {{ max-width: none; padding: 0; }}
  nav {{ display: none; }}
  a {{ color: inherit; text-decoration: none; }}
  .part + .part {{ break-before: page; }}
  h2, h3, h4 {{ break-after: avoid; }}
  tr, figure, .health > p {{ break-inside: avoid; }}
  .scroll {{ overflow: visible; border: none; }}
  table {{ font-size: 8pt; }}
  /* as large as lets the numbers of a wide table fit a landscape page on one line each */
  #comparison-table {{ font-size: var(--print-size, 7.5pt); }}
  #comparison-table .key .tag {{ font-size: .85em; margin: .1em 0 0; }}
  #comparison-table td.text > span {{ width: auto; min-width: 5em; max-width: 12em; }}
  #comparison-table th, #comparison-table td {{ padding: .2em .3em; }}
  table.wide thead th {{ vertical-align: bottom; }}
  table.wide thead th > span {{ display: inline-block; white-space: nowrap;
    writing-mode: vertical-rl; transform: rotate(180deg); }}
  th, td {{ white-space: normal; overflow-wrap: break-word; padding: .15rem .25rem; }}
  td.num {{ white-space: nowrap; }}  /* 0.301 ± 0.030 on one line, never three */
  thead th, tr.baseline td {{ background: none; }}
  tr.baseline td:first-child {{ font-weight: 700; }}
  pre {{ background: none; border: 1px solid var(--line); overflow: visible;
    white-space: pre-wrap; overflow-wrap: anywhere; }}
  details::details-content {{ content-visibility: visible; display: contents; }}
  summary {{ color: inherit; }}
}}
</style>
</head>
<body>
<main>
{body}
</main>
<script>
// print the collapsed configs too
addEventListener("beforeprint", () => document.querySelectorAll("details").forEach(d => d.open = true));
</script>
</body>
</html>
"""
"""The page, to ``format`` with its ``title``, gradlab's ``version`` and the ``body`` (the
styles' braces are doubled)."""
