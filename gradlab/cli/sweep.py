"""The ``sweep`` command: a grid of experiments run in parallel, then their comparison."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from gradlab.cli.common import WidthOption, check_width, user_errors
from gradlab.errors import GradlabError


class Executor(str, Enum):
    local = "local"
    ray = "ray"


def sweep(
    sweep_file: Annotated[
        Path, typer.Argument(help="Sweep file (YAML).", show_default=False, dir_okay=False)
    ],
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            "-s",
            metavar="KEY=VALUE",
            help="Override a config key in every run (over the file's set, entries and "
            "grid), e.g. [bold]--set optim.epochs=1[/]; parsed as YAML. Repeatable.",
            show_default=False,
        ),
    ] = None,
    grid: Annotated[
        list[str] | None,
        typer.Option(
            "--grid",
            "-g",
            metavar="KEY=V1,V2,...",
            help="Add a grid axis crossing every entry (or replace the file's axis of that "
            "key), e.g. [bold]--grid optim.lr=0.1,0.5[/]; each value parsed as YAML. "
            "Repeatable.",
            show_default=False,
        ),
    ] = None,
    seeds: Annotated[
        str | None,
        typer.Option(
            metavar="S1,S2,...",
            help="The seeds of every run, instead of the file's (and its entries'), e.g. "
            "[bold]--seeds 0[/] for a smoke run.",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print the runs (names, count, what varies); create nothing."
        ),
    ] = False,
    executor: Annotated[
        Executor, typer.Option(help="local (worker processes) or ray.")
    ] = Executor.local,
    jobs: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Runs at a time (local: worker processes). Default: the number of cores.",
            show_default=False,
        ),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster address: host:port, ray://host:port, auto (default: "
            "$RAY_ADDRESS when set, else start a local Ray).",
            show_default=False,
        ),
    ] = None,
    shared_dir: Annotated[
        bool | None,
        typer.Option(
            "--shared-dir/--no-shared-dir",
            help="Ray: the tasks write into the sweep folder, which every node must see "
            "(watch long runs as they write); --no-shared-dir: they train in a temporary "
            "folder and send the run folder back. Default: shared when the tasks can see it.",
            show_default=False,
        ),
    ] = None,
    runs_dir: Annotated[
        Path, typer.Option("--runs-dir", help="The sweep folder goes here.")
    ] = Path("runs"),
    rerun: Annotated[
        bool, typer.Option("--rerun", help="Train again runs that are already completed.")
    ] = False,
    restart: Annotated[
        bool,
        typer.Option(
            "--restart",
            help="Train interrupted, failed and crashed runs again from step 0 (default: "
            "they go on from their checkpoints).",
        ),
    ] = False,
    max_runs: Annotated[
        int,
        typer.Option("--max-runs", min=1, help="Refuse sweeps that expand to more runs than this."),
    ] = 10_000,
    width: WidthOption = None,
) -> None:
    """Run a grid of experiments in parallel and print the grouped comparison.

    The sweep folder is [bold]<runs-dir>/<sweep name>/[/]: its run folders and sweep.json.
    Running a sweep again skips runs already completed (same experiment and seed) and
    resumes interrupted, failed and crashed ones from their checkpoints. Exit
    codes: 0 all done, 1 some run failed, 2 bad input (or the sweep is already running);
    interrupted: 130 (Ctrl-C), 143 (SIGTERM), 129 (SIGHUP).
    """
    from gradlab.cli import render
    from gradlab.cli.study import print_comparison
    from gradlab.sweeps.plan import load_sweep
    from gradlab.sweeps.run import run_sweep
    from gradlab.sweeps.view import describe

    with user_errors():
        check_width(width)
        if shared_dir is not None and executor is not Executor.ray:
            raise GradlabError("--shared-dir/--no-shared-dir apply to --executor ray only")
        if executor is Executor.ray:
            import importlib.util

            if importlib.util.find_spec("ray") is None:
                raise GradlabError("--executor ray needs Ray: pip install 'gradlab[ray]'")
        spec = load_sweep(
            sweep_file, max_runs=max_runs, sets=set_ or [], grids=grid or [], seeds=seeds
        )
        if executor is Executor.ray and address and not dry_run:
            from gradlab.sweeps.ray_address import check_address

            check_address(address)  # before the sweep folder exists
        if dry_run:
            typer.echo(describe(spec, runs_dir / spec.name), nl=False)
            raise typer.Exit(0)
        with render.SweepProgress(len(spec.runs)) as progress:
            folder = run_sweep(
                spec,
                runs_dir,
                executor.value,
                jobs,
                address,
                rerun,
                on_event=progress,
                shared_dir=shared_dir,
                restart=restart,
            )
    if spec.write_error:
        render.print_warning(spec.write_error)
    counts: dict[str, int] = {}
    for run in spec.runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    line = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    render.console.print(
        f"sweep {spec.name}: {line} -> {render.user_text(folder)}", highlight=False, soft_wrap=True
    )
    if any(r.folder for r in spec.runs):
        with user_errors():
            print_comparison([folder], width)
    failed = any(r.status not in ("done", "skipped", "interrupted") for r in spec.runs)
    if spec.signal:
        from gradlab.environment import signal_exit_code

        raise typer.Exit(signal_exit_code(spec.signal))
    raise typer.Exit(1 if failed else 0)
