"""The commands about one experiment: ``train``, ``evaluate``, ``validate``, ``gradcheck``,
``strategies``, ``check-edit``."""

from __future__ import annotations

import json
import os
import re
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from gradlab.cli.common import ConfigArg, SetOption, check_writable, overrides, user_errors
from gradlab.errors import GradlabError

EXIT_CODES = {"completed": 0, "failed": 1, "diverged": 3, "interrupted": 130}


def train(
    config: Annotated[
        Path | None,
        typer.Argument(
            help="Experiment config (YAML); with --resume, optional (it must then be the "
            "run's own).",
            show_default=False,
            dir_okay=False,
        ),
    ] = None,
    set_: SetOption = None,
    runs_dir: Annotated[
        Path, typer.Option("--runs-dir", help="Where run folders are created.")
    ] = Path("runs"),
    name: Annotated[
        str | None, typer.Option(help="Run name (overrides `name`).", show_default=False)
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            help="auto, cpu, cuda, cuda:N or mps (overrides `train.device`).", show_default=False
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Random seed (overrides `seed`).", show_default=False)
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar; print only the run folder.")
    ] = False,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Go on with an interrupted, crashed or failed run from its last checkpoint, "
            "in its folder; the result is the run never interrupted.",
            show_default=False,
            file_okay=False,
        ),
    ] = None,
) -> None:
    """Train one experiment and write its run folder under [bold]runs/[/], or go on with
    one ([bold]--resume RUN[/]).

    Exit codes: 0 completed, 1 failed, 2 bad input, 3 diverged; interrupted: 130 (Ctrl-C),
    143 (SIGTERM), 129 (SIGHUP).
    """
    from gradlab.config import load_config

    with user_errors():
        changes = overrides(set_, name=name, seed=seed, **{"train.device": device})
        if resume is None and config is None:
            raise GradlabError("missing CONFIG: give an experiment config, or --resume RUN")
        if resume is not None and str(resume).startswith("-"):
            raise GradlabError(f"--resume {resume}: give the run folder to resume")
        if resume is not None and changes:
            raise GradlabError(
                "--resume keeps the run's own config: no --set, --name, --seed or --device"
            )
        if resume is not None and runs_dir != Path("runs"):
            raise GradlabError("--resume goes on in the run's own folder: no --runs-dir")
        cfg = load_config(config, changes) if config is not None else None
        from gradlab.cli import render
        from gradlab.train import train as run_training

        prepared = None
        if resume is not None:
            from gradlab.resume import prepare_resume

            cfg, prepared = prepare_resume(resume, cfg)
            if prepared.warning:
                render.print_warning(prepared.warning)
        assert cfg is not None
        if quiet:
            result = run_training(cfg, runs_dir, on_alert=render.print_alert, resume=prepared)
            typer.echo(str(result.path))
        else:
            with render.TrainingProgress(cfg.name[:24]) as progress:
                result = run_training(
                    cfg, runs_dir, on_progress=progress, on_alert=render.print_alert,
                    resume=prepared,
                )  # fmt: skip
            render.print_run_summary(result.path, result.summary)
    status = result.summary["status"]
    if status == "failed":
        trace = result.path / "traceback.txt"
        where = f" (traceback in {trace})" if trace.exists() and trace.stat().st_size else ""
        render.print_error(f"the run failed: {result.summary.get('error')}{where}")
    if status == "interrupted":
        from gradlab.environment import signal_exit_code

        raise typer.Exit(signal_exit_code(result.summary.get("signal")))
    raise typer.Exit(EXIT_CODES[status])


class Which(str, Enum):
    final = "final"
    best = "best"


class EvalFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


class Dataset(str, Enum):
    mnist = "mnist"
    fashion_mnist = "fashion-mnist"
    mnist_sample = "mnist-sample"


def evaluate(
    run: Annotated[
        Path,
        typer.Argument(help="A run folder with its weights.", show_default=False, file_okay=False),
    ],
    data: Annotated[
        Dataset | None,
        typer.Option(
            help="Evaluate on this dataset's test set (default: the run's own).", show_default=False
        ),
    ] = None,
    root: Annotated[
        str | None,
        typer.Option(
            help="Where that dataset's IDX files are (default: the run's data.root).",
            show_default=False,
        ),
    ] = None,
    which: Annotated[
        Which, typer.Option(help="final (model.safetensors) or best (model-best.safetensors).")
    ] = Which.final,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "cpu",
    plot: Annotated[
        Path | None,
        typer.Option(
            help="Also write the confusion matrix here (.png, .pdf or .svg).",
            show_default=False,
            dir_okay=False,
        ),
    ] = None,
    fmt: Annotated[
        EvalFormat, typer.Option("--format", "-f", help="table, json or csv on stdout.")
    ] = EvalFormat.table,
) -> None:
    """Evaluate a trained run on its own test set or another dataset's: test loss and
    accuracy, accuracy per class and the confusion matrix. Written to the run's
    [bold]evaluations/[/] (JSON, CSV, PNG); what training recorded is never changed."""
    from gradlab.evaluation import evaluate_run, write_evaluation

    with user_errors({"path": "--plot", "data": "--data", "root": "--root", "which": "--which"}):
        if plot is not None:
            from gradlab.study.figures import check_plot_path

            check_plot_path(plot)
            check_writable(plot, "--plot")
        result = evaluate_run(run, data.value if data else None, root, which.value, device)
        try:
            written = write_evaluation(result, plot)
        except OSError as exc:
            raise GradlabError(f"cannot write the evaluation: {exc.strerror or exc}") from None
        from gradlab.cli import render

        if fmt is EvalFormat.json:
            typer.echo(json.dumps(result.to_dict(), indent=2))
        elif fmt is EvalFormat.csv:
            typer.echo(result.csv_text(), nl=False)
        else:
            render.print_evaluation(result.to_dict(), written)


def validate(config: ConfigArg, set_: SetOption = None) -> None:
    """Check a config and print it fully resolved (defaults filled in); creates nothing."""
    from gradlab.config import load_config

    with user_errors():
        cfg = load_config(config, overrides(set_))
    typer.echo(cfg.to_yaml(), nl=False)


class CheckFormat(str, Enum):
    table = "table"
    json = "json"


class Inputs(str, Enum):
    dataset = "dataset"
    random = "random"


def gradcheck(
    config: ConfigArg,
    set_: SetOption = None,
    samples: Annotated[int, typer.Option(min=1, help="Examples in the batch.")] = 8,
    eps: Annotated[float, typer.Option(help="Perturbation of each entry (> 0).")] = 1e-5,
    entries: Annotated[
        str, typer.Option(help="Random entries per parameter tensor, or 'all'.")
    ] = "all",
    inputs: Annotated[
        Inputs,
        typer.Option(help="'dataset' (the first training examples) or 'random' pixels."),
    ] = Inputs.dataset,
    fmt: Annotated[
        CheckFormat, typer.Option("--format", "-f", help="table or json.")
    ] = CheckFormat.table,
) -> None:
    """Check the gradients of every engine against finite differences (float64).

    An entry passes when |g - approx| <= floor + 1e-5 (|g| + |approx|), the floor being what
    central differences resolve at this eps: round-off 4 x machine eps x |J| / eps, plus
    the truncation measured against eps/2. Per parameter, the worst entry's relative error
    beyond its floor: <= 1e-5 good, ~1e-3 suspicious, larger wrong. Entries whose +-eps
    moves some ReLU input across 0 are kinks, counted and left out. Exit 0 when no
    parameter is suspicious or wrong (and some entry is not a kink), 1 otherwise.
    """
    from gradlab.config import load_config
    from gradlab.gradcheck import check_options
    from gradlab.gradcheck import gradcheck as run_gradcheck

    with user_errors():
        if entries != "all" and not (re.fullmatch(r"[0-9]{1,9}", entries) and int(entries) > 0):
            raise GradlabError(f"--entries {entries!r}: use a positive whole number or 'all'")
        count = None if entries == "all" else int(entries)
        check_options(samples, eps, count, inputs.value)  # before any work or output
        cfg = load_config(config, overrides(set_))
        from gradlab.cli import render

        if fmt is CheckFormat.table:
            render.err_console.print(
                "checking gradients against finite differences ...", highlight=False
            )
        report = run_gradcheck(cfg, samples, eps, count, inputs.value)
    if fmt is CheckFormat.json:
        typer.echo(json.dumps(report, indent=2))
    else:
        render.print_gradcheck(report)
    raise typer.Exit(0 if report["passed"] else 1)


def strategies(
    source: Annotated[
        str | None,
        typer.Argument(
            help="List the edits of your own instead: a Python file (my_edits.py), a module "
            "(my_package.edits) or a config that uses some (exp.yaml). Runs that code.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """List every gradient-editing strategy and probe with its parameters, defaults and
    description."""
    from gradlab.cli import render
    from gradlab.editing import EditParams, param_docs
    from gradlab.editing import strategies as registry
    from gradlab.probes import Probe, ProbeParams, probe_param_docs, probes

    if source is not None:
        from gradlab.plugins import plugins_in

        with user_errors():
            found = plugins_in(source)
        classes = {_shown_spec(p.spec): p.cls for p in found}
    else:
        classes = {**registry(), **probes()}
    rows = [
        {
            "family": "probe" if issubclass(cls, Probe) else cls.family,
            "name": name,
            "summary": cls.summary,
            "params": (
                probe_param_docs(cls.Params) if issubclass(cls, Probe) else param_docs(cls.Params)
            ),
        }
        for name, cls in classes.items()
    ]
    render.print_strategies(
        rows, param_docs(EditParams, common=True), probe_param_docs(ProbeParams, common=True)
    )


def _shown_spec(spec: str) -> str:
    """A plugin spec as a config next to the working directory would write it."""
    target, _, name = spec.rpartition(":")
    if os.path.isabs(target):
        relative = os.path.relpath(target)
        target = relative if not relative.startswith("..") else target
    return f"{target}:{name}"


def check_edit(
    spec: Annotated[
        str,
        typer.Argument(
            help="The edit: path/to/file.py:ClassName, package.module:ClassName or a built-in "
            "name. Runs that code.",
            show_default=False,
        ),
    ],
    config: Annotated[
        Path | None,
        typer.Option(
            help="Check it on this config's network, data and optimizer (its entry for the "
            "edit, with its parameters, when it has one); default: the two-layer net on the "
            "MNIST sample.",
            show_default=False,
        ),
    ] = None,
    set_: SetOption = None,
    steps: Annotated[int, typer.Option(help="Steps per run (2 to 10000).")] = 20,
) -> None:
    """Check an edit of your own before a study: a few steps with each engine, with and
    without fp16 AMP on the CPU; the contract, same seed same results, finite values, its
    statistics, and its cost per step beside a step without it. Exit 0 when every check
    passes, 1 when one fails, 2 for a bad spec or config."""
    from gradlab.checkedit import check_edit as run_check
    from gradlab.checkedit import check_steps
    from gradlab.config import config_from_dict, load_config

    with user_errors():
        check_steps(steps)
        cfg = load_config(config, overrides(set_)) if config is not None else None
        if cfg is None and set_:
            from gradlab.checkedit import DEFAULT

            cfg = config_from_dict(DEFAULT, overrides(set_), source="--set")
        from gradlab.cli import render

        render.err_console.print(f"checking {spec} ...", highlight=False)
        report = run_check(spec, cfg, steps)
    render.print_check_edit(report)
    raise typer.Exit(0 if report["passed"] else 1)
