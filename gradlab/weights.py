"""A run's trained network: ``model.safetensors`` in its folder (and, with ``train.save:
best``, ``model-best.safetensors``, the weights at its best evaluation), and
:func:`load_model` to get it back.

The files are safetensors (no pickle: loading one runs no code), one tensor per parameter
named as everywhere in gradlab (``fc1.weight``, ``fc1.bias``, ..., ``fcN.bias``), float32 on
the CPU, with the run's architecture and step in the file's metadata. A plain PyTorch user
loads them into any module whose parameters have those names.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from gradlab.errors import RunFolderError

if TYPE_CHECKING:
    from gradlab.model import MLP

MODEL_FILE = "model.safetensors"
"""The run's final weights (``train.save: final`` or ``best``)."""
BEST_FILE = "model-best.safetensors"
"""The weights at the run's best test accuracy (``train.save: best``)."""
WEIGHT_FILES = {"final": MODEL_FILE, "best": BEST_FILE}


def save_weights(weights: dict[str, torch.Tensor], path: Path, metadata: dict[str, Any]) -> None:
    """Write ``weights`` to ``path`` atomically (a complete file or none: written beside it,
    then renamed over it), with ``metadata`` (JSON-encoded values) in the file's header."""
    from safetensors.torch import save_file

    tensors = {
        name: w.detach().to("cpu", torch.float32).contiguous() for name, w in weights.items()
    }
    partial = path.with_name(path.name + ".partial")
    try:
        save_file(tensors, str(partial), metadata={k: json.dumps(v) for k, v in metadata.items()})
        sibling = path.parent / "config.yaml"  # readable as the run's other files are
        if sibling.is_file():
            shutil.copymode(sibling, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors of a weights file and its metadata.

    Raises:
        RunFolderError: the file is missing or is not a safetensors file.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise RunFolderError(f"{path}: no such weights file")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own errors for damage
        raise RunFolderError(f"{path}: not a readable safetensors file ({exc})") from None
    metadata: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            metadata[key] = json.loads(value)
        except ValueError:
            metadata[key] = value
    return tensors, metadata


def load_model(run: str | Path, which: str = "final") -> MLP:
    """The trained network of a run folder: its architecture from ``config.yaml``, its
    weights from ``model.safetensors`` (``which="best"``: ``model-best.safetensors``), on the
    CPU, in evaluation mode.

    Raises:
        RunFolderError: not a run folder, no such weights (a run with ``train.save: none``,
            or one written before gradlab kept weights), a damaged file, or weights that do
            not fit the run's network.
    """
    import yaml

    from gradlab.config import ModelConfig
    from gradlab.model import MLP

    if which not in WEIGHT_FILES:
        raise RunFolderError(f"which {which!r}: use final or best", argument="which")
    folder = Path(run)
    config_file = folder / "config.yaml"
    if not config_file.is_file():
        raise RunFolderError(f"{folder}: not a run folder (no config.yaml)")
    try:
        raw = yaml.safe_load(config_file.read_text(encoding="utf-8"))
        model_cfg = ModelConfig.model_validate((raw or {}).get("model") or {})
    except Exception:  # noqa: BLE001 - a damaged config.yaml: say which file
        raise RunFolderError(f"{config_file}: not a readable gradlab config") from None
    path = folder / WEIGHT_FILES[which]
    if not path.is_file():
        hint = (
            "its config has train.save: final or none; train it with train.save: best"
            if which == "best"
            else "train.save: none, or a run from before gradlab kept weights"
        )
        raise RunFolderError(f"{folder}: no {path.name} ({hint})")
    tensors, _ = load_weights(path)
    model = MLP(model_cfg)
    expected = {name: p.shape for name, p in model.named_parameters()}
    got = {name: t.shape for name, t in tensors.items()}
    if got != expected:
        raise RunFolderError(
            f"{path}: its tensors ({_shapes(got)}) do not fit the run's network "
            f"({_shapes(expected)})"
        )
    model.load_state_dict(tensors)
    return model.eval()


def _shapes(shapes: dict[str, Any]) -> str:
    text = ", ".join(f"{n} {tuple(s)}" for n, s in shapes.items())
    return text if len(text) <= 200 else text[:197] + "..."


# --------------------------------------------------------------------------- warm starts


def init_source(folder: str | Path) -> dict[str, Any]:
    """What ``model.init_from: FOLDER`` adds to a run's experiment: the source run's
    experiment key (recomputed from its folder, as ``compare`` groups runs) and seed.

    Raises:
        ConfigError: the folder is not a run folder.
    """
    from gradlab.errors import ConfigError
    from gradlab.identity import run_experiment_key
    from gradlab.runlog import read_config, read_meta

    where = f"model.init_from {folder}"
    path = Path(folder)
    if not path.is_dir():
        raise ConfigError(f"{where}: no such run folder")
    try:
        config, meta = read_config(path), read_meta(path)
        return {"experiment": run_experiment_key(config, meta), "seed": int(config.get("seed", 0))}
    except (RunFolderError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: not a run folder ({exc})") from None


def initial_weights(folder: str | Path, model: MLP) -> dict[str, Any]:
    """Copy the final weights of the run in ``folder`` into ``model`` (``model.init_from``);
    returns what ``meta.json`` records of them (``init_from``).

    Raises:
        ConfigError: not a run folder, no weights, a damaged file, or a network that is not
            ``model``'s (their architectures named).
    """
    import hashlib

    from gradlab.errors import ConfigError
    from gradlab.runlog import read_config

    where = f"model.init_from {folder}"
    source = init_source(folder)
    path = Path(folder) / MODEL_FILE
    theirs = read_config(folder).get("model") or {}
    ours = model.cfg.model_dump(mode="json")
    if _architecture(theirs) != _architecture(ours):
        raise ConfigError(
            f"{where}: its network is {_architecture(theirs)}, this config's is "
            f"{_architecture(ours)}; a warm start needs the same model.hidden, activation "
            "and output_activation"
        )
    if not path.is_file():
        raise ConfigError(
            f"{where}: no {MODEL_FILE} (a run with train.save: none, or one that failed "
            "before its first step)"
        )
    try:
        tensors, metadata = load_weights(path)
    except RunFolderError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    expected = {name: p.shape for name, p in model.named_parameters()}
    got = {name: t.shape for name, t in tensors.items()}
    if got != expected:
        raise ConfigError(
            f"{where}: its weights ({_shapes(got)}) do not fit this network ({_shapes(expected)})"
        )
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(tensors[name])
    return {
        "run": str(folder),
        "experiment_hash": source["experiment"],
        "seed": source["seed"],
        "step": metadata.get("step"),
        "status": metadata.get("status"),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }


def _architecture(model: dict[str, Any]) -> str:
    """A ``model`` section's network in words: ``784-100-10 relu`` (``[100]`` is ``100``)."""
    hidden = model.get("hidden", 100)
    widths = hidden if isinstance(hidden, list) else [hidden]
    logits = ", relu logits" if model.get("output_activation") == "relu" else ""
    return f"784-{'-'.join(map(str, widths))}-10 {model.get('activation', 'relu')}{logits}"
