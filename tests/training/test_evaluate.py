"""``gradlab evaluate`` (against the run's own figures and a hand-written loop) and warm
starts (``model.init_from``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_idx_dataset, tiny
from safetensors.torch import load_file
from torch import nn
from typer.testing import CliRunner

from gradlab.cli import app
from gradlab.config import config_from_dict
from gradlab.environment import resolved_setup
from gradlab.errors import ConfigError
from gradlab.evaluation import evaluate_run, write_evaluation
from gradlab.identity import run_experiment_key
from gradlab.runlog import read_config, read_meta
from gradlab.train import train

runner = CliRunner()


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    """Generated digits (MNIST's layout) and a second, different dataset (Fashion's)."""
    base = tmp_path_factory.mktemp("data")
    arrays = {
        "mnist": make_idx_dataset(base / "m" / "MNIST" / "raw", 600, 300, seed=1),
        "fashion-mnist": make_idx_dataset(base / "f" / "FashionMNIST" / "raw", 500, 257, seed=2),
    }
    return {"mnist": base / "m", "fashion-mnist": base / "f", "arrays": arrays}  # type: ignore[dict-item]


def _trained(tmp_path: Path, roots, **sections):
    base = {
        "data": {"name": "mnist", "root": str(roots["mnist"]), "download": False},
        "optim": {"max_steps": 40, "batch_size": 30},
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return train(config_from_dict(tiny(**base)), tmp_path / "runs")


def _by_hand(run: Path, images: np.ndarray, labels: np.ndarray, mean=None, std=None):
    """The run's weights in a plain PyTorch network, its loss, accuracy and confusion."""
    weights = load_file(str(run / "model.safetensors"))
    fc1, fc2 = (
        nn.Linear(784, weights["fc1.weight"].shape[0]),
        nn.Linear(weights["fc1.weight"].shape[0], 10),
    )
    net = nn.Sequential()
    net.add_module("fc1", fc1)
    net.add_module("relu", nn.ReLU())
    net.add_module("fc2", fc2)
    fc1.load_state_dict({"weight": weights["fc1.weight"], "bias": weights["fc1.bias"]})
    fc2.load_state_dict({"weight": weights["fc2.weight"], "bias": weights["fc2.bias"]})
    x = torch.from_numpy(images.reshape(len(images), -1)).float() / 255.0
    if mean is not None:
        x = (x - mean) / std
    y = torch.from_numpy(labels.astype(np.int64))
    with torch.no_grad():
        logits = net(x)
    predicted = logits.argmax(1).numpy()
    confusion = np.zeros((10, 10), dtype=int)
    for t, p in zip(labels, predicted, strict=True):
        confusion[t, p] += 1
    loss = nn.functional.cross_entropy(logits, y).item()
    return loss, float((predicted == labels).mean()), confusion


def test_the_runs_own_test_set_gives_its_recorded_figures(tmp_path, roots):
    run = _trained(tmp_path, roots)
    result = evaluate_run(run.path)
    assert result.test_accuracy == run.summary["final_test_accuracy"]
    assert result.test_loss == run.summary["final_test_loss"]
    assert result.examples == 300 and sum(map(sum, result.confusion)) == 300


def test_another_dataset_matches_a_hand_written_loop(tmp_path, roots):
    run = _trained(tmp_path, roots)
    before = {p.name: p.read_bytes() for p in run.path.iterdir() if p.is_file()}
    result = evaluate_run(run.path, data="fashion-mnist", root=str(roots["fashion-mnist"]))
    arrays = roots["arrays"]["fashion-mnist"]
    loss, accuracy, confusion = _by_hand(
        run.path, arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"]
    )
    assert result.confusion == confusion.tolist()
    assert result.test_accuracy == pytest.approx(accuracy, abs=1e-12)
    assert result.test_loss == pytest.approx(loss, rel=1e-5)
    for row, counts in zip(result.per_class, confusion, strict=True):
        assert row["count"] == counts.sum() and row["correct"] == counts[row["label"]]
    written = write_evaluation(result, tmp_path / "cm.pdf")
    names = sorted(p.name for p in (run.path / "evaluations").iterdir())
    assert names == [
        "fashion-mnist-final.csv",
        "fashion-mnist-final.json",
        "fashion-mnist-final.png",
    ]
    assert (tmp_path / "cm.pdf").read_bytes().startswith(b"%PDF") and len(written) == 4
    saved = json.loads((run.path / "evaluations" / "fashion-mnist-final.json").read_text())
    assert saved["confusion"] == confusion.tolist()
    assert saved["dataset"]["sha256"]  # which files it read
    after = {p.name: p.read_bytes() for p in run.path.iterdir() if p.is_file()}
    assert after == before  # what training recorded is untouched


def test_a_normalized_run_standardizes_other_data_by_its_own_statistics(tmp_path, roots):
    run = _trained(tmp_path, roots, data={"normalize": True})
    stats = read_meta(run.path)["dataset"]["normalize"]
    assert evaluate_run(run.path).test_accuracy == run.summary["final_test_accuracy"]
    result = evaluate_run(run.path, data="fashion-mnist", root=str(roots["fashion-mnist"]))
    arrays = roots["arrays"]["fashion-mnist"]
    _, accuracy, confusion = _by_hand(
        run.path, arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"],
        stats["mean"], stats["std"],
    )  # fmt: skip
    assert result.confusion == confusion.tolist() and result.test_accuracy == accuracy


def test_cli_evaluate(tmp_path, roots):
    run = _trained(tmp_path, roots, train={"save": "best"})
    out = runner.invoke(app, ["evaluate", str(run.path), "--which", "best", "-f", "json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["which"] == "best" and data["test_accuracy"] == run.summary["best_test_accuracy"]
    csv = runner.invoke(app, ["evaluate", str(run.path), "-f", "csv"])
    lines = csv.output.strip().splitlines()
    assert lines[0].startswith("class,count,correct,accuracy,predicted_0") and len(lines) == 11
    table = runner.invoke(app, ["evaluate", str(run.path)])
    assert table.exit_code == 0 and "accuracy" in table.output and "evaluations" in table.output
    for args, message in (
        ([str(tmp_path)], "not a run folder"),
        ([str(run.path), "--data", "cifar"], "--data 'cifar'"),
        ([str(run.path), "--plot", str(tmp_path / "x.gif")], "--plot"),
        ([str(run.path), "--data", "fashion-mnist", "--root", str(tmp_path / "none")], "not found"),
    ):
        bad = runner.invoke(app, ["evaluate", *args])
        assert bad.exit_code == 2, (args, bad.output)
        assert len(bad.output.strip().splitlines()) == 1 and message in bad.output, bad.output
    plain = _trained(tmp_path / "p", roots)
    bad = runner.invoke(app, ["evaluate", str(plain.path), "--which", "best"])
    assert bad.exit_code == 2 and "no model-best.safetensors" in bad.output


# --------------------------------------------------------------------------- warm starts


def test_a_warm_start_begins_at_the_source_runs_weights(tmp_path, roots):
    source = _trained(tmp_path / "a", roots)
    raw = tiny(
        data={"name": "fashion-mnist", "root": str(roots["fashion-mnist"]), "download": False},
        model={"init_from": str(source.path)},
        optim={"max_steps": 5},
        edit=[{"type": "freeze"}],  # every parameter out of the update: the weights stay
    )
    still = train(config_from_dict(raw), tmp_path / "b")
    a = load_file(str(source.path / "model.safetensors"))
    b = load_file(str(still.path / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    meta = read_meta(still.path)
    recorded = meta["init_from"]
    assert recorded["run"] == str(source.path) and recorded["step"] == 40
    assert (
        recorded["sha256"]
        == hashlib.sha256((source.path / "model.safetensors").read_bytes()).hexdigest()
    )


def test_pretrain_on_digits_then_fine_tune_on_fashion_with_an_edit(tmp_path, roots):
    source = _trained(tmp_path / "a", roots)
    raw = tiny(
        data={"name": "fashion-mnist", "root": str(roots["fashion-mnist"]), "download": False},
        model={"init_from": str(source.path)},
        optim={"lr": 0.05, "max_steps": 20},
        edit=[{"type": "clip_norm", "max_norm": 0.5}],
    )
    tuned = train(config_from_dict(raw), tmp_path / "b")
    assert tuned.summary["status"] == "completed"
    # the same fine-tune from scratch is another experiment
    scratch = {**raw, "model": {"hidden": 16}}
    other = train(config_from_dict(scratch), tmp_path / "c")
    assert read_meta(other.path)["experiment_hash"] != read_meta(tuned.path)["experiment_hash"]


def test_the_source_runs_experiment_and_seed_are_part_of_the_identity(tmp_path, roots):
    first = _trained(tmp_path / "a", roots)
    reseeded = _trained(tmp_path / "b", roots, seed=7)
    again = _trained(tmp_path / "c", roots)  # the same experiment and seed as first
    keys = []
    for source in (first, reseeded, again):
        raw = tiny(model={"init_from": str(source.path)}, optim={"max_steps": 3})
        cfg = config_from_dict(raw)
        run = train(cfg, tmp_path / "runs")
        meta = read_meta(run.path)
        # what a sweep plans with, what compare groups by and what the run recorded agree
        planned = cfg.experiment_hash(resolved_setup(cfg))
        assert planned == meta["experiment_hash"] == run_experiment_key(read_config(run.path), meta)
        keys.append(planned)
    assert keys[0] != keys[1] and keys[0] == keys[2]


def test_warm_start_refusals_are_one_line_and_create_nothing(tmp_path, roots):
    source = _trained(tmp_path / "a", roots)
    none = _trained(tmp_path / "n", roots, train={"save": "none"})
    cases = (
        ({"init_from": str(tmp_path / "missing")}, "no such run folder"),
        ({"init_from": str(tmp_path)}, "not a run folder"),
        ({"init_from": str(none.path)}, "no model.safetensors"),
        (
            {"init_from": str(source.path), "hidden": 32},
            "its network is 784-16-10 relu, this config's is 784-32-10 relu",
        ),
    )
    for model, message in cases:
        with pytest.raises(ConfigError, match=message):
            train(config_from_dict(tiny(model=model)), tmp_path / "runs")
    assert not (tmp_path / "runs").exists()
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps(tiny(model={"init_from": "a"})))  # relative to the config
    result = runner.invoke(app, ["validate", str(config)])
    assert result.exit_code == 0 and f"init_from: {tmp_path / 'a'}" in result.output
    bad = runner.invoke(
        app, ["train", str(config), "--set", "model.hidden=8", "--runs-dir", str(tmp_path / "r")]
    )
    assert bad.exit_code == 2 and len(bad.output.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
