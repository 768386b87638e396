"""Figure files: a figure made on an Agg canvas outside pyplot (a notebook's backend is left
alone), and written as PNG, PDF or SVG whole or not at all. matplotlib is imported only when
a figure is made or saved.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from gradlab.errors import CompareError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMATS = (".png", ".pdf", ".svg")
_DPI = 110


def check_plot_path(path: str | Path) -> Path:
    """``path`` as a Path when its suffix is one of :data:`FORMATS` (any case).

    Raises:
        CompareError: another suffix, or none.
    """
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise CompareError(f"{path}: unsupported format; use .png, .pdf or .svg", about="path")
    return path


def new_figure(width: float, height: float) -> Figure:
    """An empty figure (inches) with constrained layout on an Agg canvas, outside pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, out: str | Path) -> Path:
    """Write ``fig`` in the format its suffix names (:data:`FORMATS`) through a temporary
    file and a rename (a failure leaves no half-written picture), and close it.

    Raises:
        CompareError: an unsupported suffix. OSError: the file cannot be written.
    """
    out = check_plot_path(out)
    fmt = out.suffix.lower()[1:]
    metadata = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}.get(fmt)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        fig.savefig(tmp, format=fmt, dpi=_DPI, metadata=metadata)
        os.replace(tmp, out)
    finally:
        if getattr(fig.canvas, "manager", None) is not None:  # made with pyplot
            import matplotlib.pyplot as plt

            plt.close(fig)
        tmp.unlink(missing_ok=True)
    return out
