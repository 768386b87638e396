"""Seeds, devices, mixed precision and the engine as they resolve on this machine, Ctrl-C, and
the description of the machine a run used."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import random
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

import gradlab
from gradlab.engines import resolve_engine
from gradlab.errors import ConfigError

if TYPE_CHECKING:
    from gradlab.config import Config


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) from the run's ``seed``: the one place."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(spec: str) -> torch.device:
    """``auto`` -> cuda, then mps, then cpu; an explicit device must exist on this machine."""
    mps_ok = hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_ok else "cpu")
    if spec.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if index >= count:
            have = f"{count} CUDA device(s)" if count else "no CUDA device"
            raise ConfigError(
                f"train.device: {spec} is not available (this machine has {have}); use auto or cpu"
            )
        return torch.device("cuda", index)
    if spec == "mps" and not mps_ok:
        raise ConfigError("train.device: mps is not available on this machine; use auto or cpu")
    return torch.device(spec)


def resolve_amp(mode: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """The autocast dtype (None = off) and whether a GradScaler is used.

    ``auto`` = fp16 with a GradScaler on CUDA, off elsewhere; ``fp16`` always uses a
    GradScaler (on the CPU too, which is how the AMP path is tested without a GPU).
    """
    if mode == "auto":
        mode = "fp16" if device.type == "cuda" else "off"
    if mode == "fp16":
        return torch.float16, True
    if mode == "bf16":
        return torch.bfloat16, False
    return None, False


def setup_record(
    device: torch.device, amp_dtype: torch.dtype | None, use_scaler: bool, engine: str
) -> dict[str, Any]:
    """The resolved setup as :mod:`gradlab.identity` reads it back from ``meta.json``."""
    return {
        "device": device.type,
        "amp": str(amp_dtype).removeprefix("torch.") if amp_dtype else "off",
        "grad_scaler": use_scaler,
        "engine": engine,
    }


def resolved_setup(config: Config) -> dict[str, Any]:
    """What ``train.device``, ``train.amp`` and ``train.engine`` resolve to on this machine
    (part of the experiment's identity), the sha256 of each plugin edit's source
    (``plugins``, by spec; only when the config has one) and a warm start's source run
    (``init_from``: its experiment key and seed). Settings that cannot run here (a missing device)
    are returned as written: such a run fails at its start anyway."""
    try:
        device = resolve_device(config.train.device)
        amp_dtype, use_scaler = resolve_amp(config.train.amp, device)
        engine = resolve_engine(config.train.engine, amp_dtype)
        resolved = setup_record(device, amp_dtype, use_scaler, engine)
    except ConfigError:
        resolved = {
            "device": config.train.device.split(":")[0],
            "amp": config.train.amp,
            "grad_scaler": False,
            "engine": config.train.engine,
        }
    from gradlab.plugins import plugin_hashes, plugin_specs

    hashes = plugin_hashes(plugin_specs(config))
    if hashes:
        resolved["plugins"] = hashes
    if config.model.init_from is not None:  # the source run's experiment and seed
        from gradlab.weights import init_source

        resolved["init_from"] = init_source(config.model.init_from)
    return resolved


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def git_commit(cwd: str | None = None) -> dict[str, object] | None:
    """The commit of the working directory's git checkout and whether it has changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return platform.processor() or platform.machine() or "cpu"
    return device.type


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


PACKAGES = (
    "torch", "torchvision", "numpy", "scipy", "pandas", "pydantic", "opacus", "safetensors",
    "ray",
)  # fmt: skip
"""The packages whose versions shape a run's results or its accounting (meta.json)."""


def package_versions() -> dict[str, str | None]:
    """The installed version of each of :data:`PACKAGES` (None: not installed), read from
    the packages' metadata without importing them."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def gradlab_source() -> dict[str, object]:
    """Where gradlab's own code comes from: its folder, and when that is a git checkout of
    gradlab (not a checkout it merely sits in), its commit and dirty flag."""
    package = os.path.dirname(os.path.abspath(gradlab.__file__))
    record: dict[str, object] = {"path": package, "git": None}
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=package, capture_output=True,
            text=True, timeout=5,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return record
    if top.returncode == 0 and os.path.samefile(
        os.path.join(top.stdout.strip(), "gradlab"), package
    ):
        record["git"] = git_commit(package)
    return record


def describe_environment(device: torch.device, amp_dtype: torch.dtype | None, scaler: bool) -> dict:
    """Versions, host, device and AMP mode, for meta.json."""
    return {
        "gradlab_version": gradlab.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "git": git_commit(os.getcwd()),
        "device": str(device),
        "device_name": device_name(device),
        "torch_threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cwd": os.getcwd(),
        "packages": package_versions(),
        "gradlab_source": gradlab_source(),
        "amp": {
            "dtype": str(amp_dtype).removeprefix("torch.") if amp_dtype else "off",
            "grad_scaler": scaler,
        },
    }


STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")
"""Signals that end a run cleanly: Ctrl-C, ``kill``/``timeout``/``docker stop``/schedulers,
and a closed terminal."""


class StopSignals:
    """Within ``with``: the first SIGINT, SIGTERM or SIGHUP only sets :attr:`raised` to the
    signal's name (the loop finishes its step and stops cleanly). Between :meth:`arm` and
    :meth:`finishing` (the training loop) a second one raises KeyboardInterrupt; before
    (setup) and after (the last files are written) signals are only recorded, so nothing
    cuts those short, except what runs under :meth:`abortable`. Outside the main thread it
    does nothing."""

    def __init__(self) -> None:
        self.raised: str | None = None
        self._armed = False
        self._abortable = 0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        again = self.raised is not None
        self.raised = self.raised or signal.Signals(signum).name
        if self._abortable or (again and self._armed):
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def abortable(self) -> Iterator[None]:
        """Within: a signal (recorded as always) also raises KeyboardInterrupt at once, for a
        long computation that cannot stop by itself at a step's end (privacy accounting:
        numpy work between Python lines, so the signal lands within one array operation).
        A signal that came before does not abort it."""
        self._abortable += 1
        try:
            yield
        finally:
            self._abortable -= 1

    def arm(self) -> None:
        """From now on a second signal interrupts at once (the training loop)."""
        self._armed = True

    def finishing(self) -> None:
        """From now on signals are only recorded (the run's last files are being written)."""
        self._armed = False

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for name in STOP_SIGNALS:
                number = getattr(signal, name, None)
                if number is not None:
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous.clear()


def signal_exit_code(name: str | None) -> int:
    """The exit code of a run interrupted by the signal ``name``: 128 + its number, as a
    shell reports a process a signal stopped (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP)."""
    return 128 + int(getattr(signal, name or "SIGINT", signal.SIGINT))
