"""The gradient health of one row of a study report: per parameter, the statistics of its
runs' ``grads.csv`` (averaged over the runs) as a table and a small figure, and the alerts
the runs raised. Pure pandas; matplotlib is imported only when a figure is made.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gradlab.errors import GradlabError
from gradlab.report.page import count, esc, figure, figure_uri
from gradlab.runlog import ALERTS_FILE, GRADS_FILE
from gradlab.study.inspection import load_alerts, load_grads
from gradlab.study.numbers import column_format
from gradlab.study.plots import read_logs

HEALTH = {  # column of layer_health: (statistic of grads.csv, value over the run)
    "norm_first": ("norm", "first"),
    "norm_last": ("norm", "last"),
    "ratio_first": ("update_ratio", "first"),
    "ratio_last": ("update_ratio", "last"),
    "zero_frac_last": ("zero_frac", "last"),
    "max_abs_max": ("max_abs", "max"),
    "weight_norm_last": ("weight_norm", "last"),
}
HEALTH_COLUMNS = {  # column of the health table: the HEALTH figures it shows
    "norm": ("norm_first", "norm_last"),
    "ratio": ("ratio_first", "ratio_last"),
    "max_abs": ("max_abs_max",),
    "weight_norm": ("weight_norm_last",),
}
DEAD_HINT = 0.5  # a zero fraction from here on is flagged: dead ReLU units (or masked entries)


def health_section(paths: list[str], title: str, refused: dict[str, set[str]] | None = None) -> str:
    """The "Gradient health" block of a row whose runs are ``paths``: its table, its figure
    (captioned ``title``) and its alerts, or why there are none. ``refused``: per run, the
    files not to read (:func:`gradlab.report.files.refused_files`)."""
    refused = refused or {}
    frames, missing = [], []
    readable = [p for p in paths if GRADS_FILE not in refused.get(p, ())]
    missing += [f"{p}: {GRADS_FILE} not read (see above)" for p in paths if p not in readable]
    for path, grads in zip(readable, _read_grads(readable), strict=True):
        if isinstance(grads, GradlabError):
            missing.append(str(grads))
        elif len(grads):
            frames.append(grads)
        else:
            missing.append(f"{path}: {GRADS_FILE} holds no checks yet")
    parts = ["<h4>Gradient health</h4>"]
    if frames:
        health = layer_health(frames)
        steps = sorted(set(pd.concat(frames)["step"]))
        parts.append(
            f'<p class="muted">per parameter, mean over {count(len(frames), "run")}; checks '
            f"at steps {steps[0]:g} to {steps[-1]:g} ({count(len(steps), 'check')})</p>"
        )
        parts.append(health_table(health))
        parts.append(figure(_layer_figure(frames), title))
    parts += [f'<p class="notes">no gradient statistics: {esc(m)}</p>' for m in missing]
    if frames:  # without diagnostics, no alert could fire: "none" would say too much
        parts.append(_alerts([p for p in paths if ALERTS_FILE not in refused.get(p, ())]))
    return f'<div class="health">{"".join(parts)}</div>'


_SHOWN_STATS = ["norm", "update_ratio", "zero_frac", "max_abs", "weight_norm"]
"""The statistics of grads.csv the report shows (:data:`HEALTH` and the figure)."""


def _read_grads(paths: list[str]) -> list[pd.DataFrame | GradlabError]:
    """For each run, what :func:`~gradlab.study.inspection.load_grads` gives (the same rows
    and values; a ``true`` is not a number either) or raises, of the columns the report
    shows only, the runs' files parsed together (:func:`gradlab.study.plots.read_logs`):
    reading thousands of runs, most of the time goes to reading. A file that is missing
    or not as gradlab writes it goes through ``load_grads``, which says why."""
    wanted = ["param", "step", *_SHOWN_STATS]
    out: list[pd.DataFrame | GradlabError] = []
    for path, grads in zip(
        paths, read_logs(paths, GRADS_FILE, "weight_norm", columns=wanted), strict=True
    ):
        if isinstance(grads, GradlabError) or set(grads.columns) != set(wanted):
            try:
                out.append(load_grads(path))
            except GradlabError as exc:
                out.append(exc)
            continue
        for column, dtype in zip(list(grads.columns), grads.dtypes, strict=True):
            if column != "param" and dtype.kind == "b":
                grads[column] = np.nan
            elif column != "param" and dtype.kind not in "iuf":  # as load_grads: text is NaN
                grads[column] = pd.to_numeric(grads[column], errors="coerce")
        finite = np.isfinite(grads["step"].to_numpy(float))
        out.append(grads if finite.all() else grads[finite].reset_index(drop=True))
    return out


def layer_health(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """One row per parameter (in the order of first appearance in grads.csv): the
    :data:`HEALTH` figures of each run's ``grads.csv`` (a statistic's value at the first
    and the last check by step, or its largest value), averaged over the runs (missing
    values left out).

    All runs at once: one table sorted by run, parameter and step, whose groups' first and
    last rows and maxima are taken by position (what
    :func:`gradlab.study.inspection.layer_table` gives run by run)."""
    stats = list(dict.fromkeys(stat for stat, _ in HEALTH.values()))
    columns = {
        c: np.concatenate([f[c].to_numpy() for f in frames]) for c in ["param", "step", *stats]
    }
    params, names = pd.factorize(columns["param"])  # first appearance first; no param: -1
    runs = np.repeat(np.arange(len(frames)), [len(f) for f in frames])
    steps = columns["step"].astype(float)
    order = np.lexsort((steps, params, runs))  # by run, parameter, then step (stable)
    order = order[params[order] >= 0]
    if not order.size:
        return pd.DataFrame(columns=list(HEALTH), index=pd.Index([], name="param"), dtype=float)
    runs, params = runs[order], params[order]
    starts = np.flatnonzero(np.r_[True, (runs[1:] != runs[:-1]) | (params[1:] != params[:-1])])
    ends = np.r_[starts[1:], order.size] - 1
    values = {stat: columns[stat].astype(float)[order] for stat in stats}
    at = {"first": starts, "last": ends}
    per_run = pd.DataFrame(
        {
            key: np.fmax.reduceat(values[stat], starts)
            if which == "max"
            else values[stat][at[which]]
            for key, (stat, which) in HEALTH.items()
        },
        index=pd.Index(names[params[starts]], name="param"),
    )
    return per_run.groupby(level=0, sort=False).mean().reindex(pd.Index(names, name="param"))


def health_table(health: pd.DataFrame) -> str:
    """The HTML table of :func:`layer_health`'s figures, one precision per column."""
    formats = {  # one precision per column of the table, as in the comparison
        key: column_format(health[list(columns)].to_numpy().ravel().tolist())
        for key, columns in HEALTH_COLUMNS.items()
    }

    def number(value: float, key: str) -> str:
        return "-" if pd.isna(value) else formats[key](float(value))

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
            f"<tr><td><code>{esc(param)}</code></td>"
            f'<td class="num">{number(h["norm_first"], "norm")} → '
            f"{number(h['norm_last'], 'norm')}</td>"
            f'<td class="num">{number(h["ratio_first"], "ratio")} → '
            f"{number(h['ratio_last'], 'ratio')}</td>"
            f"<td{warn}>{'-' if pd.isna(zero) else f'{zero:.1%}'}</td>"
            f'<td class="num">{number(h["max_abs_max"], "max_abs")}</td>'
            f'<td class="num">{number(h["weight_norm_last"], "weight_norm")}</td></tr>'
        )
    note = (
        '<p class="notes">zero frac: share of gradient entries exactly zero at the last check '
        f"(from {DEAD_HINT:.0%}, flagged: dead ReLU units, or masked entries); update ratio: "
        "||Δw|| / ||w||, the step the optimizer really took</p>"
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
    return figure_uri(fig)


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
        if not _may_hold_alerts(Path(path) / ALERTS_FILE):
            continue
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
        f"<tr><td>{esc(alert)}</td><td><code>{esc(param)}</code></td>"
        f'<td class="num">{c["count"]}</td><td class="num">{c["runs"]} of {len(paths)}</td>'
        f'<td class="num">{c["first"]:g}</td><td class="wrap">{esc(c["message"])}</td></tr>'
        for (alert, param), c in counts.iterrows()
    )
    return (
        '<h4>Alerts</h4><div class="scroll"><table class="alerts"><thead><tr><th>alert</th>'
        "<th>parameter</th><th class=num>count</th><th class=num>runs</th>"
        f"<th class=num>first step</th><th>first message</th></tr></thead><tbody>{rows}</tbody>"
        "</table></div>"
    )


def _may_hold_alerts(path: Path) -> bool:
    """False for an alerts.csv that holds its header only (no alert fired: most runs), read
    without pandas; True for anything else (load_alerts reads it, or says why not)."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size > 65536:
            return True
        with open(path, "rb") as file:
            lines = [line for line in file.read(65537).splitlines() if line.strip()]
    except OSError:
        return True
    return len(lines) > 1
