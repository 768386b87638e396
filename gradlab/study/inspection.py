"""Reading one run's gradient health back: per-layer statistics and alerts (pandas, no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from gradlab.errors import CompareError, RunFolderError
from gradlab.runlog import (
    ALERTS_COLUMNS,
    ALERTS_FILE,
    GRADS_FILE,
    GRADS_STATS,
    read_config,
    read_summary,
)
from gradlab.study.reading import is_run_folder, read_log

if TYPE_CHECKING:
    from matplotlib.figure import Figure

STATS = GRADS_STATS
OPTIONAL = ("norm_after",)  # runs written before it existed: read as empty


def load_grads(run: str | Path) -> pd.DataFrame:
    """``grads.csv`` of a run: one row per check and parameter."""
    path = Path(run) / GRADS_FILE
    if not path.exists():
        try:
            folder = Path(run).is_dir() and is_run_folder(Path(run))
        except OSError as exc:
            raise CompareError(f"{run}: cannot be read ({exc.strerror or exc})") from None
        if not folder:
            raise CompareError(
                f"{run}: not a run folder (no config.yaml or summary.json); inspect takes one "
                "run's folder, e.g. runs/<name>-<date>-<time>-<hex>"
            )
        raise CompareError(f"{run}: no {GRADS_FILE} ({_why_no_grads(Path(run))})")
    grads = read_log(path, "weight_norm")
    for column in OPTIONAL:
        if column not in grads.columns:
            grads[column] = float("nan")
    return _checked(grads, path, ["step", "param", *STATS])


def _why_no_grads(run: Path) -> str:
    """Why a run folder has no grads.csv, as far as its config and summary tell."""
    try:
        every = read_config(run).get("diagnostics", {}).get("every")
    except (RunFolderError, AttributeError):
        every = None
    if every == 0:
        return "the run had diagnostics.every: 0"
    try:
        steps = read_summary(run).get("steps")
    except (RunFolderError, AttributeError):
        steps = None
    if isinstance(every, int) and isinstance(steps, int) and steps < 1:
        return "the run stopped before its first gradient check"
    setting = f"diagnostics.every: {every}" if isinstance(every, int) else "diagnostics on"
    return f"missing, although the run had {setting}: the file was removed or never written"


def load_alerts(run: str | Path) -> pd.DataFrame:
    """``alerts.csv`` of a run (empty when none fired)."""
    path = Path(run) / ALERTS_FILE
    if not path.exists():
        return pd.DataFrame(columns=ALERTS_COLUMNS)
    return _checked(read_log(path, "message"), path, ALERTS_COLUMNS, numeric=["step"])


def _checked(
    df: pd.DataFrame, path: Path, columns: list[str], numeric: list[str] | None = None
) -> pd.DataFrame:
    """``df`` with the expected ``columns`` (an error naming the missing ones) and its
    numeric columns as numbers (a cell that is not one becomes NaN)."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise CompareError(
            f"{path}: unexpected columns (missing {', '.join(missing)}); was it written by gradlab?"
        )
    for column in numeric if numeric is not None else [c for c in columns if c != "param"]:
        df[column] = pd.to_numeric(df[column], errors="coerce")
    finite = df["step"].notna() & (df["step"].abs() != float("inf"))
    if not finite.all():
        df = df[finite].reset_index(drop=True)
    return df


def layer_table(grads: pd.DataFrame) -> pd.DataFrame:
    """First, last, min and max of every statistic of every parameter over the run."""
    rows = []
    for param, checks in grads.groupby("param", sort=False):
        checks = checks.sort_values("step")
        for stat in (s for s in STATS if s in checks.columns):
            values = checks[stat]
            rows.append(
                {
                    "param": param,
                    "stat": stat,
                    "first": values.iloc[0],
                    "last": values.iloc[-1],
                    "min": values.min(),
                    "max": values.max(),
                    "argmax_step": int(checks["step"].iloc[values.argmax()])
                    if values.notna().any()
                    else None,
                }
            )
    return pd.DataFrame(rows)


def plot_layers(
    grads: pd.DataFrame, out: str | Path | None = None, title: str = ""
) -> Path | Figure:
    """Each parameter's gradient norm and update-to-weight ratio against step (log axes).

    Args:
        grads: from :func:`load_grads`.
        out: a ``.png``, ``.pdf`` or ``.svg`` file, written whole or not at all; None
            returns the figure instead (to change in a notebook).
        title: above both panels (the run's name).

    Raises:
        CompareError: an unsupported format.
    """
    from matplotlib import colormaps

    from gradlab.study.figures import check_plot_path, new_figure, save_figure

    target = None if out is None else check_plot_path(out)
    fig = new_figure(13, 4.8)
    axes = fig.subplots(1, 2)
    params = list(dict.fromkeys(grads["param"]))
    layers = list(dict.fromkeys(p.rsplit(".", 1)[0] for p in params))
    cmap = colormaps["viridis"]  # one colour per layer, first (dark) to last (light)
    for param, checks in grads.groupby("param", sort=False):
        layer = layers.index(param.rsplit(".", 1)[0])
        style = {
            "color": cmap(0.9 * layer / max(1, len(layers) - 1)),
            "linestyle": "--" if param.endswith(".bias") else "-",  # bias dashed
            "label": param,
        }
        axes[0].plot(checks["step"], checks["norm"], **style)
        axes[1].plot(checks["step"], checks["update_ratio"], **style)
    axes[0].set_title("gradient norm per parameter (before edits)")
    axes[0].set_ylabel("L2 norm")
    axes[1].set_title("update-to-weight ratio ||Δw|| / ||w|| (the real step)")
    axes[1].set_ylabel("ratio")
    for ax in axes:
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3, which="both")
    fig.legend(
        *axes[0].get_legend_handles_labels(),
        loc="outside right center",
        fontsize=9,
        frameon=False,
    )
    if title:
        fig.suptitle(title)
    return fig if target is None else save_figure(fig, target)
