"""Figures that explain a study: one line per row of the comparison table (the mean over
its seeds, with a band), in panels chosen by name, saved as PNG, PDF or SVG.

Python API (the figure ``gradlab compare --plot`` writes, to change in a notebook)::

    from gradlab.study.compare import comparison
    from gradlab.study.plots import plot_comparison
    table = comparison(["runs/study"])
    fig = plot_comparison(table, panels=["train_loss", "grad_norm", "edit_stats"])
    axes = {ax.get_label(): ax for ax in fig.axes}  # each axes is labelled by its panel
    axes["grad_norm"].set_ylim(1e-2, 10)
    fig.savefig("study.pdf")

How a line and its band are computed, at each step:

- per-step series (training loss, gradient norms, learning rate, edit statistics) are first
  smoothed run by run with a trailing moving average over about 1/50 of the run
  (:func:`smoothing_window`); test metrics are drawn as evaluated, with markers when there
  are few evaluations;
- linear panels draw the mean over the row's seeds and a band of +- one sample std;
- log panels (:data:`LOG_PANELS`) draw the geometric mean ``exp(mean(log x))`` and the band
  ``exp(mean(log x) +- std(log x))``, so a band is never at or below zero. They smooth
  first and then take logs; values <= 0 (nothing to show on a log axis) are left out.

Only the columns the panels need are read from each run's logs, as numpy arrays; a row's
band is computed on the matrix of its runs, and a line of more than 4,000 points is drawn
through the points that keep its picture (:func:`gradlab.study.bands.drawn_points`).

Which row is private (DP-SGD) comes from its runs' config (a ``privacy`` section,
:func:`private_rows`), never from whether an epsilon could be read.

Figures are made without pyplot (an Agg canvas), so a notebook's backend is left alone;
matplotlib is imported only when a figure is made.

The parts: :mod:`gradlab.study.labels` (each row's legend label and colour), :mod:`gradlab.study.bands`
(a row's line and band) and :mod:`gradlab.study.figures` (making and saving figure files); this
module chooses the panels, lays them out and draws them.
"""

from __future__ import annotations

import io
import math
import os
import re
import stat
import textwrap
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from gradlab.errors import CompareError, GradlabError, RunFolderError
from gradlab.runlog import CONFIG_FILE, EVALS_FILE, STEPS_FILE, read_config
from gradlab.study.bands import Curve, draw_row, run_curve, smoothing_window
from gradlab.study.figures import check_plot_path, new_figure, save_figure
from gradlab.study.labels import row_colors, row_labels
from gradlab.study.reading import read_log

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PANELS: dict[str, str] = {
    "train_loss": "training loss",
    "test_loss": "test loss",
    "test_accuracy": "test accuracy",
    "grad_norm": "gradient norm before the edits",
    "grad_norm_after": "gradient norm after the edits",
    "lr": "learning rate",
    "edit_stats": "edit fractions per step",
    "edit_norms": "edit norms and scales per step",
    "accuracy_vs_epsilon": "test accuracy against privacy spent",
    "dp_clipped_frac": "share of examples clipped",
    "dp_norm_median": "median per-example gradient norm",
    "noise_scale": "gradient noise scale B_simple",
    "diversity": "gradient diversity",
}
"""Panel name -> title. The edit panels draw the ``edit<i>.<type>.<stat>`` columns of
``steps.csv``, split by what they measure (rows without edits have no line there):

- ``edit_stats``: the fractions and flags, on a linear axis from 0 to 1: statistics named
  ``*_frac`` (e.g. ``clipped_frac``, the fraction of entries clipped) and ``changed`` (1 when
  the edit changed the gradient; smoothed, the share of steps it did);
- ``edit_norms``: every other statistic (norms, scales, noise std, norm ratios), on a log
  axis.

In both, a line's colour is its row and its style the statistic (named in a legend beside
the panel): the statistic's name, prefixed ``<i>:`` with the edit's position when some row
has more than one edit (``0:changed``, ``1:kept_frac``).

Runs with a ``privacy`` section add: ``accuracy_vs_epsilon`` (evals.csv's test accuracy
against its ``epsilon``, the privacy spent so far, instead of the step; a row without
privacy is a dotted horizontal line at its final accuracy, a private row none of whose runs
has an epsilon to read, corrupt or missing, a dash-dotted one, and one without noise
(epsilon infinite) a dashed one, named in a legend beside the panel), ``dp_clipped_frac``
and ``dp_norm_median`` (steps.csv's ``dp.*`` columns, before clipping).

Runs with the probes of the same names (``diagnostics.probes``) add ``noise_scale``
(``probe.noise_scale.b_simple``, on a log axis: its estimates below zero are not drawn) and
``diversity`` (``probe.diversity.diversity``)."""
DEFAULT_PANELS = ("train_loss", "test_accuracy", "grad_norm", "grad_norm_after")
LOG_PANELS = frozenset(
    {"grad_norm", "grad_norm_after", "lr", "edit_norms", "dp_norm_median", "noise_scale"}
)

# panel -> (log file, column (None: the edit statistics), y label)
_SOURCES = {
    "train_loss": ("steps", "loss", "cross-entropy"),
    "test_loss": ("evals", "test_loss", "cross-entropy"),
    "test_accuracy": ("evals", "test_accuracy", "accuracy"),
    "grad_norm": ("steps", "grad_norm", "global L2 norm"),
    "grad_norm_after": ("steps", "grad_norm_after", "global L2 norm"),
    "lr": ("steps", "lr", "learning rate"),
    "edit_stats": ("steps", None, "fraction"),
    "edit_norms": ("steps", None, "value"),
    "accuracy_vs_epsilon": ("evals", "test_accuracy", "accuracy"),
    "dp_clipped_frac": ("steps", "dp.clipped_frac", "fraction"),
    "dp_norm_median": ("steps", "dp.norm_median", "L2 norm"),
    "noise_scale": ("steps", "probe.noise_scale.b_simple", "examples"),
    "diversity": ("steps", "probe.diversity.diversity", "ratio"),
}
_X_AXIS = {"accuracy_vs_epsilon": ("epsilon", "epsilon spent (the run's accountant and delta)")}
"""Panels drawn against another evals.csv column than ``step``: (column, axis label). The
x values must be finite and at least 0 (an epsilon is never negative)."""
_LEVELS = {  # rows drawn as a level at their final accuracy: (line style, legend text)
    "none": (":", "no privacy"),
    "unknown": ("-.", "DP-SGD, epsilon unknown"),
    "infinite": ("--", "DP-SGD, no noise (epsilon = inf)"),
}
Log = dict[str, np.ndarray]
"""One run's log as read for a figure: the columns its panels need, as float arrays."""
_EDIT_STAT = re.compile(r"^edit(\d+)\.([^.]+)\.(.+)$")
_PANEL_SIZE = (5.2, 3.6)  # inches per panel
_PER_ROW = 3
_LINESTYLES: list[str | tuple[float, tuple[float, ...]]] = [
    "-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 2))
]  # fmt: skip
_MARKERS = [None, "o", "s", "^", "D", "v", "x", "+"]  # after the line styles run out


# --------------------------------------------------------------------------- choices


def check_panels(names: str | Iterable[str] | None) -> list[str]:
    """The panels to draw, in order (duplicates dropped): a list of names or one
    comma-separated string; None gives :data:`DEFAULT_PANELS`.

    Raises:
        CompareError: an unknown name, or none at all.
    """
    if names is None:
        return list(DEFAULT_PANELS)
    if isinstance(names, str):
        names = names.split(",")
    chosen = [str(n).strip() for n in names if str(n).strip()]
    for name in chosen:
        if name not in PANELS:
            raise CompareError(
                f"panels {name}: unknown panel; choose from {', '.join(PANELS)}",
                argument="panels",
            )
    if not chosen:
        raise CompareError(f"panels: choose at least one of {', '.join(PANELS)}", argument="panels")
    return list(dict.fromkeys(chosen))


# --------------------------------------------------------------------------- the figure


def plot_comparison(
    table: pd.DataFrame,
    out: str | Path | None = None,
    panels: str | Iterable[str] | None = None,
    labels: list[str] | None = None,
    *,
    contained: bool = False,
) -> Figure | Path:
    """One line per table row in each panel (see the module docstring for the bands).

    Args:
        table: from :func:`gradlab.study.compare.comparison` (``attrs["paths"]`` names the runs).
        out: a ``.png``, ``.pdf`` or ``.svg`` file, written whole or not at all; None
            returns the figure instead, to change and save in a notebook.
        panels: names from :data:`PANELS` (default :data:`DEFAULT_PANELS`, and
            ``accuracy_vs_epsilon`` when some row is private).
        labels: the legend labels, one per row (default :func:`row_labels`).
        contained: read no file that lies outside its run folder (a symlink out of it),
            as the study report does; such a run draws nothing.

    Returns:
        The Path written, or the Figure when ``out`` is None (each axes' ``get_label()``
        is its panel name).

    Raises:
        CompareError: an unknown panel, an unsupported format, no rows or no run folders.
        ValueError: not one label per row.
    """
    chosen = check_panels(panels)
    target = None if out is None else check_plot_path(out)
    paths = table.attrs.get("paths")
    if table.empty:
        raise CompareError("no rows to plot")
    if paths is None or len(paths) != len(table):
        raise CompareError("the table names no run folders; make it with compare.comparison")
    labels = row_labels(table) if labels is None else [str(label) for label in labels]
    if len(labels) != len(table):
        raise ValueError(f"{len(labels)} labels for {len(table)} rows")
    colors = row_colors(table)
    private = private_rows(table, contained=contained)
    if panels is None and any(private):
        chosen.append("accuracy_vs_epsilon")  # private runs: the privacy-utility curve too
    logs = {
        kind: _read_all(kind, paths, _columns(chosen, kind), contained)
        for kind in ("steps", "evals")
        if any(_SOURCES[name][0] == kind for name in chosen)
    }
    longest = max((_length(log) for row in logs.get("steps", []) for log in row), default=1)
    window = smoothing_window(longest)

    nrows = math.ceil(len(chosen) / _PER_ROW)
    ncols = math.ceil(len(chosen) / nrows)
    fig = new_figure(ncols * _PANEL_SIZE[0], nrows * _PANEL_SIZE[1])
    grid = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in grid[len(chosen) :]:
        ax.remove()
    for name, ax in zip(chosen, grid, strict=False):
        _draw_panel(ax, name, logs[_SOURCES[name][0]], labels, colors, window, private)
    banded = any(len(p) > 1 for p in paths)
    _add_legend(fig, labels, colors, nrows * _PANEL_SIZE[1], banded)
    return fig if target is None else save_figure(fig, target)


def private_rows(table: pd.DataFrame, contained: bool = False) -> list[bool]:
    """Whether each row of a comparison is private (DP-SGD): its runs' config has a
    ``privacy`` section (a row is one experiment: its runs agree). From the table's
    ``privacy`` column when it has one, else from the config.yaml of the row's first run
    (a config that cannot be read, or with ``contained`` lies outside its run folder, is
    not private). Never from the epsilon: a private run whose epsilon is corrupt or
    missing is still private."""
    if "privacy" in table.columns:
        return [value == "on" for value in table["privacy"]]
    paths = table.attrs.get("paths") or [[] for _ in range(len(table))]
    return [bool(row) and _config_is_private(Path(row[0]), contained) for row in paths]


def _config_is_private(run: Path, contained: bool) -> bool:
    if contained and outside_run_folder(run / CONFIG_FILE, run):
        return False
    try:
        return isinstance(read_config(run).get("privacy"), dict)
    except GradlabError:
        return False


def outside_run_folder(path: str | Path, run: str | Path) -> bool:
    """Whether ``path``, a file of the run folder ``run``, really lies outside it (a symlink
    out of the folder; the folder itself may be reached through a link)."""
    home = os.path.realpath(run)
    return os.path.commonpath([os.path.realpath(path), home]) != home


# --------------------------------------------------------------------------- reading logs

_BATCH_BYTES = 8 * 2**20  # text parsed at once, about
_NOT_PLAIN = (b'"', b"\r", b"\xef\xbb\xbf")
"""What pandas reads in a way a joined text would not (quotes: a field may hold a line end;
other line ends; a byte-order mark): a log with any of them is read alone."""


def read_logs(
    runs: Sequence[str | Path],
    name: str,
    last_column: str,
    *,
    numeric: bool = False,
    columns: Iterable[str] | None = None,
    contained: bool = False,
) -> list[pd.DataFrame | RunFolderError]:
    """:func:`~gradlab.study.reading.read_log` of the file ``name`` of every run folder in
    ``runs``: for each run its table, or the error read_log raises. The same rows and
    values, in one pass: the logs that share a header line are parsed together, as one CSV
    text with the run's position in a first column (one pandas call instead of thousands
    of small ones). A log whose text is not plain (quotes, ``\\r``, a byte-order mark, no
    rows, no ``last_column``) and a batch that does not parse cleanly (a row with too many
    fields) are read one by one by read_log. A column of numbers comes as floats when
    another log of the batch has a decimal there, or (``numeric=False``) as text when it
    has text there.

    Args:
        numeric, columns: as read_log's. contained: with read_log's ``folder``, the run.
    """
    out: list[pd.DataFrame | RunFolderError | None] = [None] * len(runs)
    for positions, table, bounds in _batches(runs, name, last_column, numeric, columns, contained):
        for k, i in enumerate(positions):
            out[i] = table.iloc[bounds[k] : bounds[k + 1]].reset_index(drop=True)
    for i, run in enumerate(runs):
        if out[i] is None:
            folder = Path(run) if contained else None
            try:
                out[i] = read_log(Path(run) / name, last_column, numeric, columns, folder)
            except RunFolderError as exc:
                out[i] = exc
    return [frame for frame in out if frame is not None]


def _batches(
    runs: Sequence[str | Path],
    name: str,
    last_column: str,
    numeric: bool,
    columns: Iterable[str] | None,
    contained: bool,
) -> Iterator[tuple[list[int], pd.DataFrame, np.ndarray]]:
    """The logs of :func:`read_logs` that parse together: ``(positions, table, bounds)``,
    the rows ``bounds[k]:bounds[k + 1]`` of ``table`` being the log of
    ``runs[positions[k]]``: runs in a row that share a header, up to
    :data:`_BATCH_BYTES` of text at a time. The runs left out are to be read one by one."""
    chunk: list[tuple[int, bytes]] = []
    header, size = b"", 0
    for i, run in enumerate(runs):
        text = _plain_log(Path(run) / name, Path(run) if contained else None, last_column)
        if text is None:
            continue
        head, _, body = text.partition(b"\n")
        if chunk and (head != header or size >= _BATCH_BYTES):
            yield from _batch(header, chunk, last_column, numeric, columns)
            chunk, size = [], 0
        header, size = head, size + len(body)
        chunk.append((i, body))
    if chunk:
        yield from _batch(header, chunk, last_column, numeric, columns)


def _batch(
    header: bytes,
    chunk: list[tuple[int, bytes]],
    last_column: str,
    numeric: bool,
    columns: Iterable[str] | None,
) -> Iterator[tuple[list[int], pd.DataFrame, np.ndarray]]:
    parsed = _parse_together(header, [body for _, body in chunk], last_column, numeric)
    if parsed is not None:
        table, bounds = parsed
        if columns is not None:
            wanted = {*columns, last_column}
            table = table[[c for c in table.columns if c in wanted]]
        yield [i for i, _ in chunk], table, bounds


def _plain_log(path: Path, folder: Path | None, last_column: str) -> bytes | None:
    """The text of a log file (its header line, then rows, the last newline removed) when
    it can be parsed together with others; None when read_log must read it (and say
    what is wrong with it, if anything).

    A blank line, which pandas skips, becomes a row without ``last_column`` in a joined
    text (its log's number leads it), which is dropped all the same: a log can be joined
    when ``last_column`` is one of its columns."""
    try:
        if folder is not None and outside_run_folder(path, folder):
            return None
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None  # before opening: opening a FIFO would wait for a writer
        with open(path, "rb") as file:
            text = file.read()
    except OSError:
        return None
    text = text[:-1] if text.endswith(b"\n") else text
    header, newline, body = text.partition(b"\n")
    names = header.split(b",")
    if not (newline and body and header.strip()) or last_column.encode() not in names:
        return None
    if any(mark in text for mark in _NOT_PLAIN) or any(n.startswith(b"_run") for n in names):
        return None  # _run: the name of the column that numbers the logs
    return text


def _parse_together(
    header: bytes, bodies: list[bytes], last_column: str, numeric: bool
) -> tuple[pd.DataFrame, np.ndarray] | None:
    """The logs of ``bodies`` (their rows, under one ``header`` line) parsed as one CSV
    text, each row led by its log's position: the table and where each log's rows start
    (and the last ends); None when that text does not parse as the logs would one by one
    (text that is not UTF-8, a row with too many fields)."""
    text = b"".join(
        b"%d," % k + body.replace(b"\n", b"\n%d," % k) + b"\n" for k, body in enumerate(bodies)
    )
    try:
        df = pd.read_csv(io.BytesIO(b"_run," + header + b"\n" + text))
    except (ValueError, pd.errors.ParserError, OverflowError):
        return None
    del text
    if (
        len(df.columns) != header.count(b",") + 2
        or df.columns[0] != "_run"
        or not isinstance(df.index, pd.RangeIndex)
        or df["_run"].dtype.kind not in "iu"
    ):
        return None  # e.g. a first row with one field more (read as an index)
    runs = df.pop("_run").to_numpy()
    if numeric:
        for name, dtype in zip(list(df.columns), df.dtypes, strict=True):
            if dtype.kind == "b":
                df[name] = math.nan
            elif dtype.kind not in "iuf":
                df[name] = pd.to_numeric(df[name], errors="coerce")
    if last_column in df.columns:
        complete = df[last_column].notna().to_numpy()
        if not complete.all():
            df, runs = df[complete].reset_index(drop=True), runs[complete]
    return df, np.searchsorted(runs, np.arange(len(bodies) + 1))


def _columns(chosen: list[str], kind: str) -> set[str] | None:
    """The columns of the ``kind`` log (steps or evals) that the panels ``chosen`` draw;
    None for all of them (the edit statistics: every ``edit<i>.*`` column)."""
    names = {"step"}
    for name in chosen:
        source, column, _ = _SOURCES[name]
        if source != kind:
            continue
        if column is None:
            return None
        names |= {column, _X_AXIS.get(name, ("step",))[0]}
    return names


def _read_all(
    kind: str, paths: list[list[str]], columns: set[str] | None, contained: bool
) -> list[list[Log]]:
    """The ``kind`` log (steps or evals) of every run of every row, as arrays; a log that
    cannot be read is empty (that run draws nothing)."""
    runs: list[str | Path] = [p for row in paths for p in row]
    name = STEPS_FILE if kind == "steps" else EVALS_FILE
    logs: list[Log | None] = [None] * len(runs)
    for positions, table, bounds in _batches(runs, name, "elapsed_s", True, columns, contained):
        arrays = {str(c): table[c].to_numpy(float) for c in table.columns}
        for k, i in enumerate(positions):
            logs[i] = {c: a[bounds[k] : bounds[k + 1]] for c, a in arrays.items()}
    for i, run in enumerate(runs):
        if logs[i] is None:
            folder = Path(run) if contained else None
            try:
                frame = read_log(Path(run) / name, "elapsed_s", True, columns, folder)
            except RunFolderError:
                logs[i] = {}
            else:
                logs[i] = {str(c): frame[c].to_numpy(float) for c in frame.columns}
    found = iter([log or {} for log in logs])
    return [[next(found) for _ in row] for row in paths]


def _length(log: Log) -> int:
    return len(next(iter(log.values()), ()))


def _curve(log: Log, column: str, window: int, x: str = "step") -> Curve | None:
    if column not in log or x not in log:
        return None
    return run_curve(log[x], log[column], window, x_min=None if x == "step" else 0.0)


def _draw_panel(
    ax: Axes,
    name: str,
    runs: list[list[Log]],
    labels: list[str],
    colors: list[str],
    window: int,
    private: list[bool],
) -> None:
    kind, column, ylabel = _SOURCES[name]
    log = name in LOG_PANELS
    smooth = kind == "steps" and name != "lr" and window > 1  # lr: exact, as scheduled
    x, xlabel = _X_AXIS.get(name, ("step", "step"))
    drawn = 0
    if column is None:
        drawn = _draw_edit_stats(ax, name, runs, labels, colors, window)
    elif x != "step":
        drawn = _draw_against_privacy(ax, runs, column, x, labels, colors, private)
    else:
        for logs, label, color in zip(runs, labels, colors, strict=True):
            curves = [
                c for run in logs if (c := _curve(run, column, window if smooth else 1)) is not None
            ]
            drawn += draw_row(ax, curves, log, label, color, "-", markers=kind == "evals")
    title = PANELS[name] + (f" (moving average over {window} steps)" if smooth else "")
    width_chars = int(_PANEL_SIZE[0] * 72 / (10 * 0.58))
    ax.set_title(textwrap.fill(title, width_chars), fontsize=10)
    ax.set_label(name)
    if not drawn:
        what = f"no run logged {column}" + (f" against {x}" if x != "step" else "")
        if x != "step" and not any(private):
            what = "no row is private"
        if column is None:
            kinds = "fractions" if name == "edit_stats" else "norms or scales"
            what = f"no row has edits with {kinds}" if _has_edits(runs) else "no row has edits"
        ax.text(
            0.5, 0.5, f"no data\n({what})", ha="center", va="center", color="0.4",
            transform=ax.transAxes,
        )  # fmt: skip
        ax.set_xticks([])
        ax.set_yticks([])
        return
    if log:
        ax.set_yscale("log")
    from matplotlib.ticker import MaxNLocator

    if x == "step":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel + (" (log scale)" if log else ""))
    ax.grid(alpha=0.3, which="major")


def _draw_against_privacy(
    ax: Axes,
    runs: list[list[Log]],
    column: str,
    x: str,
    labels: list[str],
    colors: list[str],
    private: list[bool],
) -> int:
    """A private row against the epsilon its runs spent (``x``); a row none of whose runs
    has an epsilon to read, and a row without privacy, as a level at its final value
    (:data:`_LEVELS`: the line style says which), named in a legend beside the axes. No
    row private: nothing."""
    if not any(private):
        return 0
    drawn, levels = 0, set()
    for logs, label, color, is_private in zip(runs, labels, colors, private, strict=True):
        if is_private:
            curves = [c for run in logs if (c := _curve(run, column, 1, x)) is not None]
            if curves:
                drawn += draw_row(ax, curves, False, label, color, "-", markers=True)
                continue
            infinite = any(np.isposinf(run[x]).any() for run in logs if x in run)
            kind = "infinite" if infinite else "unknown"
        else:
            kind = "none"
        if _draw_level(ax, logs, column, label, color, _LEVELS[kind][0]):
            drawn += 1
            levels.add(kind)
    if levels:
        from matplotlib.lines import Line2D

        kinds = [k for k in _LEVELS if k in levels]
        handles = [Line2D([], [], color="0.3", linestyle=_LEVELS[k][0]) for k in kinds]  # type: ignore[arg-type]
        ax.legend(
            handles,
            [_LEVELS[k][1] for k in kinds],
            title="level: final accuracy",
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),  # beside the axes: constrained layout makes room
            borderaxespad=0,
            fontsize=7,
            title_fontsize=7,
            handlelength=2.8,
            frameon=False,
        )
    return drawn


def _draw_level(
    ax: Axes, logs: list[Log], column: str, label: str, color: str, linestyle: str
) -> int:
    """A horizontal line at the mean over runs of ``column``'s last value."""
    last = [
        values[-1]
        for run in logs
        if column in run and len(values := run[column][~np.isnan(run[column])])
    ]
    if not last:
        return 0
    ax.axhline(sum(last) / len(last), color=color, linestyle=linestyle, label=label)
    return 1


def _draw_edit_stats(
    ax: Axes,
    name: str,
    runs: list[list[Log]],
    labels: list[str],
    colors: list[str],
    window: int,
) -> int:
    """The edit statistics of every row that belong in panel ``name`` (``edit_stats``: the
    fractions and flags, ``edit_norms``: the others): the row's colour, one style per
    statistic, named in a legend beside the axes (never over the data)."""
    per_row = [sorted({c for run in logs for c in run if _EDIT_STAT.match(c)}) for logs in runs]
    indexed = any(_edit_stat(c)[0] != "0" for columns in per_row for c in columns)
    fractions = name == "edit_stats"
    per_row = [[c for c in columns if _is_fraction(c) == fractions] for columns in per_row]
    order = {}  # by edit, each edit's ``changed`` first (a solid line)
    for c in (c for columns in per_row for c in columns):
        index, _, stat = _edit_stat(c)
        order[_stat_key(c, indexed)] = (int(index), stat != "changed", stat)
    keys = sorted(order, key=order.__getitem__)
    styles = {k: _style(i) for i, k in enumerate(keys)}
    shown = set()
    for logs, columns, label, color in zip(runs, per_row, labels, colors, strict=True):
        for column in columns:
            series = [curve for run in logs if (curve := _curve(run, column, window)) is not None]
            key = _stat_key(column, indexed)
            linestyle, marker = styles[key]
            line = f"{label}: {key}"
            if draw_row(ax, series, not fractions, line, color, linestyle, marker=marker):
                shown.add(key)
    if shown:
        from matplotlib.lines import Line2D

        keys = [k for k in keys if k in shown]
        handles = [
            Line2D([], [], color="0.3", linestyle=styles[k][0], marker=styles[k][1], ms=4)
            for k in keys
        ]
        ax.legend(
            handles,
            keys,
            title="edit:statistic" if indexed else "statistic",
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),  # beside the axes: constrained layout makes room
            borderaxespad=0,
            fontsize=7,
            title_fontsize=7,
            handlelength=2.8,
            frameon=False,
        )
        if fractions:
            ax.set_ylim(-0.04, 1.04)
    return len(shown)


def _has_edits(runs: list[list[Log]]) -> bool:
    return any(_EDIT_STAT.match(c) for logs in runs for run in logs for c in run)


def _edit_stat(column: str) -> tuple[str, str, str]:
    """``edit<i>.<type>.<stat>`` -> ``(i, type, stat)``, for a column known to be one."""
    match = _EDIT_STAT.match(column)
    if match is None:
        raise ValueError(f"{column!r} is not an edit statistic's column")
    return match[1], match[2], match[3]


def _is_fraction(column: str) -> bool:
    """A statistic of ``edit_stats`` (a fraction or a flag, 0 to 1), not of ``edit_norms``."""
    stat = _edit_stat(column)[2]
    return stat == "changed" or stat.endswith("_frac")


def _stat_key(column: str, indexed: bool) -> str:
    """The statistic's name in a legend (the edit itself is in the row's label), prefixed
    ``<i>:`` with the edit's position when some row has more than one edit."""
    index, _, stat = _edit_stat(column)
    return f"{index}:{stat}" if indexed else stat


def _style(i: int) -> tuple[Any, str | None]:
    """The ``i``-th statistic's (line style, marker): the line styles first, then each of
    them again with a marker, and so on: every statistic of a panel looks different."""
    n = len(_LINESTYLES)
    return _LINESTYLES[i % n], _MARKERS[(i // n) % len(_MARKERS)]


def _add_legend(
    fig: Figure, labels: list[str], colors: list[str], panels_height: float, banded: bool
) -> None:
    """The legend below the panels: as many columns as fit the width, the figure made tall
    enough for its rows."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, lw=2) for c in colors]
    shown = [label if len(label) <= 90 else f"{label[:60]}…{label[-29:]}" for label in labels]
    title = (
        "line: mean over seeds, band: ±1 std (log axes: geometric mean, ×/÷ geometric std)"
        if banded
        else None
    )
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]  # Agg's canvas
    width = fig.get_figwidth() * fig.dpi
    ncol = len(labels)
    while True:
        legend = fig.legend(
            handles,
            shown,
            loc="outside lower center",
            ncol=ncol,
            fontsize=9,
            frameon=False,
            title=title,
            title_fontsize=8,
        )
        extent = legend.get_window_extent(renderer)
        if extent.width <= 0.97 * width or ncol == 1:
            break
        legend.remove()
        ncol = max(1, min(ncol - 1, int(ncol * 0.97 * width / extent.width)))
    fig.set_figheight(panels_height + extent.height / fig.dpi + 0.25)
