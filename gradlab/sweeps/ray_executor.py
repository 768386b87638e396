"""Sweep runs as Ray tasks, on a local Ray or any cluster, with or without a file system
that the driver and the workers share.

Without a shared file system (the default unless the sweep folder is visible from the
task), a task trains into a temporary folder on its node and returns the run folder's
files; the driver writes them into the run folder it claimed in the sweep folder, so
resume and ``sweep.json`` work as with local workers. With a shared file system
(``shared=True``, or detected: the task sees a probe file the driver wrote in the sweep
folder) the task trains in place, so a long run can be watched while it writes.

Ctrl-C, SIGTERM and SIGHUP stop the driver as they stop a local sweep (``ray.init``'s own
SIGTERM handler, which would end the driver at once and lose the runs, is undone): every
task is cancelled, which drops a queued one (its claimed folder is removed again) and
interrupts a running one as Ctrl-C does (its run finishes its step and ends
``interrupted``; its files still come back); only then does a local Ray shut down.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gradlab.config import config_from_dict
from gradlab.errors import GradlabError
from gradlab.runlog import CHECKPOINT_FILES
from gradlab.sweeps.ray_address import ENV_ADDRESS, check_address, check_endpoint, parse_address
from gradlab.sweeps.spec import PlannedRun
from gradlab.sweeps.worker import (
    NOT_STARTED,
    Event,
    claim_folder,
    died,
    record_failure,
    record_result,
    run_one,
    run_sources,
)

PROBE_PREFIX = ".ray-probe-"
STOP_TIMEOUT = 120.0
"""Seconds the stopping sweep waits for its running tasks before it kills them."""


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one short line: its type and its message, lines joined."""
    message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _start_ray(ray: Any, address: str | None, name: str, jobs: int) -> bool:
    """Connect to the cluster at ``address``, or start a local Ray with ``jobs`` CPUs (no
    address, or ``local``). True when this started Ray (and so should shut it down). Any
    failure becomes one GradlabError line that starts with ``name``, or says that a local
    Ray could not start."""
    local = address is None or address == "local"
    started = not ray.is_initialized()
    try:
        with _sigterm_kept(ray):
            _init(ray, address, name, jobs, local)
    except Exception as exc:  # noqa: BLE001 - Ray's errors are many, and many lines long
        _shutdown(ray)
        if isinstance(exc, GradlabError):
            raise
        if local:
            raise GradlabError(f"cannot start a local Ray: {_one_line(exc)}") from None
        message = _one_line(exc)
        if address == "auto":  # Ray found no cluster on this machine
            message = f"{message.rstrip('.')}; start one with ray start --head"
        raise GradlabError(f"{name}: {message}") from None
    return started and local


def _init(ray: Any, address: str | None, name: str, jobs: int, local: bool) -> None:
    if local:
        ray.init(
            address=address,
            num_cpus=jobs,
            ignore_reinit_error=True,
            log_to_driver=False,
            include_dashboard=False,
        )
    else:
        endpoint = parse_address(str(address), name)
        target = endpoint.ray_address() if endpoint else address
        ray.init(address=target, ignore_reinit_error=True, log_to_driver=False)


def _shutdown(ray: Any) -> None:
    try:
        ray.shutdown()
    except Exception:  # noqa: BLE001, S110 - a half-started Ray: nothing more to do
        pass


@contextlib.contextmanager
def _sigterm_kept(ray: Any) -> Iterator[None]:
    """Keep this process's SIGTERM handler across ``ray.init``, which replaces it with its
    own (``sys.exit``, behind a C++ handler that prints a stack dump): with Ray's, SIGTERM
    would end the driver at once, shutting down the tasks' workers under their runs. A
    SIGTERM that comes during ``ray.init`` (Ray's handler has made it a SystemExit) goes
    to the kept handler once Ray is shut down again. Outside the main thread Ray sets
    no handler, and nothing changes here."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    kept = signal.getsignal(signal.SIGTERM)
    try:
        yield
    except SystemExit as exc:
        if exc.code != signal.SIGTERM or not callable(kept):
            raise
        _shutdown(ray)
        signal.signal(signal.SIGTERM, kept)
        kept(signal.SIGTERM, None)  # gradlab's: the sweep stops (a KeyboardInterrupt)
        raise
    finally:
        if kept is not None:  # None: a handler not set from Python, which cannot be put back
            signal.signal(signal.SIGTERM, kept)


def train_task(
    config: dict[str, Any],
    sweep_dir: str,
    folder_name: str,
    probe: str,
    shared: bool | None,
    command: list[str] | None = None,
    plugins: dict[str, dict[str, str]] | None = None,
    resume: dict[str, bytes] | None = None,
) -> dict[str, Any]:
    """A Ray task: one run, trained in the sweep folder when it is shared with the driver,
    else in a temporary folder whose files come back in the result (``files``: relative
    path -> bytes). ``where`` says which. ``resume``: the files of an interrupted run's
    folder (its checkpoint among them), which goes on from its checkpoint: in the sweep
    folder when shared, else from these files, written into the temporary folder. ``command``: the driver's command line, recorded
    in meta.json (the task's own is Ray's worker). ``plugins``: the source of its plugin
    edits, which travels with the task (the node need not have the files).

    Stopped by ``ray.cancel`` (Ray interrupts the task as Ctrl-C does), a training run ends
    ``interrupted`` with what it logged; a task stopped before its run began returns
    ``started: False`` and leaves its folder empty; packing the files is never cut short.
    """
    visible = Path(probe).is_file()
    if shared is True and not visible:
        return {
            "status": "failed",
            "folder": folder_name,
            "error": f"--shared-dir: the sweep folder {sweep_dir} is not visible on the node "
            f"{os.uname().nodename}; leave --shared-dir out to copy the run folders back",
        }
    stops: list[int] = []  # recorded: outside training, a stop waits for the result
    with _sigint(lambda signum, frame: stops.append(signum)):
        in_place = visible and shared is not False
        root = Path(sweep_dir) if in_place else Path(tempfile.mkdtemp(prefix="gradlab-ray-"))
        folder = root / folder_name
        try:
            if not in_place:
                folder.mkdir()
                if resume:
                    write_files(folder, resume)
            result = _train(config, root, folder, command, stops, plugins, resume is not None)
            if in_place:
                return {**result, "files": None, "where": "shared"}
            trained = root / result["folder"] if result.get("folder") else folder
            files = folder_files(trained)
            name = result.get("folder") or folder_name
            return {**result, "folder": name, "files": files, "where": str(root)}
        finally:
            if not in_place:
                shutil.rmtree(root, ignore_errors=True)


def _train(
    config: dict[str, Any],
    root: Path,
    folder: Path,
    command: list[str] | None,
    stops: list[int],
    plugins: dict[str, dict[str, str]] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """:func:`run_one` in a task that the sweep may stop (``stops``: a stop came already).
    While the run trains, training's own handler takes the interrupt (the step finishes,
    the run ends interrupted); one that comes before (the task still imports torch) or
    just after finds the folder empty (not started) or the run's summary written (which
    then stands)."""
    try:
        with _sigint(signal.default_int_handler):
            if stops:
                raise KeyboardInterrupt
            return run_one(config, str(root), 1, str(folder), command, plugins, resume)
    except KeyboardInterrupt:
        if not any(folder.iterdir()):
            return {"status": "interrupted", "error": NOT_STARTED, "started": False}
        cfg = config_from_dict(config)
        return record_failure(cfg, root, "the sweep was interrupted", folder, "interrupted")


@contextlib.contextmanager
def _sigint(handler: Any) -> Iterator[None]:
    """SIGINT (how ``ray.cancel`` interrupts a task) handled by ``handler`` within."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def folder_files(folder: Path) -> dict[str, bytes]:
    """A run folder's files (relative path -> bytes), for a task that resumes it on a node
    that does not see the sweep folder."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    """Write a run folder's files that a task returned, each through a temporary file and a
    rename; a name that would leave the folder is refused."""
    root = folder.resolve()
    for name, data in files.items():
        target = (folder / name).resolve()
        if root not in target.parents:
            raise OSError(f"refusing to write {name!r} outside the run folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)


def run_ray(
    runs: list[PlannedRun],
    sweep_dir: Path,
    address: str | None,
    jobs: int,
    on_start: Event,
    on_done: Event,
    shared: bool | None = None,
) -> None:
    """Submit each run as a Ray task: to the cluster at ``address``, else to a local Ray
    started here with ``jobs`` CPUs. ``shared``: None = detect whether the sweep folder is
    visible from the tasks, True = require it, False = always copy the run folders back.

    Without ``address``, RAY_ADDRESS names the cluster when it is set (as under ``ray job
    submit``). A wrong address, or a Ray that cannot start, raises GradlabError (one line).
    A KeyboardInterrupt (Ctrl-C, or the sweep's SIGTERM and SIGHUP handler) stops every
    task (see the module's docstring) before it is raised again.
    """
    name = f"--address {address}"
    if address:
        address = address.strip()
        check_address(address)
    elif os.environ.get(ENV_ADDRESS, "").strip():
        address = os.environ[ENV_ADDRESS].strip()
        name = f"{ENV_ADDRESS}={address}"
        if address != "auto":
            check_endpoint(address, name)
    try:
        import ray
    except ImportError:
        raise GradlabError("--executor ray needs Ray: pip install 'gradlab[ray]'") from None
    started = _start_ray(ray, address or None, name, jobs)
    command = [str(arg) for arg in sys.argv]  # the sweep's, not the Ray worker's
    sweep_dir = sweep_dir.resolve()
    probe = sweep_dir / f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    tasks: dict[Any, tuple[PlannedRun, Path]] = {}  # the tasks not yet finished
    try:
        probe.write_text("gradlab: a task that can read this shares the sweep folder\n")
        task = ray.remote(num_cpus=1, max_retries=0)(train_task)
        try:
            for run in runs:
                folder = claim_folder(sweep_dir, run)
                ref = task.remote(
                    run.config, str(sweep_dir), folder.name, str(probe), shared, command,
                    run_sources(run), folder_files(folder) if run.resume else None,
                )  # fmt: skip
                tasks[ref] = (run, folder)
                on_start(run)
            pending = list(tasks)
            while pending:
                finished, pending = ray.wait(pending, num_returns=1)
                for ref in finished:
                    _finish(ray, ref, *tasks[ref], sweep_dir, on_done)
                    del tasks[ref]  # after: a stop during _finish finishes it again
        except KeyboardInterrupt:
            _stop(ray, tasks, runs, sweep_dir, on_done)
            raise
    finally:
        probe.unlink(missing_ok=True)
        if started:
            ray.shutdown()


def _stop(
    ray: Any,
    tasks: dict[Any, tuple[PlannedRun, Path]],
    runs: list[PlannedRun],
    sweep_dir: Path,
    on_done: Event,
) -> None:
    """Stop the sweep's unfinished tasks and record how each run ended: a queued task is
    dropped (its claimed folder removed, its run not started), a running one is
    interrupted and waited for (its files written, as when it ends by itself) and killed
    after :data:`STOP_TIMEOUT` seconds. Further stop signals wait for this."""
    with _signals_ignored():
        for ref in tasks:
            with contextlib.suppress(Exception):  # a task that has just ended
                ray.cancel(ref)
        deadline = time.monotonic() + STOP_TIMEOUT
        for ref, (run, folder) in list(tasks.items()):
            _finish(ray, ref, run, folder, sweep_dir, on_done, deadline)
        for run in runs:  # claimed, but interrupted before it was submitted
            if run.status == "pending" and run.folder:
                with contextlib.suppress(OSError):
                    (sweep_dir / run.folder).rmdir()
                    run.folder = None


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP ignored within (in the main thread): the sweep is
    stopping already, and a second signal must not cut that short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    names = ("SIGINT", "SIGTERM", "SIGHUP")
    numbers = [getattr(signal, n) for n in names if hasattr(signal, n)]
    previous = {number: signal.signal(number, signal.SIG_IGN) for number in numbers}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _finish(
    ray: Any,
    ref: Any,
    run: PlannedRun,
    folder: Path,
    sweep_dir: Path,
    on_done: Event,
    deadline: float | None = None,
) -> None:
    """The end of one task: its files written into its run folder (when they came back),
    then its status recorded. ``deadline`` (a ``time.monotonic()``): the sweep is stopping,
    and a task that has not ended by then is killed."""
    stopping = deadline is not None
    try:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        result = ray.get(ref, timeout=timeout)
    except ray.exceptions.GetTimeoutError:
        with contextlib.suppress(Exception):  # it may end on its own just now
            ray.cancel(ref, force=True)
        why = f"killed: did not stop within {STOP_TIMEOUT:g} s of the sweep being interrupted"
        record_result(run, died(run, sweep_dir, why, stopping=True), on_done)
        return
    except Exception as exc:  # noqa: BLE001 - a task or worker that died, or was cancelled
        if stopping and isinstance(exc, ray.exceptions.TaskCancelledError):
            result = {"status": "interrupted", "error": NOT_STARTED, "started": False}
        else:
            why = f"the Ray task died ({type(exc).__name__}: {str(exc)[:300]})"
            record_result(run, died(run, sweep_dir, why, stopping=stopping), on_done)
            return
    files = result.pop("files", None)
    result.pop("where", None)
    if result.pop("started", True) is False:  # dropped, or stopped before it began
        try:
            folder.rmdir()
            run.folder = result["folder"] = None
        except OSError:  # something is in it after all: recorded from what is there
            result = died(run, sweep_dir, "the sweep was interrupted", stopping=True)
    elif files is not None:
        try:
            if result.get("folder") and result["folder"] != folder.name:  # trained anew
                folder = sweep_dir / result["folder"]
                folder.mkdir(exist_ok=True)
            write_files(folder, files)
            for name in CHECKPOINT_FILES:  # a run that ended for good keeps none
                if name not in files:
                    (folder / name).unlink(missing_ok=True)
        except OSError as exc:
            why = f"the run's files could not be written to {folder}: {exc.strerror or exc}"
            result = died(run, sweep_dir, why)
    record_result(run, result, on_done)
