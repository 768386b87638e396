"""A study report: one self-contained HTML file (styles and figures inline, nothing fetched
from the network) with the comparison table and its statistics, the plots, each group's
per-layer gradient health, its config and command lines, and the versions that ran.

The table's cells are :func:`gradlab.study.exports.display`'s, so the report shows what
``gradlab compare`` prints. Pure pandas and matplotlib: never imports torch or rich.

The parts: :mod:`gradlab.report.page` (the page template and HTML building blocks),
:mod:`gradlab.report.table` (the comparison table) and :mod:`gradlab.report.health` (each
group's gradient health); this module puts them together with the plots, the configs,
command lines and versions read from the run folders.
"""

from __future__ import annotations

import shlex
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

import gradlab
from gradlab.errors import CompareError, GradlabError, RunFolderError
from gradlab.report.files import refused_files, refused_note
from gradlab.report.health import health_section
from gradlab.report.page import PAGE, count, esc, figure, figure_uri, section, swatch
from gradlab.report.table import comparison_table
from gradlab.runlog import (
    CONFIG_FILE,
    META_FILE,
    SWEEP_FILE,
    read_json,
    read_meta,
    write_text_atomically,
)
from gradlab.study.formats import check_spread
from gradlab.yamlfile import read_small_text_file

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
        raise CompareError(f"{out}: cannot write ({reason})", about="out") from None
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
        table: from :func:`gradlab.study.compare.comparison` (``attrs["paths"]`` names each
            row's runs).
        spread: what ± shows in the table: ``ci`` or ``std`` (as in ``gradlab compare``).
        power: show ``seeds_needed``.
        panels: the plot's panels: names from :data:`gradlab.study.plots.PANELS` (a list, or
            one comma-separated string); None = :data:`gradlab.study.plots.DEFAULT_PANELS`.
        title: the page's title; None = the sweep's name, when the runs come from one.
        command: the command line that made the report, shown in its header.

    Only regular files inside each run folder are read (:mod:`gradlab.report.files`): a
    file that is a symlink out of its run folder is left out, and the report says so.
    """
    from gradlab.study.plots import check_panels

    check_spread(spread)
    panels = None if panels is None else check_panels(panels)  # None: plot_comparison's
    paths = [[str(p) for p in row] for row in table.attrs.get("paths") or [[]] * len(table)]
    runs = [p for row in paths for p in row]
    refused = {p: refused_files(p) for p in runs}
    metas = {p: {} if META_FILE in refused[p] else _meta(p) for p in runs}
    sweeps = _sweeps(runs)
    if title is None:
        title = "gradlab report" + (f": {sweeps[0][1]}" if len(sweeps) == 1 else "")
    labels, colors = _labels_and_colors(table)
    grouped = bool(table.attrs.get("grouped"))
    word = "group" if grouped else "run"
    when = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %z")
    summary = count(len(runs), "run") + (f" in {count(len(table), 'group')}" if grouped else "")
    summary += f" · gradlab {gradlab.__version__} · {when}"
    header = [f"<h1>{esc(title)}</h1>", f'<p class="summary">{esc(summary)}</p>']
    if command:
        header.append(f'<p class="muted">made with <code>{esc(shlex.join(command))}</code></p>')
    left_out = sum(len(r) for r in refused.values())
    if left_out:
        header.append(
            f'<p class="warn">{count(left_out, "file")} of the run folders not read into this '
            "report (symlinks out of their run folder, or not regular files): see each "
            f"{word}'s notes</p>"
        )
    for folder, name, source in sweeps:
        header.append(
            f'<p class="muted">sweep <b>{esc(name)}</b> from <code>{esc(source)}</code> '
            f"in <code>{esc(folder)}</code></p>"
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
    private = _private_rows(table)
    groups = "".join(
        _group_section(
            i, row, labels[i], colors[i], paths[i], metas, refused, i == _baseline(table),
            private[i],
        )
        for i, row in enumerate(table.to_dict("records"))
    )  # fmt: skip
    body = [
        f"<header>{''.join(header)}</header>",
        f'<nav aria-label="sections"><ul>{nav}</ul></nav>',
        section(
            "comparison",
            "Comparison",
            comparison_table(table, spread, power, colors, _baseline(table)),
        ),
        section("plots", "Plots", _plots(table, panels)),
        section("groups", f"{word.title()}s", groups),
        section("environment", "Versions", _versions(metas)),
    ]
    return PAGE.format(title=esc(title), version=esc(gradlab.__version__), body="\n".join(body))


def _baseline(table: pd.DataFrame) -> int | None:
    baseline = table.attrs.get("baseline")
    return None if baseline is None else int(baseline)


def _private_rows(table: pd.DataFrame) -> list[bool]:
    from gradlab.study.plots import private_rows

    return private_rows(table, contained=True)


def _labels_and_colors(table: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Each row's legend label and colour (#rrggbb), as in the plots."""
    from gradlab.study.labels import row_colors, row_labels

    return [str(label) for label in row_labels(table)], [str(c) for c in row_colors(table)]


# --------------------------------------------------------------------------- plots


def _plots(table: pd.DataFrame, panels: str | list[str] | None) -> str:
    from gradlab.study.plots import plot_comparison

    try:
        uri = figure_uri(plot_comparison(table, None, panels=panels, contained=True))
    except GradlabError as exc:  # e.g. no run folder left to read
        return f'<p class="warn">no plot: {esc(exc)}</p>'
    return figure(uri, "comparison plots: one line per row of the table, against step")


# --------------------------------------------------------------------------- groups


def _group_section(
    i: int,
    row: dict[str, Any],
    label: str,
    color: str,
    paths: list[str],
    metas: dict[str, dict[str, Any]],
    refused: dict[str, dict[str, str]],
    baseline: bool,
    private: bool,
) -> str:
    tag = ' <span class="tag">baseline</span>' if baseline else ""
    facts = [label, f"{count(len(paths), 'run')} counted"]
    facts += [f"{k} {row[k]}" for k in ("seed", "status") if row.get(k) is not None]
    if private:  # from the config; the epsilon only when the table shows it
        facts.append(
            "DP-SGD" + (f", epsilon {_epsilon_text(row['epsilon'])}" if "epsilon" in row else "")
        )
    title = f"{row.get('name')}: per-layer gradient norm and update ratio"
    parts = [
        f"<h3>{swatch(color)}{i + 1}. {esc(row.get('name'))}{tag}</h3>",
        f'<p class="muted">{esc(" · ".join(str(f) for f in facts))}</p>',
        *(
            f'<p class="notes warn">left out: {esc(refused_note(p, name, why))}</p>'
            for p in paths
            for name, why in refused[p].items()
        ),
        health_section(paths, title, {p: set(refused[p]) for p in paths}),
    ]
    commands = dict.fromkeys(_command(metas[p].get("command")) for p in paths)
    commands.pop(None, None)
    if commands:
        lines = "\n".join(esc(c) for c in commands)
        parts.append(f"<h4>Command line{'s' if len(commands) > 1 else ''}</h4><pre>{lines}</pre>")
    shown = next((p for p in paths if CONFIG_FILE not in refused[p]), None)
    if shown is not None:
        config = _read_config(Path(shown) / CONFIG_FILE)
        parts.append(
            f"<details><summary>{CONFIG_FILE} of <code>{esc(Path(shown).name)}</code>"
            f"</summary><pre>{esc(config)}</pre></details>"
        )
    elif paths:
        parts.append(
            f'<p class="muted">no {CONFIG_FILE} shown: each is a symlink out of its run '
            "folder or not a regular file</p>"
        )
    if paths:
        items = "".join(f"<li><code>{esc(p)}</code></li>" for p in paths)
        parts.append(
            f"<details><summary>run folders ({len(paths)})</summary><ul>{items}</ul></details>"
        )
    return f'<section class="group" id="group-{i}">\n' + "\n".join(parts) + "\n</section>\n"


def _epsilon_text(value: Any) -> str:
    """A private row's epsilon as the group section says it: unknown when it could not be
    read (the run is private all the same: that comes from its config)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
        return "unknown (no readable value)"
    return "inf (no noise)" if value == float("inf") else f"{value:.3g}"


def _command(command: Any) -> str | None:
    if isinstance(command, list) and all(isinstance(c, str) for c in command):
        return shlex.join(command)
    return None if command is None else str(command)


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
        text = "; ".join(
            str(v) if len(counts) == 1 else f"{v} ({n} runs)" for v, n in counts.items()
        )
        warn = ' class="warn"' if len(counts) > 1 else ""
        rows.append(f"<tr><th>{esc(key)}</th><td{warn}>{esc(text)}</td></tr>")
    started = sorted(str(m["started"]) for m in metas.values() if m.get("started"))
    if started:
        text = started[0] if started[0] == started[-1] else f"{started[0]} to {started[-1]}"
        rows.append(f"<tr><th>started</th><td>{esc(text)}</td></tr>")
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
