"""Errors that end a command with one readable line instead of a traceback."""

from __future__ import annotations


class GradlabError(Exception):
    """A problem with the user's input or environment (config, files, devices, data).

    The CLI prints ``error: <message>`` and exits with :attr:`exit_code`.
    """

    exit_code = 2


class ConfigError(GradlabError):
    """The experiment config (file, overrides or values) is not valid."""


class DataError(GradlabError):
    """A dataset cannot be found, downloaded or read."""


class RunFolderError(GradlabError):
    """A run folder cannot be created, or an existing one cannot be read."""
