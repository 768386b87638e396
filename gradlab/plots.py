"""Plots of compared runs: training loss, test accuracy and gradient norm against step.

matplotlib (Agg backend) is imported only when a plot is asked for.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from gradlab.compare import load_evals, load_steps


def _mean_band(frames: list[pd.DataFrame], column: str) -> pd.DataFrame:
    """Mean and std of ``column`` across runs, aligned by step."""
    joined = pd.concat([f[["step", column]] for f in frames if column in f.columns])
    return joined.groupby("step")[column].agg(["mean", "std"]).reset_index()


def smoothing_window(total_steps: int) -> int:
    """Moving-average window for loss and gradient norm: about 1/50 of the run, at least 1."""
    return max(1, total_steps // 50)


def plot_comparison(table: pd.DataFrame, out: str | Path) -> Path:
    """Write a PNG with one line per table row (mean and a band of +- one std across seeds
    when the row is a group of runs).

    Args:
        table: from :func:`gradlab.compare.comparison` (its ``attrs["paths"]`` names the runs).
        out: the PNG file; written through a temporary file, so a failure leaves nothing.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    runs = [[load_steps(p) for p in paths] for paths in table.attrs["paths"]]
    evals = [[load_evals(p) for p in paths] for paths in table.attrs["paths"]]
    longest = max((len(s) for group in runs for s in group), default=1)
    window = smoothing_window(longest)

    fig, axes = plt.subplots(1, 3, figsize=(16, 5), constrained_layout=True)
    colors = plt.get_cmap("tab10" if len(table) <= 10 else "tab20").colors
    for i, (row, steps, tests) in enumerate(
        zip(table.to_dict("records"), runs, evals, strict=True)
    ):
        color = colors[i % len(colors)]
        label = f"{row['name']}: {row['edits']}"
        if row.get("n", 1) > 1:
            label += f" (n={row['n']})"
        smoothed = [
            s.assign(
                loss=s["loss"].rolling(window, min_periods=1).mean(),
                grad_norm=s["grad_norm"].rolling(window, min_periods=1).mean(),
            )
            for s in steps
            if len(s)
        ]
        panels = [
            (axes[0], smoothed, "loss"),
            (axes[1], tests, "test_accuracy"),
            (axes[2], smoothed, "grad_norm"),
        ]
        for ax, frames, column in panels:
            frames = [f for f in frames if len(f)]
            if not frames:
                continue
            band = _mean_band(frames, column)
            ax.plot(
                band["step"],
                band["mean"],
                color=color,
                label=label if ax is axes[0] else None,
                marker="o" if column == "test_accuracy" and len(band) < 30 else None,
                ms=3,
            )
            if len(frames) > 1:
                ax.fill_between(
                    band["step"],
                    band["mean"] - band["std"],
                    band["mean"] + band["std"],
                    color=color,
                    alpha=0.2,
                    linewidth=0,
                )
    axes[0].set_title(f"training loss (moving average over {window} steps)")
    axes[0].set_ylabel("cross-entropy")
    axes[1].set_title("test accuracy")
    axes[1].set_ylabel("accuracy")
    axes[2].set_title(f"gradient norm before edits (moving average over {window} steps)")
    axes[2].set_ylabel("global L2 norm")
    axes[2].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncol=min(3, len(table)), fontsize=9, frameon=False)
    return save_figure(fig, out)


def save_figure(fig, out: Path) -> Path:
    """Write ``fig`` as a PNG through a temporary file and a rename (a failure leaves no
    half-written picture), and close it."""
    import matplotlib.pyplot as plt

    tmp = out.with_name(f".{out.name}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=110)
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return out
