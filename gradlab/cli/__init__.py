"""The ``gradlab`` command: thin Typer commands that parse, validate, call the library and
render.

The commands live by group: :mod:`~gradlab.cli.run` (train, evaluate, validate,
gradcheck, strategies), :mod:`~gradlab.cli.study` (compare, report, inspect) and
:mod:`~gradlab.cli.sweep`; :mod:`~gradlab.cli.common` holds what they share (options, the
translation of library errors into option names), :mod:`~gradlab.cli.render` is the only
module that draws with rich. Heavy libraries (torch, pandas) are imported inside the
commands that need them, so ``gradlab --help`` answers at once.
"""

from __future__ import annotations

import re
import sys
from typing import Annotated, Any

import typer
import typer.core

import gradlab
from gradlab.cli import run, study, sweep

try:  # typer vendors click from 0.2x on
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

_NOT_ONE_OF = re.compile(
    r"^(?:Value error, )?(?P<value>'.*'|\".*\") is not one of (?P<choices>.+?)\.?$"
)


class OneLineErrors(typer.core.TyperGroup):
    """Command-line mistakes (an unknown option, a value of the wrong type, a directory given
    for a file) end like every other bad input: one ``error:`` line, exit 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click_exceptions.NoArgsIsHelpError as exc:
            typer.echo(exc.ctx.get_help())
            sys.exit(exc.exit_code)
        except click_exceptions.ClickException as exc:
            from gradlab.cli.render import print_error

            ctx = getattr(exc, "ctx", None)
            hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            print_error((_choice_error(exc) or exc.format_message().rstrip(".")) + hint)
            sys.exit(exc.exit_code)
        sys.exit(code if isinstance(code, int) else 0)


def _choice_error(exc: Any) -> str | None:
    """``--format 'xml': use one of table, csv, ...`` for a value that is not one of an
    option's choices (click words it as ``Invalid value for '--format' / '-f': ...``)."""
    match = _NOT_ONE_OF.match(str(getattr(exc, "message", "")))
    options = getattr(getattr(exc, "param", None), "opts", None)
    if match is None or not options:
        return None
    choices = [c.strip().strip("'") for c in match["choices"].split(",")]
    allowed = " or ".join(choices) if len(choices) == 2 else "one of " + ", ".join(choices)
    return f"{max(options, key=len)} {match['value']}: use {allowed}"


app = typer.Typer(
    cls=OneLineErrors,
    name="gradlab",
    help="Study what happens when you edit gradients during training.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gradlab {gradlab.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Study what happens when you edit gradients during training."""


for _command in (
    run.train,
    run.evaluate,
    run.validate,
    study.compare,
    study.report,
    run.gradcheck,
    study.inspect,
    sweep.sweep,
    run.strategies,
):
    app.command()(_command)
app.command("check-edit")(run.check_edit)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="gradlab")
