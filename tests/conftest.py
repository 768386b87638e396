"""Shared fixtures: generated IDX datasets (never the network) and tiny configs."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from gradlab.config import config_from_dict

_REQUESTED = os.environ.get("GRADLAB_TEST_DEVICE", "cpu")
TEST_DEVICE = _REQUESTED if _REQUESTED == "cpu" or torch.cuda.is_available() else "cpu"
"""Where the device-dependent tests train: ``GRADLAB_TEST_DEVICE=cuda make test`` runs them
on a GPU; without one they run on the CPU and the report header says so."""


def pytest_report_header(config) -> str:
    if TEST_DEVICE != _REQUESTED:
        return f"gradlab test device: cpu ({_REQUESTED} was asked for, but this machine has no GPU)"
    return f"gradlab test device: {TEST_DEVICE}"


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    """Write ``array`` (uint8) as an IDX file: magic 0x0000 08 <ndim>, big-endian sizes."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    blob = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(blob))
    else:
        path.write_bytes(blob)
    return path


def make_idx_dataset(
    folder: Path, n_train: int = 200, n_test: int = 50, compress: bool = False, seed: int = 0
) -> dict[str, np.ndarray]:
    """Four IDX files of random 28x28 digits with labels 0-9 in ``folder``."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        write_idx(folder / name, array, compress)
    return arrays


@pytest.fixture
def idx_root(tmp_path: Path) -> Path:
    """A data root in torchvision's layout: <root>/MNIST/raw/ with four plain IDX files."""
    root = tmp_path / "data"
    make_idx_dataset(root / "MNIST" / "raw")
    return root


def tiny(**sections) -> dict:
    """A config dict for a run of a few steps on the offline sample."""
    raw = {
        "name": "tiny",
        "data": {"name": "mnist-sample"},
        "model": {"hidden": 16},
        "optim": {"lr": 0.1, "batch_size": 50, "max_steps": 12},
        # full precision unless a test asks for AMP (auto would mean fp16 on a GPU)
        "train": {"device": TEST_DEVICE, "amp": "off", "flush_every": 5},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            raw.setdefault(key, {}).update(value)
        else:
            raw[key] = value
    return raw


@pytest.fixture
def tiny_config():
    return lambda **sections: config_from_dict(tiny(**sections))
