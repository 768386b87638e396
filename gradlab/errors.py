"""Errors that end a command with one readable line instead of a traceback.

A library function's error speaks of its own arguments (``ci 2: the confidence level must be
between 0 and 1``); the CLI, which knows them as options, names those instead
(``--ci 2: ...``) through :meth:`GradlabError.worded`.
"""

from __future__ import annotations

import re
from collections.abc import Callable


class GradlabError(Exception):
    """A problem with the user's input or environment (config, files, devices, data).

    The CLI prints ``error: <message>`` and exits with :attr:`exit_code`.

    Args:
        message: one line, in the words of the function that raised it.
        argument: the argument whose name the message starts with (``sort_by 'x': unknown
            column``).
        about: the argument whose value the message starts with (a path: ``x.jpg:
            unsupported format``).
        mentions: other arguments the message names, as whole words (``test_metric needs
            baseline``).
    """

    exit_code = 2

    def __init__(
        self,
        message: str = "",
        argument: str | None = None,
        about: str | None = None,
        mentions: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.argument, self.about, self.mentions = argument, about, mentions

    def worded(self, name: Callable[[str], str]) -> str:
        """The message with each argument called ``name(argument)`` (for the CLI: its
        option): in place of the leading ``argument``, before the value of ``about``, and
        for each of ``mentions``."""
        text = str(self)
        if self.argument is not None and text.startswith(self.argument):
            text = name(self.argument) + text[len(self.argument) :]
        if self.about is not None:
            text = f"{name(self.about)} {text}"
        for other in self.mentions:
            text = re.sub(rf"(?<![\w.'=-]){re.escape(other)}(?![\w'-])", name(other), text)
        return text


class ConfigError(GradlabError):
    """The experiment config (file, overrides or values) is not valid."""


class DataError(GradlabError):
    """A dataset cannot be found, downloaded or read."""


class RunFolderError(GradlabError):
    """A run folder cannot be created, or an existing one cannot be read."""


class CompareError(GradlabError):
    """Nothing to compare, or a choice (column, baseline, plot, format) that does not exist."""
