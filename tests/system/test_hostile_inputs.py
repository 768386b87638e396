"""Hostile inputs through the command line: each ends in one `error:` line, exit 2, no run
folder, quickly and in little memory, and never quotes the contents of the file it read."""

import gzip
import os
import struct
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import tiny, write_idx
from typer.testing import CliRunner

from gradlab.cli import app
from gradlab.config import MAX_HIDDEN
from gradlab.errors import ConfigError
from gradlab.sweeps.plan import load_sweep
from gradlab.yamlfile import MAX_CONFIG_BYTES, MAX_YAML_DEPTH

runner = CliRunner()
SECRET = "S3cr3tHashValue"


def assert_one_line_error(result, expected: str, runs: Path | None = None) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert len(lines[0]) < 400, lines[0]
    assert runs is None or not runs.exists() or not any(runs.iterdir())
    return lines[0]


def train_and_validate(config: Path, expected: str, tmp_path: Path) -> str:
    """Both commands refuse the config with the same line; train creates no run folder."""
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(config), "--runs-dir", str(runs)])
    line = assert_one_line_error(result, expected, runs)
    assert_one_line_error(runner.invoke(app, ["validate", str(config)]), expected)
    return line


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """YAML whose last alias expands to width**levels strings (387 million for 9 x 9)."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines)


# --------------------------------------------------------------------------- config files


def test_alias_bomb_in_a_validated_key_fails_fast_and_short(tmp_path: Path):
    config = tmp_path / "bomb.yaml"
    config.write_text(alias_bomb() + "\nseed: *l8\n")
    tracemalloc.start()
    try:
        line = train_and_validate(config, "values once aliases are expanded", tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "MAX_YAML_VALUES" in line and "lol" not in line
    assert peak < 50e6, f"peak {peak / 1e6:.0f} MB"


def test_alias_bomb_in_an_override_is_refused(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny()))
    value = "{" + alias_bomb().replace("\n", ", ") + "}"
    result = runner.invoke(app, ["validate", str(config), "--set", f"seed={value}"])
    assert_one_line_error(result, "values once aliases are expanded")


def test_a_config_over_the_size_limit_is_refused_before_reading(tmp_path: Path):
    config = tmp_path / "big.yaml"
    config.write_text("# " + "x" * 2_000_000 + "\n" + yaml.safe_dump(tiny()))
    line = train_and_validate(config, f"more than the {MAX_CONFIG_BYTES:,} allowed", tmp_path)
    assert "MAX_CONFIG_BYTES" in line and "right file" in line


def test_deep_nesting_is_one_clear_line(tmp_path: Path):
    config = tmp_path / "deep.yaml"
    config.write_text("seed: " + "[" * 500 + "]" * 500 + "\n")
    train_and_validate(config, f"nested more than {MAX_YAML_DEPTH} levels deep", tmp_path)


def run_cli_with_timeout(*args: str) -> subprocess.CompletedProcess:
    """The real command in a child process: a regression hangs the child, not the tests."""
    code = "import sys; from gradlab.cli import main; sys.argv[0] = 'gradlab'; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )


def assert_child_one_line_error(out: subprocess.CompletedProcess, expected: str) -> None:
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: ") and expected in line, line


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero here")
def test_dev_zero_is_not_read():
    out = run_cli_with_timeout("validate", "/dev/zero")
    assert_child_one_line_error(out, "/dev/zero: is a character device, not a regular file")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_fifo_does_not_hang(tmp_path: Path):
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    out = run_cli_with_timeout("train", str(fifo), "--runs-dir", str(tmp_path / "runs"))
    assert_child_one_line_error(out, "is a named pipe, not a regular file")
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_sweep_file_or_its_base_cannot_be_a_fifo(tmp_path: Path):
    fifo = tmp_path / "base.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="is a named pipe"):
        load_sweep(fifo)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("base: base.yaml\ngrid: {optim.lr: [0.1]}\n")
    with pytest.raises(ConfigError, match="is a named pipe"):
        load_sweep(sweep)
    sweep.write_text("# " + "x" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigError, match="MAX_CONFIG_BYTES"):
        load_sweep(sweep)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a shadow password file parses as a mapping whose keys are its lines
        (
            f"root:$6$salt${SECRET}:19000:0:99999:7:::\nbin:*:19000:0:99999:7:::\n",
            "<not a key name>: unknown key",
        ),
        (f"{SECRET}\n", "expected a mapping of sections (`key: value` lines), got text"),
        (f"- {SECRET}\n- two\n", "got a list of 2 items"),
        (f"token: {SECRET}: x\n", "invalid YAML at line 1, column"),
        (f"key: '{SECRET}\n", "invalid YAML at line"),
        (f"seed: !{SECRET} 1\n", "could not determine a constructor for the tag (...)"),
        (f"seed: *{SECRET}\n", "found undefined alias"),
        (f"seed: !!int {SECRET}\n", "cannot convert a value (not a valid int value)"),
        (f"{SECRET}: [1, 2\n", "invalid YAML at line 2, column 1"),
    ],
)
def test_errors_never_quote_the_file(tmp_path: Path, text: str, expected: str):
    config = tmp_path / "not-a-config"
    config.write_text(text)
    result = runner.invoke(app, ["validate", str(config)])
    line = assert_one_line_error(result, expected)
    assert SECRET[:6] not in result.output, line
    assert "root:" not in result.output and "19000" not in result.output


def test_a_bad_value_of_a_known_key_is_shown_shortened(tmp_path: Path):
    config = tmp_path / "c.yaml"
    value = "v" * 30 + SECRET + "w" * 100
    config.write_text(f"optim: {{lr: {value}}}\n")
    line = assert_one_line_error(
        runner.invoke(app, ["validate", str(config)]), "optim.lr: Input should be a valid number"
    )
    assert "(got 'vvvvvvvvvvvvvvvvv...wwwwwwwwwwwwwwwwww')" in line and SECRET not in line


def test_binary_file_is_not_quoted(tmp_path: Path):
    config = tmp_path / "blob.yaml"
    config.write_bytes(b"seed: 1\n" + SECRET.encode() + b"\xff\xfe\x00")
    line = assert_one_line_error(runner.invoke(app, ["validate", str(config)]), "not UTF-8")
    assert SECRET not in line


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("optim:\n  lr: 0.1\n  lr: 0.2\n", "line 3, column 3: duplicate key lr (first at line 2)"),
        ("seed: 1\nseed: 2\n", "line 2, column 1: duplicate key seed (first at line 1)"),
        ("optim: {lr: 0.1, lr: 0.2}\n", "duplicate key lr (first at line 1)"),
        ("edit:\n  - {type: clip_norm, max_norm: 1, max_norm: 2}\n", "duplicate key max_norm"),
    ],
)
def test_duplicate_keys_are_errors(tmp_path: Path, text: str, expected: str):
    config = tmp_path / "dup.yaml"
    config.write_text(text)
    train_and_validate(config, expected, tmp_path)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"seed": True}, "seed: expected a number, not true/false"),
        ({"model": {"hidden": True}}, "model.hidden: expected a number, not true/false"),
        ({"optim": {"lr": True}}, "optim.lr: expected a number, not true/false"),
        ({"optim": {"lr": float("inf")}}, "optim.lr: Input should be a finite number"),
        ({"optim": {"lr": float("nan")}}, "optim.lr: Input should be a finite number"),
        ({"optim": {"lr": "1e39"}}, "optim.lr: must be below 3.4e38, the largest float32"),
        ({"optim": {"weight_decay": 1e300}}, "optim.weight_decay: must be below 3.4e38"),
        ({"optim": {"momentum": 1.5}}, "optim.momentum: Input should be less than or equal to 1"),
        (
            {"train": {"amp_init_scale": float("inf")}},
            "train.amp_init_scale: Input should be a finite number",
        ),
        ({"train": {"amp_init_scale": 2.0**65}}, "train.amp_init_scale: Input should be less"),
        ({"train": {"flush_every": 10**9}}, "train.flush_every: Input should be less than"),
        ({"optim": {"batch_size": 10**30}}, "optim.batch_size: Input should be less than"),
        ({"diagnostics": {"exploding_norm": float("inf")}}, "finite number"),
        (
            {"model": {"hidden": 1_000_000_000}},
            f"model.hidden: at most {MAX_HIDDEN:,} (gradlab.config.MAX_HIDDEN)",
        ),
        ({"edit": [{"type": "clip_norm", "max_norm": float("inf")}]}, "edit[0].max_norm: "),
        ({"edit": [{"type": "clip_norm", "max_norm": True}]}, "not true/false"),
    ],
)
def test_numbers_are_finite_runnable_and_never_booleans(tmp_path: Path, section, expected):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny(**section)))
    train_and_validate(config, expected, tmp_path)


def test_yaml_spellings_of_bad_numbers(tmp_path: Path):
    for text, expected in [
        ("seed: true\n", "seed: expected a number, not true/false"),
        ("optim: {lr: .inf}\n", "optim.lr: Input should be a finite number"),
        ("optim: {lr: 1e39}\n", "optim.lr: must be below 3.4e38"),
        ("train: {amp_init_scale: .inf}\n", "train.amp_init_scale: Input should be a finite"),
        ("model: {hidden: 1000000000}\n", "model.hidden: at most 65,536"),
        ("model: {hidden: 1e9}\n", "model.hidden: must be a positive integer width"),
        (f"seed: {'1' * 5000}\n", "cannot convert a value (too many digits)"),
    ]:
        config = tmp_path / "c.yaml"
        config.write_text(text)
        train_and_validate(config, expected, tmp_path)
    config.write_text(yaml.safe_dump(tiny()))
    result = runner.invoke(app, ["validate", str(config), "--set", "seed=true"])
    assert_one_line_error(result, "seed: expected a number, not true/false")


# --------------------------------------------------------------------------- IDX files


def idx_header(shape: tuple[int, ...]) -> bytes:
    return bytes([0, 0, 0x08, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)


def write_gzip_bomb(path: Path, shape: tuple[int, ...], zeros: int) -> Path:
    """A .gz holding an IDX header for ``shape`` then ``zeros`` zero bytes, written in
    chunks (about 100 KB on disk for 100 MB of zeros)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: the gzip container
    chunk = bytes(1 << 20)
    with path.open("wb") as f:
        f.write(compressor.compress(idx_header(shape)))
        for _ in range(zeros // len(chunk)):
            f.write(compressor.compress(chunk))
        f.write(compressor.flush())
    return path


def idx_root(tmp_path: Path) -> Path:
    """A data root with a valid small test set; the training files are up to the test."""
    root = tmp_path / "data"
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, (5, 28, 28), dtype=np.uint8))
    write_idx(raw / "t10k-labels-idx1-ubyte", rng.integers(0, 10, 5, dtype=np.uint8))
    return root


def train_on(root: Path, tmp_path: Path, expected: str) -> str:
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(tiny(data={"name": "mnist", "root": str(root), "download": False}))
    )
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(config), "--runs-dir", str(runs)])
    return assert_one_line_error(result, expected, runs)


def test_idx_gzip_bomb_is_refused_without_inflating_it(tmp_path: Path):
    root = idx_root(tmp_path)
    raw = root / "MNIST" / "raw"
    bomb = write_gzip_bomb(raw / "train-images-idx3-ubyte.gz", (1, 28, 28), 100 << 20)
    assert bomb.stat().st_size < 1 << 20
    write_idx(raw / "train-labels-idx1-ubyte", np.zeros(1, np.uint8))
    tracemalloc.start()
    try:
        line = train_on(root, tmp_path, "train-images-idx3-ubyte.gz: IDX header says (1, 28, 28)")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "the file holds more" in line
    assert peak < 50e6, f"peak {peak / 1e6:.0f} MB"


@pytest.mark.parametrize("compress", [True, False])
def test_idx_header_that_lies_about_its_size(tmp_path: Path, compress: bool):
    root = idx_root(tmp_path)
    raw = root / "MNIST" / "raw"
    blob = idx_header((60000, 28, 28)) + bytes(10)
    images = raw / ("train-images-idx3-ubyte" + (".gz" if compress else ""))
    images.write_bytes(gzip.compress(blob) if compress else blob)
    write_idx(raw / "train-labels-idx1-ubyte", np.zeros(60000, np.uint8))
    line = train_on(root, tmp_path, "IDX header says (60000, 28, 28) (47,040,000 bytes of data)")
    assert line.endswith("the file holds 10")


def test_idx_counts_are_checked_before_any_data_is_read(tmp_path: Path):
    root = idx_root(tmp_path)
    raw = root / "MNIST" / "raw"
    # the images file is only a header: reading its data would fail differently
    (raw / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_header((60000, 28, 28))))
    write_idx(raw / "train-labels-idx1-ubyte", np.zeros(200, np.uint8))
    train_on(root, tmp_path, "train-labels-idx1-ubyte: 200 labels for 60,000 images")
    (raw / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_header((200, 32, 32))))
    train_on(root, tmp_path, "expected uint8 images of 28x28, the IDX header says uint8 (200, 32")


def test_truncated_idx_gzip(tmp_path: Path):
    root = idx_root(tmp_path)
    raw = root / "MNIST" / "raw"
    whole = gzip.compress(idx_header((50, 28, 28)) + np.random.default_rng(0).bytes(50 * 784))
    (raw / "train-images-idx3-ubyte.gz").write_bytes(whole[: len(whole) // 2])
    write_idx(raw / "train-labels-idx1-ubyte", np.zeros(50, np.uint8))
    train_on(root, tmp_path, "train-images-idx3-ubyte.gz: cannot read (")
