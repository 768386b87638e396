"""Moved in 0.2: ``gradlab.latex`` is :mod:`gradlab.study.latex`, and the public API is in
:mod:`gradlab` (gradlab.format_comparison(table, 'latex')). This old path keeps working, with a FutureWarning, until 0.3."""

import warnings

warnings.warn(
    "gradlab.latex moved to gradlab.study.latex; use the public API in gradlab "
    "(gradlab.format_comparison(table, 'latex')). gradlab.latex goes in 0.3",
    FutureWarning,
    stacklevel=2,
)

from gradlab.study.latex import *  # noqa: E402, F403
