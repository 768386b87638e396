"""One run of a sweep, as the local worker processes and the Ray tasks run it, and what is
recorded for a run whose process died.

:func:`run_one` never raises for a failing run; the executors report each run's start and
end through callbacks (:data:`Event`) so the sweep can show progress and keep
``sweep.json`` current.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from gradlab.config import Config, PrivacyConfig, config_from_dict
from gradlab.environment import resolved_setup
from gradlab.errors import GradlabError
from gradlab.plugins import pin_sources, plugin_sources, plugin_specs
from gradlab.runlog import (
    CONFIG_FILE,
    SUMMARY_FILE,
    RunWriter,
    create_run_folder,
    read_meta,
    read_summary,
    write_json,
)
from gradlab.sweeps.spec import PlannedRun

Event = Callable[[PlannedRun], None]
"""What an executor calls with a run when it starts it, and again when the run ended."""
NOT_STARTED = "not started: the sweep was interrupted"
"""The error of a run that a stopped sweep never started (it has no run folder)."""


def run_one(
    config: dict[str, Any],
    sweep_dir: str,
    threads: int | None = None,
    folder: str | None = None,
    command: list[str] | None = None,
    plugins: dict[str, dict[str, str]] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train one run of a sweep (in a worker process or a Ray task) into ``folder``, an
    empty run folder the sweep claimed for it (so that it knows the folder even if this
    process dies); ``resume``: ``folder`` is an interrupted run's, which goes on from its
    checkpoint (a run that cannot, its checkpoint damaged say, trains again in a new
    folder). ``command``: the sweep's command line, recorded in meta.json (default:
    this process's ``sys.argv``, which in a Ray worker is Ray's, not the sweep's).
    ``plugins``: the source of the run's plugin edits
    (:func:`gradlab.plugins.plugin_sources`), run instead of their files.

    Never raises for a failing run: a problem found before training (missing data, no such
    device) still gets a run folder whose summary says failed, with the error.
    """
    import torch

    from gradlab.train import SetupInterrupted, train

    if threads:
        torch.set_num_threads(threads)
    run_folder = Path(folder) if folder else None
    try:  # the config again, in this process, with the plugins' code the sweep planned with
        pin_sources(plugins)
        cfg = config_from_dict(config)
    except GradlabError as exc:
        return unstartable(run_folder, str(exc))
    try:
        prepared = None
        if resume and run_folder is not None:
            from gradlab.resume import prepare_resume

            try:
                cfg, prepared = prepare_resume(run_folder, cfg)
            except GradlabError:  # nothing to go on from: the run again, from its start
                run_folder = create_run_folder(sweep_dir, cfg.name)
        result = train(cfg, sweep_dir, command=command, run_folder=run_folder, resume=prepared)
        return {
            "status": result.summary["status"],
            "folder": result.path.name,
            "error": result.summary.get("error"),
        }
    except SetupInterrupted as exc:  # stopped in setup's privacy accounting: not started
        if run_folder is not None and not resume:
            with contextlib.suppress(OSError):
                run_folder.rmdir()  # still empty: the run never began
        return {"status": "interrupted", "folder": None, "error": str(exc), "started": False}
    except GradlabError as exc:
        return record_failure(cfg, sweep_dir, str(exc), run_folder)
    except Exception as exc:  # noqa: BLE001 - a bug: still recorded, the others go on
        return record_failure(cfg, sweep_dir, f"{type(exc).__name__}: {exc}", run_folder)


def run_sources(run: PlannedRun) -> dict[str, dict[str, str]] | None:
    """The source of ``run``'s plugins (edits, a clipping rule) as planned
    (:func:`gradlab.plugins.plugin_sources`), for its task; None when it has none."""
    return plugin_sources(plugin_specs(run.config)) or None


def unstartable(folder: Path | None, error: str) -> dict[str, Any]:
    """The result of a run whose config no longer validates in the worker (a plugin file
    edited or removed since the sweep was planned): its claimed folder says failed."""
    if folder is not None:
        try:
            write_json(folder / SUMMARY_FILE, {"status": "failed", "steps": 0, "error": error})
        except OSError:
            pass
    return {"status": "failed", "folder": folder.name if folder else None, "error": error}


def record_failure(
    cfg: Config,
    sweep_dir: str | Path,
    error: str,
    folder: Path | None = None,
    status: str = "failed",
) -> dict[str, Any]:
    """Make ``folder`` (or a new run folder) say that its run ended as ``status`` (failed, or
    interrupted) with ``error``: its config and a minimal meta.json when the run never
    wrote them, and a summary with what the run logged (:func:`spent_privacy` for a
    private run), unless the run already ended with a
    summary of its own (which then stands)."""
    from gradlab.study.reading import figures_from_logs  # pandas: only for a run that failed

    folder = folder if folder is not None else create_run_folder(sweep_dir, cfg.name)
    if not (folder / CONFIG_FILE).exists():
        setup = resolved_setup(cfg)
        meta = {
            "experiment_hash": cfg.experiment_hash(setup),
            "seed": cfg.seed,
            "device": setup["device"],
            "amp": {"dtype": setup["amp"], "grad_scaler": setup["grad_scaler"]},
            "engine": setup["engine"],
        }
        RunWriter.create(sweep_dir, cfg.name, cfg.to_yaml(), meta, ["step"], folder=folder).close()
    try:
        previous = read_summary(folder).get("status")
    except GradlabError:
        previous = None
    if previous in (None, "running"):
        summary: dict[str, Any] = {"steps": 0, **figures_from_logs(folder)}
        if cfg.privacy is not None:
            summary.update(spent_privacy(cfg, folder, int(summary["steps"])))
        summary.update(status=status, error=error)
        write_json(folder / SUMMARY_FILE, summary)
        return {"status": status, "folder": folder.name, "error": error}
    return {"status": previous, "folder": folder.name, "error": None}


def spent_privacy(cfg: Config, folder: Path, steps: int) -> dict[str, Any]:
    """What a private run's summary says of its guarantee after the ``steps`` it logged
    (its last evaluation may be earlier): epsilon accounted at that step with the run's
    sigma and sample rate (meta.json) and its delta and accountant, as a run that ends
    itself reports it (null where infinite). Empty when meta.json does not say them."""
    try:
        recorded = read_meta(folder)["privacy"]
        sigma, q = float(recorded["noise_multiplier"]), float(recorded["sample_rate"])
    except (GradlabError, AttributeError, KeyError, TypeError, ValueError):
        return {}
    if not (math.isfinite(sigma) and sigma >= 0 and 0 < q <= 1):
        return {}
    from gradlab.privacy import epsilon  # Opacus: only for a private run that died

    privacy = cast(PrivacyConfig, cfg.privacy)
    spent = epsilon(sigma, q, steps, privacy.delta, privacy.accountant)
    return {
        "epsilon": spent if math.isfinite(spent) else None,
        "delta": privacy.delta,
        "noise_multiplier": sigma,
        "sample_rate": q,
        "accountant": privacy.accountant,
        "privacy_steps": steps,
    }


def claim_folder(sweep_dir: Path, run: PlannedRun) -> Path:
    """Create ``run``'s (empty) run folder in the sweep folder before it starts, so that the
    sweep knows where it is even if the run's process dies (a run that resumes has its
    folder already)."""
    if run.resume and run.folder:
        return sweep_dir / run.folder
    folder = create_run_folder(sweep_dir, run.name)
    run.folder = folder.name
    return folder


def record_result(run: PlannedRun, result: dict[str, Any], on_done: Event) -> None:
    """Copy a run's result (from :func:`run_one` or :func:`died`) into ``run``; tell ``on_done``."""
    run.status = "done" if result["status"] == "completed" else result["status"]
    run.folder, run.error = result.get("folder") or run.folder, result.get("error")
    if result.get("started") is False and not run.resume:  # no folder: it never began
        run.folder = None
    on_done(run)


STOP_SIGNALS = {"SIGINT", "SIGTERM", "SIGHUP"}


def died(
    run: PlannedRun, sweep_dir: Path, why: str, signal_name: str | None = None, stopping=False
) -> dict[str, Any]:
    """The result of a run whose process died: its folder says so (unless the run had
    already written a final summary). Killed by a stop signal, or while the sweep was
    being stopped, the run was interrupted; otherwise it failed. Never raises: a folder
    that cannot be written (a full disk) leaves only the sweep's record."""
    status = "interrupted" if stopping or signal_name in STOP_SIGNALS else "failed"
    folder = sweep_dir / run.folder if run.folder else None
    try:
        return record_failure(config_from_dict(run.config), sweep_dir, why, folder, status)
    except Exception as exc:  # noqa: BLE001 - the record is all that is left
        return {"status": status, "folder": run.folder, "error": f"{why}; and {exc}"}
