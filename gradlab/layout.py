"""Moved in 0.2: ``gradlab.layout`` is :mod:`gradlab.study.layout`, and the public API is in
:mod:`gradlab` (gradlab.format_comparison). This old path keeps working, with a FutureWarning, until 0.3."""

import warnings

warnings.warn(
    "gradlab.layout moved to gradlab.study.layout; use the public API in gradlab "
    "(gradlab.format_comparison). gradlab.layout goes in 0.3",
    FutureWarning,
    stacklevel=2,
)

from gradlab.study.layout import *  # noqa: E402, F403
