"""Sweep runs as Ray tasks, on a local Ray or any cluster, with or without a file system
that the driver and the workers share.

Without a shared file system (the default unless the sweep folder is visible from the
task), a task trains into a temporary folder on its node and returns the finished run
folder's files; the driver writes them into the run folder it claimed in the sweep
folder, so resume and ``sweep.json`` work as with local workers. With a shared file
system (``shared=True``, or detected: the task sees a probe file the driver wrote in the
sweep folder) the task trains in place, so a long run can be watched while it writes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradlab.errors import GradlabError
from gradlab.executors import Event, _claim_folder, _died, _record, run_one

if TYPE_CHECKING:
    from gradlab.plan import PlannedRun

PROBE_PREFIX = ".ray-probe-"


def train_task(
    config: dict[str, Any], sweep_dir: str, folder_name: str, probe: str, shared: bool | None
) -> dict[str, Any]:
    """A Ray task: one run, trained in the sweep folder when it is shared with the driver,
    else in a temporary folder whose files come back in the result (``files``: relative
    path -> bytes). ``where`` says which."""
    visible = Path(probe).is_file()
    if shared is True and not visible:
        return {
            "status": "failed",
            "folder": folder_name,
            "error": f"--shared-dir: the sweep folder {sweep_dir} is not visible on the node "
            f"{os.uname().nodename}; leave --shared-dir out to copy the run folders back",
        }
    if visible and shared is not False:
        result = run_one(config, sweep_dir, 1, str(Path(sweep_dir) / folder_name))
        return {**result, "files": None, "where": "shared"}
    scratch = tempfile.mkdtemp(prefix="gradlab-ray-")
    try:
        folder = Path(scratch) / folder_name
        folder.mkdir()
        result = run_one(config, scratch, 1, str(folder))
        files = {
            path.relative_to(folder).as_posix(): path.read_bytes()
            for path in sorted(folder.rglob("*"))
            if path.is_file()
        }
        return {**result, "folder": folder_name, "files": files, "where": scratch}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


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
    visible from the tasks, True = require it, False = always copy the run folders back."""
    try:
        import ray
    except ImportError:
        raise GradlabError("--executor ray needs Ray: pip install 'gradlab[ray]'") from None
    if address:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    else:
        ray.init(
            num_cpus=jobs, ignore_reinit_error=True, log_to_driver=False, include_dashboard=False
        )
    sweep_dir = sweep_dir.resolve()
    probe = sweep_dir / f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    try:
        probe.write_text("gradlab: a task that can read this shares the sweep folder\n")
        task = ray.remote(num_cpus=1, max_retries=0)(train_task)
        refs = {}
        for run in runs:
            folder = _claim_folder(sweep_dir, run)
            ref = task.remote(run.config, str(sweep_dir), folder.name, str(probe), shared)
            refs[ref] = (run, folder)
            on_start(run)
        pending = list(refs)
        try:
            while pending:
                finished, pending = ray.wait(pending, num_returns=1)
                for ref in finished:
                    _finish(ray, ref, *refs[ref], sweep_dir, on_done)
        except KeyboardInterrupt:
            for ref in pending:  # a running task gets KeyboardInterrupt: it ends interrupted
                ray.cancel(ref)
            for ref in pending:
                _finish(ray, ref, *refs[ref], sweep_dir, on_done, stopping=True)
            raise
    finally:
        probe.unlink(missing_ok=True)
        if not address:
            ray.shutdown()


def _finish(
    ray: Any,
    ref: Any,
    run: PlannedRun,
    folder: Path,
    sweep_dir: Path,
    on_done: Event,
    stopping: bool = False,
) -> None:
    """The end of one task: its files written into its run folder (when they came back),
    then its status recorded."""
    try:
        result = ray.get(ref, timeout=60 if stopping else None)
    except Exception as exc:  # noqa: BLE001 - a task or worker that died, or was cancelled
        why = (
            "cancelled: the sweep was interrupted"
            if stopping
            else f"the Ray task died ({type(exc).__name__}: {str(exc)[:300]})"
        )
        _record(run, _died(run, sweep_dir, why, stopping=stopping), on_done)
        return
    files = result.pop("files", None)
    result.pop("where", None)
    if files is not None:
        try:
            write_files(folder, files)
        except OSError as exc:
            why = f"the run's files could not be written to {folder}: {exc.strerror or exc}"
            result = _died(run, sweep_dir, why)
    _record(run, result, on_done)
