"""A run's weights: model.safetensors (and model-best.safetensors) against a plain PyTorch
module and the run's own recorded accuracies, load_model, and its one-line refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny
from safetensors.torch import load_file
from torch import nn

import gradlab
from gradlab.config import config_from_dict
from gradlab.data import load_dataset
from gradlab.errors import RunFolderError
from gradlab.train import train


class PlainNet(nn.Module):
    """Written here, not gradlab's MLP: fc1 -> activation -> ... -> fcN (the README's)."""

    def __init__(self, widths, activation):
        super().__init__()
        sizes = [784, *widths, 10]
        for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False), start=1):
            setattr(self, f"fc{i}", nn.Linear(a, b))
        self.n = len(sizes) - 1
        self.act = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}[activation]

    def forward(self, x):
        for i in range(1, self.n):
            x = self.act(getattr(self, f"fc{i}")(x))
        return getattr(self, f"fc{self.n}")(x)


def accuracy(net: nn.Module, config) -> float:
    data = load_dataset(config.data, torch.device("cpu"))
    with torch.no_grad():
        return (net(data.test_x).argmax(1) == data.test_y).sum().item() / len(data.test_y)


def run(tmp_path, **sections):
    raw = tiny(**sections)
    raw["train"]["device"] = "cpu"
    config = config_from_dict(raw)
    return config, train(config, tmp_path / "runs")


@pytest.mark.parametrize("hidden,activation", [(16, "relu"), ([12, 8], "tanh")])
def test_a_plain_pytorch_module_reproduces_the_runs_accuracy(tmp_path, hidden, activation):
    config, result = run(tmp_path, model={"hidden": hidden, "activation": activation})
    assert result.summary["status"] == "completed"
    net = PlainNet(config.model.widths, activation)
    net.load_state_dict(load_file(result.path / "model.safetensors"))
    assert accuracy(net, config) == result.summary["final_test_accuracy"]
    for name, tensor in load_file(result.path / "model.safetensors").items():
        assert torch.equal(tensor, dict(result.model.named_parameters())[name].detach())
    assert not (result.path / "model-best.safetensors").exists()
    mode = (result.path / "model.safetensors").stat().st_mode & 0o777
    assert mode == (result.path / "config.yaml").stat().st_mode & 0o777


def test_the_best_weights_give_the_best_accuracy_at_its_step(tmp_path):
    config, result = run(
        tmp_path, optim={"lr": 2.0, "max_steps": 40}, train={"save": "best", "eval_every": 4}
    )
    best = gradlab.load_model(result.path, which="best")
    assert accuracy(best, config) == result.summary["best_test_accuracy"]
    evals = [line.split(",") for line in (result.path / "evals.csv").read_text().splitlines()]
    header, rows = evals[0], evals[1:]
    accs = [float(r[header.index("test_accuracy")]) for r in rows]
    from safetensors import safe_open

    with safe_open(str(result.path / "model-best.safetensors"), framework="pt") as f:
        meta = f.metadata()
    step = json.loads(meta["step"])
    assert step == int(rows[accs.index(max(accs))][header.index("step")])  # the earliest best
    final = gradlab.load_model(result.path)
    assert accuracy(final, config) == result.summary["final_test_accuracy"]


def test_load_model_gives_the_trained_network(tmp_path):
    config, result = run(tmp_path)
    model = gradlab.load_model(result.path)
    assert not model.training
    for (name, a), (_, b) in zip(
        model.named_parameters(), result.model.named_parameters(), strict=True
    ):
        assert torch.equal(a, b.detach().cpu()), name


def test_save_none_keeps_no_weights_and_is_the_same_experiment(tmp_path):
    config, result = run(tmp_path, train={"save": "none"})
    assert not (result.path / "model.safetensors").exists()
    other = config_from_dict(tiny(train={"device": "cpu"}))
    resolved = {"device": "cpu", "amp": "off", "grad_scaler": False, "engine": "analytic"}
    assert config.experiment_hash(resolved) == other.experiment_hash(resolved)
    with pytest.raises(RunFolderError, match="no model.safetensors .train.save: none"):
        gradlab.load_model(result.path)


def test_an_interrupted_or_diverged_run_keeps_its_last_weights(tmp_path):
    _, result = run(tmp_path, optim={"lr": 1e30}, train={"diverge_factor": 0})
    assert result.summary["status"] == "diverged"
    tensors = load_file(result.path / "model.safetensors")
    assert set(tensors) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}


def test_load_model_refusals_are_one_line(tmp_path):
    _, result = run(tmp_path)
    cases = {
        tmp_path / "nothing": "not a run folder",
    }
    for folder, message in cases.items():
        with pytest.raises(RunFolderError, match=message):
            gradlab.load_model(folder)
    with pytest.raises(RunFolderError, match="no model-best.safetensors"):
        gradlab.load_model(result.path, which="best")
    with pytest.raises(RunFolderError, match="use final or best"):
        gradlab.load_model(result.path, which="last")
    weights = result.path / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[:100])
    with pytest.raises(RunFolderError, match="not a readable safetensors file") as info:
        gradlab.load_model(result.path)
    assert "\n" not in str(info.value)
    weights.write_bytes(good)
    config = yaml.safe_load((result.path / "config.yaml").read_text())
    config["model"]["hidden"] = 32
    (result.path / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(RunFolderError, match="do not fit the run's network"):
        gradlab.load_model(result.path)


def test_a_failed_weights_write_leaves_no_partial_file(tmp_path, monkeypatch):
    import gradlab.weights as weights

    def broken(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("safetensors.torch.save_file", broken)
    _, result = run(tmp_path)
    assert result.summary["status"] == "failed"
    assert "cannot write the weights" in result.summary["error"]
    assert not list(result.path.glob("model*"))
    assert math.isfinite(result.summary["final_test_accuracy"])
    assert weights.MODEL_FILE == "model.safetensors"


def test_a_sweep_folder_keeps_each_version_of_its_sweep_file(tmp_path):
    from gradlab.sweeps.plan import load_sweep
    from gradlab.sweeps.run import run_sweep

    base = tiny(optim={"max_steps": 3})
    base["train"]["device"] = "cpu"
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "base": base, "seeds": [0]}))
    folder = run_sweep(load_sweep(path), tmp_path / "runs", jobs=1)
    first = path.read_text()
    path.write_text(first + "# a second version\n")
    run_sweep(load_sweep(path), tmp_path / "runs", jobs=1)
    copies = sorted(folder.glob("sweep-file-*.yaml"))
    assert sorted(c.read_text() for c in copies) == sorted([first, path.read_text()])
    record = json.loads((folder / "sweep.json").read_text())
    assert (folder / record["source_copy"]).read_text() == path.read_text()
    table = gradlab.comparison([folder])  # the copies are not runs, and no warning is needed
    assert len(table) == 1
