"""Checkpoints: everything a run needs to go on from a step, in one file of its folder.

``checkpoint.pt`` holds the weights, the optimizer's and the GradScaler's state, every random
generator (data order, each edit's, DP noise and Poisson sampling, torch's, NumPy's and
Python's global ones), the position in the current epoch, the running state of the step log,
of gradient health, of the probes and of the privacy accountant, each edit's own state, the
evaluations so far and the byte length of each log at that step. A run resumed from it
(:mod:`gradlab.resume`) is the run that was never interrupted.

The file is ``MAGIC <sha256 of the payload>\\n`` and then the payload, which
:func:`torch.save` writes and ``torch.load(weights_only=True)`` reads (plain containers,
numbers, strings and tensors: loading runs no code). It is written beside its final name,
flushed to disk and renamed over it, after the one before has been renamed to
``checkpoint-previous.pt``: at every moment a complete checkpoint exists, and a damaged
newest one (its digest does not match) falls back to the previous one.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from gradlab.errors import RunFolderError
from gradlab.runlog import CHECKPOINT_FILE, CHECKPOINT_FILES
from gradlab.runlog import PREVIOUS_CHECKPOINT_FILE as PREVIOUS_FILE

MAGIC = b"GRADLAB-CHECKPOINT 1 "
FORMAT = 1
CHECKPOINT_SECONDS = 60.0
"""``train.checkpoint_every: 0``: a checkpoint at the first step that ends this long after
the previous one (or after the start), so that a preempted run loses about a minute."""


class CheckpointError(RunFolderError):
    """No usable checkpoint: missing, damaged, or not this run's."""


def write_checkpoint(folder: Path, state: dict[str, Any]) -> int:
    """Write ``state`` as ``folder/checkpoint.pt``, keeping the one before as
    ``checkpoint-previous.pt`` until the new one is complete on disk; returns its size in
    bytes.

    Raises:
        OSError: the file cannot be written (the partial file is removed; the checkpoints
            already there are untouched).
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    head = MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n"
    path, partial = folder / CHECKPOINT_FILE, folder / (CHECKPOINT_FILE + ".partial")
    try:
        with open(partial, "wb") as f:
            f.write(head)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.replace(path, folder / PREVIOUS_FILE)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return len(head) + len(payload)


def read_checkpoint_file(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """One checkpoint file's state, its tensors on ``device``.

    Raises:
        CheckpointError: missing, truncated, altered (digest) or not a gradlab checkpoint.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: unreadable ({exc.strerror or exc})") from None
    head, _, payload = data.partition(b"\n")
    if not head.startswith(MAGIC):
        raise CheckpointError(f"{path}: not a gradlab checkpoint")
    if hashlib.sha256(payload).hexdigest().encode() != head[len(MAGIC) :]:
        raise CheckpointError(f"{path}: damaged (its checksum does not match its contents)")
    try:
        state = torch.load(io.BytesIO(payload), map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad payload
        raise CheckpointError(f"{path}: unreadable ({str(exc)[:200]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: a checkpoint format this gradlab does not read")
    return state


def read_checkpoint(
    folder: Path, device: torch.device | str = "cpu"
) -> tuple[dict[str, Any], str | None]:
    """The newest usable checkpoint of a run folder and a warning when it had to fall back
    to the previous one (the newest damaged or missing).

    Raises:
        CheckpointError: neither checkpoint can be read (the reasons, in one line).
    """
    problems = []
    for name in CHECKPOINT_FILES:
        try:
            state = read_checkpoint_file(folder / name, device)
        except CheckpointError as exc:
            if (folder / name).exists() or name == CHECKPOINT_FILE:
                problems.append(str(exc))
            continue
        warning = None
        if problems:
            warning = f"{problems[0]}; resuming from the previous checkpoint ({name})"
        return state, warning
    if not any((folder / name).exists() for name in CHECKPOINT_FILES):
        raise CheckpointError(
            f"{folder}: no checkpoint to resume from (the run stopped before its first one, or "
            "its checkpoints were removed); train it again"
        )
    raise CheckpointError("; ".join(problems))


def remove_checkpoints(folder: Path) -> None:
    """A run that ended for good (completed or diverged) keeps no checkpoint."""
    for name in CHECKPOINT_FILES:
        try:
            (folder / name).unlink(missing_ok=True)
        except OSError:
            pass


# --------------------------------------------------------------------------- objects' state

_PLAIN = (bool, int, float, str, type(None))


def plain_state(obj: object, leave_out: set[str], who: str) -> dict[str, Any]:
    """The attributes of ``obj`` (an edit, a probe) besides ``leave_out``, copied: what it
    carries from step to step (a running average, a step counter, an error-feedback
    buffer). Values are tensors, numbers, strings, None, and lists, tuples and dicts of
    them.

    Raises:
        TypeError: an attribute of another kind, named with ``who`` (the class then gives
            ``state_dict`` and ``load_state_dict`` of its own, or lists the attribute in
            ``derived`` when ``setup`` rebuilds it).
    """
    state = {}
    for name, value in vars(obj).items():
        if name in leave_out:
            continue
        try:
            state[name] = _copy_plain(value)
        except TypeError as exc:
            raise TypeError(
                f"{who} keeps self.{name} ({exc}), which a checkpoint cannot save; list it in "
                "the class's `derived` when setup() rebuilds it, or give the class "
                "state_dict() and load_state_dict()"
            ) from None
    return state


def _copy_plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, _PLAIN):
        return value
    if type(value) in (list, tuple):
        return type(value)(_copy_plain(v) for v in value)
    if type(value) is dict and all(isinstance(k, (str, int)) for k in value):
        return {k: _copy_plain(v) for k, v in value.items()}
    raise TypeError(f"a {type(value).__name__}")


def restore_plain_state(obj: object, state: Mapping[str, Any]) -> None:
    """Put back what :func:`plain_state` took: tensors onto the device of the value they
    replace (when there is one), everything else as it was saved."""
    for name, value in state.items():
        setattr(obj, name, _like(value, getattr(obj, name, None)))


def _like(saved: Any, current: Any) -> Any:
    if isinstance(saved, torch.Tensor):
        return saved.to(current.device) if isinstance(current, torch.Tensor) else saved
    if isinstance(saved, dict):
        mapping = current if isinstance(current, dict) else {}
        return {k: _like(v, mapping.get(k)) for k, v in saved.items()}
    if isinstance(saved, (list, tuple)):
        same = isinstance(current, (list, tuple)) and len(current) == len(saved)
        items = [_like(v, current[i] if same else None) for i, v in enumerate(saved)]
        return type(saved)(items)
    return saved
