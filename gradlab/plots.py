"""Moved in 0.2: ``gradlab.plots`` is :mod:`gradlab.study.plots`, and the public API is in
:mod:`gradlab` (gradlab.plot_comparison, gradlab.row_labels, gradlab.row_colors). This old path keeps working, with a FutureWarning, until 0.3."""

import warnings

warnings.warn(
    "gradlab.plots moved to gradlab.study.plots; use the public API in gradlab "
    "(gradlab.plot_comparison, gradlab.row_labels, gradlab.row_colors). gradlab.plots goes in 0.3",
    FutureWarning,
    stacklevel=2,
)

from gradlab.study.figures import FORMATS, check_plot_path, save_figure  # noqa: E402, F401
from gradlab.study.labels import row_colors, row_labels  # noqa: E402, F401
from gradlab.study.plots import *  # noqa: E402, F403
