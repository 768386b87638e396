"""gradlab: study what happens when you edit gradients during training.

The public API is what :data:`__all__` lists; the names load on first use, so that
``import gradlab`` (and ``gradlab --help``) stays free of torch and pandas, and the study
side (tables, statistics, plots, reports) never imports torch::

    import gradlab

    config = gradlab.load_config("configs/quickstart.yaml", ["optim.lr=0.05"])
    result = gradlab.train(config, runs_dir="runs")       # a run folder, its summary
    table = gradlab.comparison("runs/", baseline="edits=none")   # pandas, no torch
    print(gradlab.format_comparison(table, "markdown"))

Your own gradient edit is a subclass of :class:`Edit` with its own :class:`EditParams`,
named in a config by its file (``type: my_edits.py:MyEdit``, see gradlab.plugins; it reads
the step's :class:`EditContext`) or made known in this process with :func:`register_edit`.
A measurement of your own that changes nothing is a :class:`Probe` (``diagnostics.probes``,
see gradlab.probes). Everything not in ``__all__`` is internal and may change between
releases.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_PUBLIC = {
    # an experiment: config, training, gradient checking
    "Config": "gradlab.config",
    "load_config": "gradlab.config",
    "train": "gradlab.train",
    "resume": "gradlab.resume",
    "RunResult": "gradlab.train",
    "Progress": "gradlab.train",
    "gradcheck": "gradlab.gradcheck",
    "load_model": "gradlab.weights",
    "evaluate_run": "gradlab.evaluation",
    "Evaluation": "gradlab.evaluation",
    # your own edits and optimizers
    "Edit": "gradlab.editing",  # the packages: their built-ins are registered with them
    "EditParams": "gradlab.editing",
    "EditContext": "gradlab.editing",
    "ClipRule": "gradlab.privacy",
    "Probe": "gradlab.probes",
    "ProbeParams": "gradlab.probes",
    "ProbeView": "gradlab.probes",
    "register_edit": "gradlab.editing",
    "edit_strategies": "gradlab.editing",
    "Optimizer": "gradlab.optimizers",
    "register_optimizer": "gradlab.optimizers",
    # sweeps
    "load_sweep": "gradlab.sweeps.plan",
    "run_sweep": "gradlab.sweeps.run",
    "Sweep": "gradlab.sweeps.spec",
    "PlannedRun": "gradlab.sweeps.spec",
    # the study: run folders -> tables, text, plots, the report (pandas, never torch)
    "load_runs": "gradlab.study.reading",
    "load_steps": "gradlab.study.reading",
    "load_evals": "gradlab.study.reading",
    "load_grads": "gradlab.study.inspection",
    "load_alerts": "gradlab.study.inspection",
    "comparison": "gradlab.study.compare",
    "compare_runs": "gradlab.study.compare",
    "format_comparison": "gradlab.study.formats",
    "plot_comparison": "gradlab.study.plots",
    "plot_layers": "gradlab.study.inspection",
    "row_labels": "gradlab.study.labels",
    "row_colors": "gradlab.study.labels",
    "write_report": "gradlab.report.build",
    "build_report": "gradlab.report.build",
    # errors (the CLI prints them as one line and exits with their exit_code)
    "GradlabError": "gradlab.errors",
    "ConfigError": "gradlab.errors",
    "DataError": "gradlab.errors",
    "RunFolderError": "gradlab.errors",
    "CompareError": "gradlab.errors",
}
_RENAMED = {
    "register_edit": "register",
    "edit_strategies": "strategies",
    "register_optimizer": "register",
}


__all__ = [
    "__version__",
    "Config",
    "load_config",
    "train",
    "resume",
    "RunResult",
    "Progress",
    "gradcheck",
    "load_model",
    "evaluate_run",
    "Evaluation",
    "Edit",
    "EditParams",
    "EditContext",
    "ClipRule",
    "Probe",
    "ProbeParams",
    "ProbeView",
    "register_edit",
    "edit_strategies",
    "Optimizer",
    "register_optimizer",
    "load_sweep",
    "run_sweep",
    "Sweep",
    "PlannedRun",
    "load_runs",
    "load_steps",
    "load_evals",
    "load_grads",
    "load_alerts",
    "comparison",
    "compare_runs",
    "format_comparison",
    "plot_comparison",
    "plot_layers",
    "row_labels",
    "row_colors",
    "write_report",
    "build_report",
    "GradlabError",
    "ConfigError",
    "DataError",
    "RunFolderError",
    "CompareError",
]
"""The public API: every name a user may import from gradlab (the keys of ``_PUBLIC``)."""


def __getattr__(name: str) -> Any:
    # lazy: a name's module (and torch or pandas with it) loads when the name is first used
    if name not in _PUBLIC:
        raise AttributeError(f"module 'gradlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


class _Package(types.ModuleType):
    """``gradlab.train``, ``gradlab.resume`` and ``gradlab.gradcheck`` are functions of the public API and also
    the modules that define them; importing such a module would bind it here, over the
    function (``gradlab.train(config)`` would then fail), so that binding is left out. The
    modules stay importable by name (``from gradlab.train import train``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if not (name in _PUBLIC and isinstance(value, types.ModuleType)):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from gradlab.config import Config, load_config
    from gradlab.editing.base import Edit, EditContext, EditParams
    from gradlab.editing.registry import register as register_edit
    from gradlab.editing.registry import strategies as edit_strategies
    from gradlab.errors import CompareError, ConfigError, DataError, GradlabError, RunFolderError
    from gradlab.evaluation import Evaluation, evaluate_run
    from gradlab.gradcheck import gradcheck
    from gradlab.optimizers.base import Optimizer
    from gradlab.optimizers.registry import register as register_optimizer
    from gradlab.privacy import ClipRule
    from gradlab.report.build import build_report, write_report
    from gradlab.resume import resume
    from gradlab.study.compare import compare_runs, comparison
    from gradlab.study.formats import format_comparison
    from gradlab.study.inspection import load_alerts, load_grads, plot_layers
    from gradlab.study.labels import row_colors, row_labels
    from gradlab.study.plots import plot_comparison
    from gradlab.study.reading import load_evals, load_runs, load_steps
    from gradlab.sweeps.plan import load_sweep
    from gradlab.sweeps.run import run_sweep
    from gradlab.sweeps.spec import PlannedRun, Sweep
    from gradlab.train import Progress, RunResult, train
