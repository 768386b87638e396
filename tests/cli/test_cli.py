"""The command line: happy paths and every kind of bad input (one line, exit 2, no folder)."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import tiny
from typer.testing import CliRunner

from gradlab import __version__
from gradlab.cli import app

runner = CliRunner()


def write_config(folder: Path, raw, name: str = "c.yaml") -> Path:
    path = folder / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


def test_train_prints_the_run_folder_and_writes_it(tmp_path: Path):
    config = write_config(tmp_path, tiny())
    runs = tmp_path / "runs"
    result = runner.invoke(
        app,
        [
            "train",
            str(config),
            "--runs-dir",
            str(runs),
            "--set",
            "optim.lr=0.05",
            "--name",
            "123",
            "--seed",
            "7",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    (run,) = runs.iterdir()
    assert run.name.startswith("123-") and str(run) in result.stdout.replace("\n", "")
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["optim"]["lr"] == 0.05 and resolved["seed"] == 7 and resolved["name"] == "123"
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


def test_quiet_prints_only_the_folder(tmp_path: Path):
    config = write_config(tmp_path, tiny())
    result = runner.invoke(app, ["train", str(config), "--runs-dir", str(tmp_path / "r"), "-q"])
    assert result.exit_code == 0
    assert Path(result.stdout.strip()).is_dir()


def test_validate_prints_the_resolved_config_and_creates_nothing(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path, {"data": {"name": "mnist-sample"}})
    result = runner.invoke(app, ["validate", str(config), "--set", "optim.epochs=3"])
    assert result.exit_code == 0
    resolved = yaml.safe_load(result.stdout)
    assert resolved["optim"]["epochs"] == 3 and resolved["model"]["hidden"] == 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"gradlab {__version__}"


def test_help_does_not_import_torch_or_pandas():
    code = (
        "import sys; from gradlab.cli import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules, 'pandas' in sys.modules)"
    )
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False False"), out.stdout
    assert "train" in out.stdout and "validate" in out.stdout
    print(f"gradlab --help took {time.perf_counter() - start:.2f} s")  # a figure, not a test


BAD_CONFIGS = [
    ("empty file", "", "the file is empty"),
    ("invalid YAML", "optim: {lr: [1\n", "invalid YAML at line"),
    (
        "unknown key",
        {"optim": {"learning_rate": 1}},
        "optim.learning_rate: unknown key; valid keys here: name, lr,",
    ),
    (
        "wrong type",
        {"optim": {"batch_size": "big"}},
        "optim.batch_size: Input should be a valid integer",
    ),
    ("lr <= 0", {"optim": {"lr": 0}}, "optim.lr: Input should be greater than 0"),
    (
        "batch_size < 1",
        {"optim": {"batch_size": 0}},
        "optim.batch_size: Input should be greater than or equal to 1",
    ),
    (
        "unknown dataset",
        {"data": {"name": "imagenet"}},
        "data.name: Input should be 'mnist', 'fashion-mnist' or",
    ),
    (
        "unknown activation",
        {"model": {"activation": "swish"}},
        "model.activation: Input should be 'relu', 'tanh' or",
    ),
    (
        "unknown strategy",
        {"edit": [{"type": "clipping"}]},
        "edit[0].type: unknown edit type 'clipping'; valid types:",
    ),
    ("missing device", {"train": {"device": "cuda:3"}}, "train.device: cuda:3 is not available"),
]


def assert_one_line_error(result, expected: str, runs: Path) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and expected in lines[0]
    assert "Traceback" not in result.output
    assert not runs.exists() or not any(p for p in runs.iterdir() if p.name != ".gitkeep")


@pytest.mark.parametrize(("label", "raw", "expected"), BAD_CONFIGS, ids=[b[0] for b in BAD_CONFIGS])
def test_bad_configs_end_in_one_line(tmp_path: Path, label, raw, expected):
    if isinstance(raw, dict):
        raw = tiny(**raw)
    config = write_config(tmp_path, raw)
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(config), "--runs-dir", str(runs)])
    assert_one_line_error(result, expected, runs)
    if label != "missing device":  # validate checks the config, not the machine
        result = runner.invoke(app, ["validate", str(config)])
        assert_one_line_error(result, expected, runs)


def test_missing_file(tmp_path: Path):
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(tmp_path / "nope.yaml"), "--runs-dir", str(runs)])
    assert_one_line_error(result, "nope.yaml: no such file", runs)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["compare", ".", "--bogus"], "No such option: --bogus"),
        (["compare", ".", "--width", "wide"], "Invalid value for '--width'"),
        (["train"], "missing CONFIG: give an experiment config, or --resume RUN"),
        (["trian"], "No such command 'trian'"),
        (["train", "."], "is a directory (see gradlab train --help)"),
    ],
)
def test_command_line_mistakes_end_in_one_line(tmp_path: Path, args, expected):
    runs = tmp_path / "runs"
    result = runner.invoke(app, args)
    assert_one_line_error(result, expected, runs)


def test_set_without_equals(tmp_path: Path):
    config = write_config(tmp_path, tiny())
    runs = tmp_path / "runs"
    result = runner.invoke(
        app, ["train", str(config), "--set", "optim.lr", "--runs-dir", str(runs)]
    )
    assert_one_line_error(result, "--set 'optim.lr': expected KEY=VALUE", runs)
    result = runner.invoke(
        app, ["train", str(config), "--set", "optim.lr=-1", "--runs-dir", str(runs)]
    )
    assert_one_line_error(result, "optim.lr: Input should be greater than 0", runs)


def test_unwritable_runs_directory(tmp_path: Path):
    config = write_config(tmp_path, tiny())
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = runner.invoke(app, ["train", str(config), "--runs-dir", str(blocker / "runs")])
    assert_one_line_error(result, "cannot create the runs directory", tmp_path / "none")
    assert blocker.read_text() == "not a folder"


def test_missing_dataset_leaves_no_run_folder(tmp_path: Path, monkeypatch):
    from gradlab import data

    def offline(name, root):
        raise OSError("network is unreachable")

    monkeypatch.setattr(data, "download_with_torchvision", offline)
    config = write_config(tmp_path, tiny(data={"name": "mnist", "root": str(tmp_path / "d")}))
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(config), "--runs-dir", str(runs)])
    assert_one_line_error(result, "the download failed (network is unreachable)", runs)


def test_strategies_lists_the_registry():
    from gradlab.editing import strategies

    result = runner.invoke(app, ["strategies"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name, cls in strategies().items():
        assert name in result.stdout and cls.family in result.stdout
    assert "start_step" in result.stdout and "max_norm (1.0)" in result.stdout


CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_validate(path: Path):
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output


def test_family_configs_reproduce_the_tutorial_edits():
    from gradlab.config import load_config

    folder = Path(__file__).parents[2] / "configs"
    tutorial = load_config(folder / "tutorial.yaml")
    assert tutorial.model.output_activation == "relu"
    assert (tutorial.optim.lr, tutorial.optim.batch_size, tutorial.model.hidden) == (0.01, 100, 100)
    expected = {
        "tutorial": ("clip_value", {"value": 0.05}, ["*"]),
        "clipping": ("clip_value", {"value": 0.05}, ["*"]),
        "masking": ("mask", {"p": 0.5, "fixed": False}, ["fc2.bias"]),
        "perturbation": ("noise", {"sigma": 0.1, "relative": False}, ["fc2.bias"]),
        "replacement": ("replace", {"with_": "gaussian", "sigma": 0.1}, ["fc2.bias"]),
    }
    for stem, (kind, values, params) in expected.items():
        (edit,) = load_config(folder / f"{stem}.yaml").edit
        assert edit.type == kind and edit.params == params
        assert {k: getattr(edit, k) for k in values} == values


def test_a_crash_inside_the_loop_is_recorded_as_failed(tmp_path: Path, monkeypatch):
    from gradlab.editing import EditPipeline

    original = EditPipeline.apply

    def explode(self, grads, weights, step, *args):
        if step == 3:
            raise RuntimeError("boom at step 3")
        return original(self, grads, weights, step, *args)

    monkeypatch.setattr(EditPipeline, "apply", explode)
    config = write_config(tmp_path, tiny())
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(config), "--runs-dir", str(runs), "-q"])
    assert result.exit_code == 1
    (run,) = runs.iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == "RuntimeError: boom at step 3"
    assert summary["steps"] == 3
    assert "boom at step 3" in (run / "traceback.txt").read_text()
    assert len((run / "steps.csv").read_text().splitlines()) == 1 + 2  # steps 1 and 2 logged
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: the run failed: RuntimeError: boom at step 3")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["compare", "runs", "--format", "x'y"],
            '--format "x\'y": use one of table, csv, markdown, latex, json',
        ),
        (["compare", "runs", "--spread", "iqr"], "--spread 'iqr': use ci or std"),
        (["sweep", "s.yaml", "--executor", "k8s"], "--executor 'k8s': use local or ray"),
        (["gradcheck", "c.yaml", "--inputs", "noise"], "--inputs 'noise': use dataset or random"),
        (["gradcheck", "c.yaml", "--format", "csv"], "--format 'csv': use table or json"),
    ],
)
def test_a_value_outside_an_options_choices_is_one_line_naming_them(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {message}") and "--help" in line


def test_help_lists_the_choices():
    for command, choices in (
        (["compare"], "table|csv|markdown|latex|json"),
        (["sweep"], "local|ray"),
        (["gradcheck"], "dataset|random"),
    ):
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        assert choices in result.stdout, command
