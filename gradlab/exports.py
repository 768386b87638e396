"""Moved in 0.2: ``gradlab.exports`` is :mod:`gradlab.study.exports`, and the public API is in
:mod:`gradlab` (gradlab.format_comparison). This old path keeps working, with a FutureWarning, until 0.3."""

import warnings

warnings.warn(
    "gradlab.exports moved to gradlab.study.exports; use the public API in gradlab "
    "(gradlab.format_comparison). gradlab.exports goes in 0.3",
    FutureWarning,
    stacklevel=2,
)

from gradlab.study.exports import *  # noqa: E402, F403
