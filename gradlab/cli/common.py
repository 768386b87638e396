"""What the commands share: the config and width options, checks of output paths, and the
translation of library errors into one ``error:`` line that names the options."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from gradlab.errors import GradlabError

ConfigArg = Annotated[
    Path, typer.Argument(help="Experiment config (YAML).", show_default=False, dir_okay=False)
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        metavar="KEY=VALUE",
        help="Override a config key, e.g. [bold]--set optim.lr=0.1[/]; the value is parsed as "
        "YAML. Repeatable.",
        show_default=False,
    ),
]
WidthOption = Annotated[
    int | None,
    typer.Option(
        help="Fit tables to N columns (default: the terminal's width; 100 on a pipe or in a "
        "file). At least 40.",
        show_default=False,
    ),
]


def option_name(argument: str) -> str:
    """The option a library argument is given by: ``sort_by`` -> ``--sort-by``."""
    return "--" + argument.replace("_", "-")


@contextmanager
def user_errors(options: dict[str, str] | None = None) -> Iterator[None]:
    """Turn gradlab's user-facing errors into one line on stderr and their exit code. The
    library's words for its arguments become the options that give them: ``options`` maps
    an argument to its option where the name differs (``{"out": "--output"}``)."""
    try:
        yield
    except GradlabError as exc:
        from gradlab.cli.render import print_error

        print_error(exc.worded(lambda a: (options or {}).get(a) or option_name(a)))
        raise typer.Exit(exc.exit_code) from None


def check_width(width: int | None) -> None:
    from gradlab.study.layout import MIN_WIDTH

    if width is not None and not MIN_WIDTH <= width <= 10_000:
        raise GradlabError(f"--width {width}: use a number of columns from {MIN_WIDTH} to 10000")


def check_writable(path: Path | None, flag: str) -> None:
    """Refuse, before any work, an output that cannot be written: a folder, a missing or
    read-only folder to put it in."""
    if path is None:
        return
    if path.is_dir():
        raise GradlabError(f"{flag} {path}: is a folder; name a file")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise GradlabError(f"{flag} {path}: cannot write (no folder {parent})")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise GradlabError(f"{flag} {path}: cannot write ({_why_not_writable(parent)})")


def _why_not_writable(folder: Path) -> str:
    """Why a folder cannot be written: its file system is mounted read-only, or not."""
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows)
        read_only = False
    return "a read-only file system" if read_only else "permission denied"


def names(text: str | None, flag: str) -> list[str] | None:
    """A comma-separated option as a list (None when not given; an error when empty)."""
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise GradlabError(f"{flag} {text!r}: name at least one, separated by commas")
    return parts


def overrides(sets: list[str] | None, **named: object) -> list[str]:
    """``--set`` items, then ``KEY=VALUE`` for each shorthand option that was given."""
    items = list(sets or [])
    for key, value in named.items():
        if value is not None:
            items.append(f"{key}={json.dumps(value)}")  # JSON is YAML: strings stay strings
    return items
