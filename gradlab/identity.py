"""What counts as the same experiment: one definition for compare's groups, duplicate
detection and the sweep's resume.

Two runs are the same experiment when their resolved configs agree on everything that
changes what is computed, and they ran on the same kind of device with the same AMP mode
and gradient engine (as resolved, read from ``meta.json``: ``device: auto`` on a GPU and on
a CPU are different experiments). Left out, because they change nothing that is computed:

- ``name`` and ``seed`` (a group is one experiment over several seeds),
- ``data.root`` and ``data.download`` (where the files are, not what they are),
- ``train.log``, ``train.flush_every``, ``train.eval_every``, ``train.eval_batch_size``,
  ``train.save``, ``train.checkpoint_every`` (what is written down and when, not the training),
- ``diagnostics.*`` (gradient health is measured, never acted on),
- ``train.device``, ``train.amp``, ``train.engine`` as written (their resolved values
  count instead), and ``train.amp_init_scale`` when no GradScaler ran.

The optimizer is part of it: ``optim.name`` and the keys of that optimizer (a run's
``config.yaml`` holds only those). ``optim.name: sgd`` is left out, so that an SGD run
keeps the key it had before ``optim.name`` existed (its config then had SGD's keys alone);
likewise ``privacy: null`` and ``data.sampling: shuffle`` (configs before DP-SGD). One
hidden layer is one network however it is written: ``model.hidden: [100]`` is ``100``.
A user's own edit (``type: path/to/file.py:Class``) is its class name and the sha256 of its
source (``plugins`` of the resolved setup, ``meta.json``), not its path: editing the file
makes a new experiment, moving it does not. A warm start (``model.init_from: RUN``) is the
source run's experiment key and seed (``init_from`` of the resolved setup and of
``meta.json``), not the folder's path.

Plain data in, plain data out: never imports torch.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

IGNORED = (
    "name",
    "seed",
    "data.root",
    "data.download",
    "train.log",
    "train.flush_every",
    "train.eval_every",
    "train.eval_batch_size",
    "train.save",
    "train.checkpoint_every",
    "train.device",
    "train.amp",
    "train.engine",
    "diagnostics",
)
"""Config keys (dotted; a section name drops the whole section) outside the identity."""

RESOLVED = ("device", "amp", "grad_scaler", "engine")
"""What ``auto`` settings resolved to on the machine that ran (or will run) the run."""


def resolved_from_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The resolved device type, AMP dtype, GradScaler and engine a run's ``meta.json``
    records (``cuda:1`` -> ``cuda``). Runs written before the analytic engine existed
    used autograd."""
    amp = meta["amp"] if isinstance(meta.get("amp"), dict) else {}
    device = str(meta.get("device", "?")).split(":")[0]
    resolved: dict[str, Any] = {
        "device": device,
        "amp": str(amp.get("dtype", "off")),
        "grad_scaler": bool(amp.get("grad_scaler", False)),
        "engine": str(meta.get("engine", "autograd")),
    }
    source = meta.get("init_from")
    if isinstance(source, dict):
        resolved["init_from"] = {
            "experiment": source.get("experiment_hash"),
            "seed": source.get("seed"),
        }
    plugins = meta.get("plugins")
    if isinstance(plugins, dict):
        resolved["plugins"] = {  # a probe measures: it is not part of the experiment
            str(spec): record.get("sha256") if isinstance(record, dict) else None
            for spec, record in plugins.items()
            if not (isinstance(record, dict) and record.get("kind") == "probe")
        }
    return resolved


def experiment_identity(config: dict[str, Any], resolved: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved config (plain data, as in ``config.yaml``) and of its resolved
    setup that defines the experiment; see the module docstring."""
    # only the sections it changes are copied: the config itself is never modified
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    for key in IGNORED:
        section, _, last = key.rpartition(".")
        node = data.get(section) if section else data
        if isinstance(node, dict):
            node.pop(last, None)
    optim = data.get("optim")
    if isinstance(optim, dict) and optim.get("name") == "sgd":
        optim.pop("name")  # configs written before optimizers had names were all SGD's
    if data.get("privacy", 0) is None:
        data.pop("privacy")  # configs written before DP-SGD had no privacy section
    if isinstance(data.get("data"), dict) and data["data"].get("sampling") == "shuffle":
        data["data"].pop("sampling")  # nor a sampling key: they all shuffled
    model = data.get("model")
    if (
        isinstance(model, dict)
        and isinstance(model.get("hidden"), list)
        and len(model["hidden"]) == 1
    ):
        model["hidden"] = model["hidden"][0]  # one hidden layer: [100] is 100 (older configs)
    if isinstance(model, dict):  # a warm start is its source's experiment and seed
        if model.get("init_from") is not None:
            model["init_from"] = resolved.get("init_from") or model["init_from"]
        else:
            model.pop("init_from", None)  # configs written before warm starts
    if not resolved.get("grad_scaler") and isinstance(data.get("train"), dict):
        data["train"].pop("amp_init_scale", None)
    plugins = resolved.get("plugins")
    if isinstance(plugins, dict):
        # the user's own edit (or rule) is its class and its code, wherever the file lies
        edits = data["edit"] if isinstance(data.get("edit"), list) else []
        data["edit"] = [
            {**e, "type": _code_of(e["type"], plugins[e["type"]])}
            if isinstance(e, dict) and isinstance(e.get("type"), str) and e["type"] in plugins
            else e
            for e in edits
        ]
        privacy = data.get("privacy")
        if isinstance(privacy, dict) and privacy.get("clipping") in plugins:
            data["privacy"] = {
                **privacy,
                "clipping": _code_of(privacy["clipping"], plugins[privacy["clipping"]]),
            }
    data["resolved"] = {key: resolved.get(key) for key in RESOLVED}
    return data


def _code_of(spec: str, sha256: Any) -> str:
    """A plugin edit as its identity knows it: ``Class@sha256`` of its source."""
    return f"{spec.rpartition(':')[2]}@{sha256}"


def experiment_key(config: dict[str, Any], resolved: dict[str, Any]) -> str:
    """A short, stable hash of :func:`experiment_identity`: equal for runs of the same
    experiment, whatever their seed or name."""
    blob = json.dumps(experiment_identity(config, resolved), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_experiment_key(config: dict[str, Any], meta: dict[str, Any]) -> str:
    """:func:`experiment_key` of a finished run folder's ``config.yaml`` and ``meta.json``."""
    return experiment_key(config, resolved_from_meta(meta))
