"""gradlab: study what happens when you edit gradients during training.

The Python API mirrors the CLI; heavy modules load on first use::

    from gradlab import comparison, load_runs      # comparison tables (pandas, no torch)
    from gradlab.config import load_config
    from gradlab.train import train
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = [
    "__version__",
    "compare_runs",
    "comparison",
    "load_alerts",
    "load_evals",
    "load_grads",
    "load_runs",
    "load_steps",
]


def __getattr__(name: str) -> Any:
    # lazy, so that `import gradlab` (and `gradlab --help`) stays free of pandas and torch
    if name in ("load_runs", "load_steps", "load_evals", "comparison", "compare_runs"):
        from gradlab import compare

        return getattr(compare, name)
    if name in ("load_grads", "load_alerts"):
        from gradlab import inspection

        return getattr(inspection, name)
    raise AttributeError(f"module 'gradlab' has no attribute {name!r}")
