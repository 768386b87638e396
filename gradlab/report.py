"""A study report: one self-contained HTML file (styles and figures inline, nothing fetched
from the network) with the comparison table and its statistics, the plots, each group's
per-layer gradient health, its config and command lines, and the versions that ran.

The table's cells are :func:`gradlab.exports.display`'s, so the report shows what
``gradlab compare`` prints. Pure pandas and matplotlib: never imports torch or rich.
"""

from __future__ import annotations

import base64
import html
import io
import shlex
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

import gradlab
from gradlab import exports
from gradlab.errors import GradlabError, RunFolderError
from gradlab.inspection import layer_table, load_alerts, load_grads
from gradlab.reading import SWEEP_FILE, CompareError
from gradlab.runlog import CONFIG_FILE, GRADS_FILE, read_json, read_meta, write_text_atomically
from gradlab.yamlfile import read_small_text_file

SVG_LIMIT = 1_500_000
"""Bytes of SVG above which a figure is embedded as a PNG instead (long runs: many points)."""
TEXT_COLUMNS = ("run", "name", "edits", "dataset", "status", "seed", "test")
VERSIONS = (
    "gradlab_version",
    "torch_version",
    "python_version",
    "platform",
    "git",
    "device",
    "device_name",
    "engine",
)
"""The keys of meta.json the report lists, with how many runs had each value."""
HEALTH = {  # column of layer_health: (statistic of grads.csv, value over the run)
    "norm_first": ("norm", "first"),
    "norm_last": ("norm", "last"),
    "ratio_first": ("update_ratio", "first"),
    "ratio_last": ("update_ratio", "last"),
    "zero_frac_last": ("zero_frac", "last"),
    "max_abs_max": ("max_abs", "max"),
    "weight_norm_last": ("weight_norm", "last"),
}
WIDE = 12  # columns from which a printed comparison turns its headers upright
DEAD_HINT = 0.5  # a zero fraction from here on is flagged: dead ReLU units (or masked entries)


def _esc(value: Any) -> str:
    """``value`` as HTML text: all that users wrote (names, configs, paths) passes here."""
    return html.escape(str(value), quote=True)


def write_report(
    table: pd.DataFrame,
    out: str | Path,
    *,
    spread: str = "ci",
    power: bool = False,
    panels: str | list[str] | None = None,
    title: str | None = None,
    command: list[str] | None = None,
) -> Path:
    """Write :func:`build_report` to ``out`` atomically (a failure leaves an existing file
    as it was).

    Raises:
        CompareError: ``out`` cannot be written, a bad ``spread`` or an unknown panel.
    """
    out = Path(out)
    text = build_report(
        table, spread=spread, power=power, panels=panels, title=title, command=command
    )
    try:
        write_text_atomically(out, text)
    except OSError as exc:
        reason = " ".join(str(exc.strerror or exc).split())
        raise CompareError(f"--output {out}: cannot write ({reason})") from None
    return out


def build_report(
    table: pd.DataFrame,
    *,
    spread: str = "ci",
    power: bool = False,
    panels: str | list[str] | None = None,
    title: str | None = None,
    command: list[str] | None = None,
) -> str:
    """The HTML text of the report on a comparison table.

    Args:
        table: from :func:`gradlab.compare.comparison` (``attrs["paths"]`` names each
            row's runs).
        spread: what ± shows in the table: ``ci`` or ``std`` (as in ``gradlab compare``).
        power: show ``seeds_needed``.
        panels: the plot's panels: names from :data:`gradlab.plots.PANELS` (a list, or
            one comma-separated string); None = :data:`gradlab.plots.DEFAULT_PANELS`.
        title: the page's title; None = the sweep's name, when the runs come from one.
        command: the command line that made the report, shown in its header.
    """
    from gradlab.plots import check_panels

    if spread not in ("ci", "std"):
        raise CompareError(f"--spread {spread!r}: use ci or std")
    panels = check_panels(panels)
    paths = [[str(p) for p in row] for row in table.attrs.get("paths") or [[]] * len(table)]
    runs = [p for row in paths for p in row]
    metas = {p: _meta(p) for p in runs}
    sweeps = _sweeps(runs)
    if title is None:
        title = "gradlab report" + (f": {sweeps[0][1]}" if len(sweeps) == 1 else "")
    labels, colors = _labels_and_colors(table)
    grouped = bool(table.attrs.get("grouped"))
    word = "group" if grouped else "run"
    when = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %z")
    summary = _count(len(runs), "run") + (f" in {_count(len(table), 'group')}" if grouped else "")
    summary += f" · gradlab {gradlab.__version__} · {when}"
    header = [f"<h1>{_esc(title)}</h1>", f'<p class="summary">{_esc(summary)}</p>']
    if command:
        header.append(f'<p class="muted">made with <code>{_esc(shlex.join(command))}</code></p>')
    for folder, name, source in sweeps:
        header.append(
            f'<p class="muted">sweep <b>{_esc(name)}</b> from <code>{_esc(source)}</code> '
            f"in <code>{_esc(folder)}</code></p>"
        )
    nav = "".join(
        f'<li><a href="#{key}">{text}</a></li>'
        for key, text in (
            ("comparison", "Comparison"),
            ("plots", "Plots"),
            ("groups", f"{word.title()}s: gradient health, configs, commands"),
            ("environment", "Versions"),
        )
    )
    groups = "".join(
        _group_section(i, row, labels[i], colors[i], paths[i], metas, i == _baseline(table))
        for i, row in enumerate(table.to_dict("records"))
    )
    body = [
        f"<header>{''.join(header)}</header>",
        f'<nav aria-label="sections"><ul>{nav}</ul></nav>',
        _section("comparison", "Comparison", _comparison(table, spread, power, colors)),
        _section("plots", "Plots", _plots(table, panels)),
        _section("groups", f"{word.title()}s", groups),
        _section("environment", "Versions", _versions(metas)),
    ]
    return PAGE.format(title=_esc(title), version=_esc(gradlab.__version__), body="\n".join(body))


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _section(key: str, heading: str, content: str) -> str:
    return f'<section class="part" id="{key}">\n<h2>{_esc(heading)}</h2>\n{content}\n</section>'


def _baseline(table: pd.DataFrame) -> int | None:
    baseline = table.attrs.get("baseline")
    return None if baseline is None else int(baseline)


# --------------------------------------------------------------------------- comparison


def _comparison(table: pd.DataFrame, spread: str, power: bool, colors: list[str]) -> str:
    headers, rows, constants = exports.display(table, spread, power)
    marks = exports.significant(table)
    baseline = _baseline(table)
    parts = []
    if constants:
        items = (f"<span><b>{_esc(k)}:</b> {_esc(v)}</span>" for k, v in constants.items())
        parts.append(f'<p class="constants">{" · ".join(items)}</p>')
    head = "".join(f'<th scope="col"{_align(h)}><span>{_breakable(h)}</span></th>' for h in headers)
    body = []
    for i, (cells, mark) in enumerate(zip(rows, marks, strict=True)):
        classes = " ".join(
            c for c, on in (("significant", mark), ("baseline", i == baseline)) if on
        )
        tag = ' <span class="tag">baseline</span>' if i == baseline else ""
        key = f'<td><a href="#group-{i}">{_swatch(colors[i])}{i + 1}</a>{tag}</td>'
        tds = "".join(f"<td{_align(h)}>{_esc(c)}</td>" for h, c in zip(headers, cells, strict=True))
        body.append(f'<tr class="{classes}">{key}{tds}</tr>' if classes else f"<tr>{key}{tds}</tr>")
    wide = ' class="wide"' if len(headers) > WIDE else ""
    parts.append(
        f'<div class="scroll"><table id="comparison-table"{wide}>'
        f'<thead><tr><th scope="col">#</th>{head}</tr></thead>'
        f"<tbody>\n{chr(10).join(body)}\n</tbody></table></div>"
    )
    notes = exports.notes(table, spread)
    if baseline is not None:
        notes.append("bold rows: significantly different from the baseline (p_adjusted < 0.05)")
    for label, items in (
        ("left out (unreadable)", table.attrs.get("skipped") or []),
        ("not counted (repeats a newer run)", [a for a, _ in table.attrs.get("duplicates") or []]),
    ):
        if items:
            notes.append(f"{label}: " + "; ".join(str(i) for i in items))
    parts += [f'<p class="notes">{_esc(line)}</p>' for line in notes]
    return "\n".join(parts)


def _align(header: str) -> str:
    return "" if header in TEXT_COLUMNS else ' class="num"'


def _breakable(header: str) -> str:
    """``header`` escaped, with a line-break opportunity after each ``_`` and ``.`` (a
    printed page wraps ``final_test_accuracy``; a screen scrolls the table instead)."""
    return _esc(header).replace("_", "_<wbr>").replace(".", ".<wbr>")


def _swatch(color: str) -> str:
    return f'<span class="swatch" style="border-color:{_esc(color)}"></span>'


def _labels_and_colors(table: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Each row's legend label and colour (#rrggbb), as in the plots."""
    from gradlab.plots import row_colors, row_labels

    return [str(label) for label in row_labels(table)], [str(c) for c in row_colors(table)]


# --------------------------------------------------------------------------- figures


def _figure_uri(fig: Any) -> str:
    """``fig`` as a ``data:`` URI: SVG (small, sharp in print), or PNG when the SVG would
    be larger than :data:`SVG_LIMIT` (long runs: many points)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    mime = "image/svg+xml"
    if buffer.tell() > SVG_LIMIT:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=150)
        mime = "image/png"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def _figure(uri: str, alt: str, caption: str = "") -> str:
    text = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{_esc(alt)}">{text}</figure>'


def _plots(table: pd.DataFrame, panels: str | list[str] | None) -> str:
    from gradlab.plots import plot_comparison

    try:
        uri = _figure_uri(plot_comparison(table, None, panels=panels))
    except GradlabError as exc:  # e.g. no run folder left to read
        return f'<p class="warn">no plot: {_esc(exc)}</p>'
    return _figure(uri, "comparison plots: one line per row of the table, against step")


# --------------------------------------------------------------------------- groups


def _group_section(
    i: int,
    row: dict[str, Any],
    label: str,
    color: str,
    paths: list[str],
    metas: dict[str, dict[str, Any]],
    baseline: bool,
) -> str:
    tag = ' <span class="tag">baseline</span>' if baseline else ""
    facts = [label, f"{_count(len(paths), 'run')} counted"]
    facts += [f"{k} {row[k]}" for k in ("seed", "status") if row.get(k) is not None]
    parts = [
        f"<h3>{_swatch(color)}{i + 1}. {_esc(row.get('name'))}{tag}</h3>",
        f'<p class="muted">{_esc(" · ".join(str(f) for f in facts))}</p>',
        _health(paths, f"{row.get('name')}: per-layer gradient norm and update ratio"),
    ]
    commands = dict.fromkeys(_command(metas[p].get("command")) for p in paths)
    commands.pop(None, None)
    if commands:
        lines = "\n".join(_esc(c) for c in commands)
        parts.append(f"<h4>Command line{'s' if len(commands) > 1 else ''}</h4><pre>{lines}</pre>")
    if paths:
        config = _read_config(Path(paths[0]) / CONFIG_FILE)
        parts.append(
            f"<details><summary>{CONFIG_FILE} of <code>{_esc(Path(paths[0]).name)}</code>"
            f"</summary><pre>{_esc(config)}</pre></details>"
        )
        items = "".join(f"<li><code>{_esc(p)}</code></li>" for p in paths)
        parts.append(
            f"<details><summary>run folders ({len(paths)})</summary><ul>{items}</ul></details>"
        )
    return f'<section class="group" id="group-{i}">\n' + "\n".join(parts) + "\n</section>\n"


def _command(command: Any) -> str | None:
    if isinstance(command, list) and all(isinstance(c, str) for c in command):
        return shlex.join(command)
    return None if command is None else str(command)


def _health(paths: list[str], title: str) -> str:
    frames, missing = [], []
    for path in paths:
        try:
            grads = load_grads(path)
        except GradlabError as exc:
            missing.append(str(exc))
            continue
        if len(grads):
            frames.append(grads)
        else:
            missing.append(f"{path}: {GRADS_FILE} holds no checks yet")
    parts = ["<h4>Gradient health</h4>"]
    if frames:
        health = layer_health(frames)
        steps = sorted(set(pd.concat(frames)["step"]))
        parts.append(
            f'<p class="muted">per parameter, mean over {_count(len(frames), "run")}; checks '
            f"at steps {steps[0]:g} to {steps[-1]:g} ({_count(len(steps), 'check')})</p>"
        )
        parts.append(_health_table(health))
        parts.append(_figure(_layer_figure(frames), title))
    parts += [f'<p class="notes">no gradient statistics: {_esc(m)}</p>' for m in missing]
    if frames:  # without diagnostics, no alert could fire: "none" would say too much
        parts.append(_alerts(paths))
    return f'<div class="health">{"".join(parts)}</div>'


def layer_health(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """One row per parameter (in the order of grads.csv): the :data:`HEALTH` figures of each
    run's ``grads.csv``, averaged over the runs."""
    per_run = []
    for grads in frames:
        layers = layer_table(grads).set_index(["param", "stat"])
        per_run.append(
            pd.DataFrame(
                {k: layers[which].xs(stat, level="stat") for k, (stat, which) in HEALTH.items()}
            )
        )
    return pd.concat(per_run).groupby(level=0, sort=False).mean()


def _health_table(health: pd.DataFrame) -> str:
    def number(value: float) -> str:
        return "-" if pd.isna(value) else f"{value:.3g}"

    head = (
        "<tr><th>parameter</th><th class=num>grad norm, first → last</th>"
        "<th class=num>update ratio, first → last</th><th class=num>zero frac (last)</th>"
        "<th class=num>max |g|</th><th class=num>weight norm (last)</th></tr>"
    )
    rows = []
    for param, h in health.iterrows():
        zero = h["zero_frac_last"]
        warn = ' class="num warn"' if zero >= DEAD_HINT else ' class="num"'
        rows.append(
            f"<tr><td><code>{_esc(param)}</code></td>"
            f'<td class="num">{number(h["norm_first"])} → {number(h["norm_last"])}</td>'
            f'<td class="num">{number(h["ratio_first"])} → {number(h["ratio_last"])}</td>'
            f"<td{warn}>{'-' if pd.isna(zero) else f'{zero:.1%}'}</td>"
            f'<td class="num">{number(h["max_abs_max"])}</td>'
            f'<td class="num">{number(h["weight_norm_last"])}</td></tr>'
        )
    note = (
        '<p class="notes">zero frac: share of gradient entries exactly zero at the last check '
        f"(from {DEAD_HINT:.0%}, flagged: dead ReLU units, or masked entries); update ratio: "
        "||lr g|| / ||w||</p>"
    )
    return (
        f'<div class="scroll"><table class="layers"><thead>{head}</thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>{note}"
    )


def _layer_figure(frames: list[pd.DataFrame]) -> str:
    """Each parameter's gradient norm and update ratio against step (mean over the runs),
    as a data URI. Made outside pyplot (a notebook's backend is left alone)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = ["norm", "update_ratio"]
    grads = pd.concat(frames).groupby(["param", "step"], sort=False)[columns].mean()
    fig = Figure(figsize=(8.5, 2.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    # placed by hand: constrained layout would double the time these small figures take
    fig.subplots_adjust(left=0.08, right=0.84, bottom=0.17, top=0.88, wspace=0.28)
    for param, checks in grads.reset_index().groupby("param", sort=False):
        checks = checks.sort_values("step")
        marker = "o" if len(checks) <= 30 else None
        for ax, column in zip(axes, columns, strict=True):
            ax.plot(checks["step"], checks[column], label=param, marker=marker, ms=2.5, lw=1.2)
    for ax, column, name in zip(axes, columns, ("gradient norm", "update ratio"), strict=True):
        ax.set_title(f"{name} (mean over runs)", fontsize=9, y=1, pad=4)  # y: no auto-place
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(which="both", labelsize=7)
        ax.grid(alpha=0.3)
        if (grads[column] > 0).any():
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(_plain_log_formatter())
            ax.yaxis.set_minor_formatter(_plain_log_formatter(labelOnlyBase=False))
    fig.legend(*axes[0].get_legend_handles_labels(), loc="center right", fontsize=7)
    return _figure_uri(fig)


def _plain_log_formatter(**options: Any) -> Any:
    """matplotlib's choice of the log ticks to label, written as plain numbers (``0.05``,
    not 5x10^-2): shorter, and no mathtext to lay out (half the time of a small figure)."""
    from matplotlib.ticker import LogFormatter

    class Plain(LogFormatter):
        def __call__(self, x: float, pos: int | None = None) -> str:
            return f"{x:.3g}" if super().__call__(x, pos) else ""

    return Plain(**options)


def _alerts(paths: list[str]) -> str:
    frames = []
    for path in paths:
        try:
            alerts = load_alerts(path)
        except GradlabError:
            continue
        if len(alerts):
            frames.append(alerts.assign(run=path))
    if not frames:
        return '<p class="muted">alerts: none</p>'
    alerts = pd.concat(frames, ignore_index=True)
    counts = alerts.groupby(["alert", "param"], sort=False, dropna=False).agg(
        count=("step", "size"),
        runs=("run", "nunique"),
        first=("step", "min"),
        message=("message", "first"),
    )
    rows = "".join(
        f"<tr><td>{_esc(alert)}</td><td><code>{_esc(param)}</code></td>"
        f'<td class="num">{c["count"]}</td><td class="num">{c["runs"]} of {len(paths)}</td>'
        f'<td class="num">{c["first"]:g}</td><td class="wrap">{_esc(c["message"])}</td></tr>'
        for (alert, param), c in counts.iterrows()
    )
    return (
        '<h4>Alerts</h4><div class="scroll"><table class="alerts"><thead><tr><th>alert</th>'
        "<th>parameter</th><th class=num>count</th><th class=num>runs</th>"
        f"<th class=num>first step</th><th>first message</th></tr></thead><tbody>{rows}</tbody>"
        "</table></div>"
    )


# --------------------------------------------------------------------------- run folders


def _meta(path: str) -> dict[str, Any]:
    try:
        return read_meta(path)
    except GradlabError:
        return {}


def _read_config(path: Path) -> str:
    """A run's config.yaml as written (only a small regular file is read: never a hang)."""
    try:
        return read_small_text_file(path, error=RunFolderError)
    except GradlabError as exc:
        return f"({exc})"


def _sweeps(runs: list[str]) -> list[tuple[str, str, str]]:
    """(folder, name, source file) of each sweep whose folder holds some of the runs."""
    found = []
    for folder in dict.fromkeys(str(Path(p).parent) for p in runs):
        if (Path(folder) / SWEEP_FILE).is_file():
            try:
                sweep = read_json(Path(folder) / SWEEP_FILE)
            except GradlabError:
                continue
            found.append((folder, str(sweep.get("name", "?")), str(sweep.get("source", "?"))))
    return found


def _versions(metas: dict[str, dict[str, Any]]) -> str:
    rows = []
    for key in VERSIONS:
        counts = Counter(_version(meta.get(key)) for meta in metas.values())
        counts.pop(None, None)
        if not counts:
            continue
        text = "; ".join(v if len(counts) == 1 else f"{v} ({n} runs)" for v, n in counts.items())
        warn = ' class="warn"' if len(counts) > 1 else ""
        rows.append(f"<tr><th>{_esc(key)}</th><td{warn}>{_esc(text)}</td></tr>")
    started = sorted(str(m["started"]) for m in metas.values() if m.get("started"))
    if started:
        text = started[0] if started[0] == started[-1] else f"{started[0]} to {started[-1]}"
        rows.append(f"<tr><th>started</th><td>{_esc(text)}</td></tr>")
    if not rows:
        return '<p class="muted">no meta.json found</p>'
    return (
        f'<div class="scroll"><table class="versions"><tbody>{"".join(rows)}</tbody></table>'
        '</div><p class="notes">from the runs\' meta.json; a value that differs between runs '
        "is flagged with its count</p>"
    )


def _version(value: Any) -> str | None:
    if isinstance(value, dict):  # git: {commit, dirty}
        commit = value.get("commit")
        return None if commit is None else f"{commit}{' (dirty)' if value.get('dirty') else ''}"
    return None if value is None else str(value)


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
.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
td.wrap {{ white-space: normal; min-width: 16rem; }}
tr.significant td {{ font-weight: 700; }}
tr.baseline td {{ background: #eaf2fb; }}
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
  #comparison-table {{ font-size: 7.5pt; }}
  table.wide thead th {{ vertical-align: bottom; }}
  table.wide thead th > span {{ display: inline-block; white-space: nowrap;
    writing-mode: vertical-rl; transform: rotate(180deg); }}
  th, td {{ white-space: normal; overflow-wrap: break-word; padding: .15rem .25rem; }}
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
