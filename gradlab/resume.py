"""``gradlab train --resume RUN``: an interrupted, crashed or failed run goes on from its
last checkpoint, in its own folder, and ends as the run that was never interrupted.

:func:`prepare_resume` reads and checks everything before any file of the run changes: the
run is not completed, diverged or still alive; the config is the run's own (a config given
must equal it, else the differing keys are listed); the checkpoint is readable (a damaged
newest one falls back to the previous one, with a warning) and belongs to the run. Then
:func:`gradlab.train.train` checks the setup (device, AMP, engine, the plugins' sources, the
dataset's files, the logs' columns and lengths), truncates each log to its length at the
checkpoint, and goes on from the checkpoint's step. ``summary.json`` says at the end how
many times and from which steps the run was resumed (``resumed``); ``meta.json`` keeps one
record per resume (when, where, with which command).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradlab.errors import GradlabError, RunFolderError
from gradlab.runlog import (
    ALERTS_COLUMNS,
    ALERTS_FILE,
    CONFIG_FILE,
    GRADS_FILE,
    SUMMARY_FILE,
    check_log,
    flatten,
    read_meta,
    read_summary,
    run_status,
)

if TYPE_CHECKING:
    from gradlab.config import Config
    from gradlab.diagnostics import Alert
    from gradlab.train import Progress, RunResult


class ResumeError(GradlabError):
    """The run cannot be resumed (one line says why and what to do)."""


@dataclass
class Resume:
    """A run folder ready to go on: its checkpoint's state, read and checked."""

    folder: Path
    state: dict[str, Any]
    meta: dict[str, Any]
    summary: dict[str, Any]
    warning: str | None = None  # the newest checkpoint was damaged: the previous one is used

    @property
    def step(self) -> int:
        return int(self.state["step"])

    @property
    def threads(self) -> int | None:
        """The torch threads the run trained with (a resumed run uses them too: a CPU
        matrix product's last bits depend on how it is split)."""
        threads = self.meta.get("torch_threads")
        return threads if isinstance(threads, int) and threads > 0 else None

    def check(
        self, meta: dict[str, Any], dataset: dict[str, Any], logs: dict[str, list[str]]
    ) -> None:
        """The setup about to resume (its ``meta``, the ``dataset`` loaded, the columns of
        the logs it writes) is the run's own, and each log still holds what it held at the
        checkpoint.

        Raises:
            ResumeError: the device, AMP mode, engine, a plugin's source or the dataset's
                files differ from the run's.
            RunFolderError: a log no longer matches the checkpoint.
        """
        if meta.get("experiment_hash") != self.meta.get("experiment_hash"):
            raise ResumeError(f"{self.folder}: {_setup_difference(self.meta, meta)}")
        before = self.meta.get("dataset", {}).get("sha256")
        now = dataset.get("sha256")
        if isinstance(before, dict) and isinstance(now, dict) and before != now:
            changed = sorted(k for k in {*before, *now} if before.get(k) != now.get(k))
            raise ResumeError(
                f"{self.folder}: the dataset's files changed since the run started "
                f"({', '.join(changed)}: other sha256); resuming would not continue the same run"
            )
        from gradlab.diagnostics import GRADS_COLUMNS

        columns = {**logs, GRADS_FILE: GRADS_COLUMNS, ALERTS_FILE: ALERTS_COLUMNS}
        for name, size in self.state["logs"].items():
            if name not in columns:
                raise RunFolderError(f"{self.folder / name}: a log this run does not write")
            check_log(self.folder / name, columns[name], int(size))

    def record(self, meta: dict[str, Any]) -> dict[str, Any]:
        """What ``meta.json`` keeps of this resume (``resumed``, one per resume)."""
        keys = ("host", "gradlab_version", "torch_version", "torch_threads", "device", "cwd")
        return {
            "step": self.step,
            "after": self.summary.get("status"),  # how the part before it ended
            **({"error": self.summary["error"]} if self.summary.get("error") else {}),
            "started": meta.get("started"),
            "command": meta.get("command"),
            **{k: meta.get(k) for k in keys},
        }


def prepare_resume(folder: str | Path, config: Config | None = None) -> tuple[Config, Resume]:
    """The config and checkpoint of the run in ``folder``, checked: see the module's
    docstring. ``config``: the config the user gave, which must equal the run's.

    Raises:
        ResumeError: the run is completed, diverged or still running; the config differs.
        RunFolderError: not a run folder; no usable checkpoint.
    """
    from gradlab.checkpoint import read_checkpoint
    from gradlab.config import load_config
    from gradlab.errors import ConfigError

    folder = Path(folder)
    if not folder.is_dir():
        raise RunFolderError(f"{folder}: no such run folder")
    if not (folder / SUMMARY_FILE).exists() and not (folder / CONFIG_FILE).exists():
        raise RunFolderError(f"{folder}: not a run folder (no summary.json, no config.yaml)")
    summary, meta = read_summary(folder), read_meta(folder)
    status = run_status(summary, meta, folder)
    if status in ("completed", "diverged"):
        steps = summary.get("diverged_step") or summary.get("steps")
        raise ResumeError(
            f"{folder}: the run {status} (at step {steps}): nothing to resume; train the "
            "config again for another run"
        )
    if status == "running":
        age = time.time() - (folder / SUMMARY_FILE).stat().st_mtime
        raise ResumeError(
            f"{folder}: the run is still running (pid {summary.get('pid')} on "
            f"{meta.get('host')}, alive {age:.0f} s ago); stop it first (it then writes a "
            "checkpoint), or wait two minutes after it died on another host"
        )
    try:
        own = load_config(folder / CONFIG_FILE)
    except ConfigError as exc:
        raise RunFolderError(f"{folder}: its config.yaml no longer loads ({exc})") from None
    if config is not None:
        differences = _config_difference(own.to_dict(), config.to_dict())
        if differences:
            raise ResumeError(
                f"the config differs from the run's in {differences}; a resumed run keeps its "
                f"own config ({folder / CONFIG_FILE}): leave the config out"
            )
    root = Path(own.data.root)
    trained_in = meta.get("cwd")
    if not root.is_absolute() and not root.exists() and isinstance(trained_in, str):
        if (Path(trained_in) / root).exists():  # data.root relative to where it trained
            data = own.data.model_copy(update={"root": str(Path(trained_in) / root)})
            own = own.model_copy(update={"data": data})
    state, warning = read_checkpoint(folder)
    if state.get("experiment_hash") != meta.get("experiment_hash"):
        raise RunFolderError(f"{folder}: its checkpoint belongs to another run")
    return own, Resume(folder, state, meta, summary, warning)


def resume(
    folder: str | Path,
    config: Config | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_alert: Callable[[Alert], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> RunResult:
    """Go on with the interrupted run in ``folder`` from its last checkpoint (the public
    face of ``gradlab train --resume``): the run ends with the same logs, weights and
    summary it would have had, never interrupted (timing columns aside).

    Args:
        config: the run's config again, if given (it must equal the folder's).
        on_warning: hears that the newest checkpoint was damaged and the previous one used
            (default: printed to stderr).

    Raises:
        GradlabError: the run cannot be resumed (one line says why).
    """
    from gradlab.train import train

    own, prepared = prepare_resume(folder, config)
    if prepared.warning:
        (on_warning or _print_warning)(prepared.warning)
    return train(own, on_progress=on_progress, on_alert=on_alert, command=sys.argv, resume=prepared)


def _print_warning(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr)


def _config_difference(own: dict[str, Any], given: dict[str, Any], shown: int = 5) -> str:
    """The keys two configs disagree on, with both values (the first ``shown``)."""
    a, b = flatten(own), flatten(given)
    keys = [k for k in sorted({*a, *b}) if a.get(k) != b.get(k) and k != "name"]
    parts = [f"{k} (run: {_shown(a.get(k))}, given: {_shown(b.get(k))})" for k in keys[:shown]]
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(parts) + more


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."


def _setup_difference(before: dict[str, Any], now: dict[str, Any]) -> str:
    """Why a setup is another experiment than the run's: what its device, AMP mode, engine
    or plugins resolve to here."""
    from gradlab.identity import resolved_from_meta

    was, here = resolved_from_meta(before), resolved_from_meta(now)
    diffs = [
        f"{k} {was.get(k)} in the run, {here.get(k)} here"
        for k in ("device", "amp", "grad_scaler", "engine")
        if was.get(k) != here.get(k)
    ]
    for spec in sorted({*was.get("plugins", {}), *here.get("plugins", {})}):
        if was.get("plugins", {}).get(spec) != here.get("plugins", {}).get(spec):
            diffs.append(f"{spec} changed since the run started (another sha256)")
    what = "; ".join(diffs) or "its experiment differs from the run's"
    return (
        f"cannot resume here: {what}; resume where the run started, with the same "
        "train.device, train.amp, train.engine and plugin sources"
    )
