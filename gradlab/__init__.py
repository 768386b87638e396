"""gradlab: study what happens when you edit gradients during training.

The Python API mirrors the CLI; heavy modules load on first use::

    from gradlab import load_runs, load_steps      # comparison tables (pandas, no torch)
    from gradlab.config import load_config
    from gradlab.train import train
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load_evals", "load_runs", "load_steps"]


def __getattr__(name: str) -> Any:
    # lazy, so that `import gradlab` (and `gradlab --help`) stays free of pandas and torch
    if name in ("load_runs", "load_steps", "load_evals"):
        from gradlab import compare

        return getattr(compare, name)
    raise AttributeError(f"module 'gradlab' has no attribute {name!r}")
