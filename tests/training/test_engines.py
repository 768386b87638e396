"""The analytic engine against autograd, for every model option it supports."""

from __future__ import annotations

import copy
import csv
import itertools

import pytest
import torch

from gradlab.config import ModelConfig, config_from_dict
from gradlab.engines import AnalyticEngine, AutogradEngine, resolve_engine
from gradlab.errors import ConfigError
from gradlab.model import TwoLayerNet
from gradlab.train import train

OPTIONS = list(
    itertools.product(
        ["relu", "tanh", "sigmoid"], ["none", "relu"], ["default", "normal", "kaiming"]
    )
)


@pytest.mark.parametrize(("activation", "output", "init"), OPTIONS)
@pytest.mark.parametrize("batch", [1, 37, 100])
def test_analytic_gradients_match_autograd(activation, output, init, batch):
    torch.manual_seed(batch)
    cfg = ModelConfig(
        hidden=24, activation=activation, output_activation=output, init=init, init_std=0.1
    )
    model = TwoLayerNet(cfg)
    x, y = torch.rand(batch, 784), torch.randint(0, 10, (batch,))
    reference = AutogradEngine(model).gradients(x, y)
    with torch.no_grad():
        expected_loss = torch.nn.functional.cross_entropy(model(x), y)
    engine = AnalyticEngine(model)
    loss, logits = engine.step(x, y)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(logits, model(x).detach(), rtol=1e-6, atol=1e-6)
    for name, p in model.named_parameters():
        scale = reference[name].abs().max().clamp_min(1e-12)
        torch.testing.assert_close(
            p.grad / scale, reference[name] / scale, rtol=0, atol=2e-6, msg=name
        )


def test_analytic_reuses_its_work_tensors_and_writes_grads_in_place():
    model = TwoLayerNet(ModelConfig(hidden=8))
    engine = AnalyticEngine(model)
    grads = [p.grad for p in model.parameters()]
    for _ in range(3):
        engine.step(torch.rand(5, 784), torch.randint(0, 10, (5,)))
    assert all(p.grad is g for p, g in zip(model.parameters(), grads, strict=True))
    assert engine._rows == 5


def test_analytic_batches_of_changing_size_share_one_set_of_work_tensors():
    """Poisson batches change size at every step: each size is right (against autograd),
    and the work tensors are those of the largest batch, never reallocated below it."""
    torch.manual_seed(0)
    model = TwoLayerNet(ModelConfig(hidden=8)).double()
    engine, reference = AnalyticEngine(model), AutogradEngine(copy.deepcopy(model))
    first = None
    for batch in (9, 4, 9, 1, 7, 9, 3):
        x, y = torch.rand(batch, 784, dtype=torch.float64), torch.randint(0, 10, (batch,))
        expected = reference.gradients(x, y)
        loss, logits = engine.step(x, y)
        assert logits.shape == (batch, 10)
        for name, p in model.named_parameters():
            torch.testing.assert_close(p.grad, expected[name], msg=f"{name}, batch {batch}")
        first = first or engine._full["z"][0].data_ptr()
        assert engine._full["z"][0].data_ptr() == first and engine._rows == 9


def read_losses(path) -> list[float]:
    with open(path / "steps.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_both_engines_train_the_same_run(tmp_path, tiny_config, activation):
    runs = {
        engine: train(
            tiny_config(
                model={"activation": activation, "output_activation": "relu"},
                optim={"momentum": 0.9, "weight_decay": 1e-3},
                train={"engine": engine},
                edit=[{"type": "clip_norm", "max_norm": 0.5}],
            ),
            tmp_path,
        )
        for engine in ("autograd", "analytic")
    }
    assert read_losses(runs["autograd"].path) == pytest.approx(
        read_losses(runs["analytic"].path), rel=1e-4
    )
    for name, p in runs["autograd"].model.named_parameters():
        torch.testing.assert_close(
            p, dict(runs["analytic"].model.named_parameters())[name], rtol=1e-4, atol=1e-5
        )


def test_engine_choice():
    assert resolve_engine("auto", None) == "analytic"
    assert resolve_engine("auto", torch.float16) == "autograd"
    assert resolve_engine("autograd", None) == "autograd"
    with pytest.raises(ConfigError, match="analytic runs in full precision only"):
        resolve_engine("analytic", torch.bfloat16)


def test_meta_records_the_engine(tmp_path, tiny_config):
    import json

    auto = train(tiny_config(), tmp_path)
    assert json.loads((auto.path / "meta.json").read_text())["engine"] == "analytic"
    amp = train(tiny_config(train={"amp": "fp16"}), tmp_path)
    assert json.loads((amp.path / "meta.json").read_text())["engine"] == "autograd"


def test_gradcheck_checks_both_engines():
    from gradlab.gradcheck import gradcheck

    report = gradcheck(
        config_from_dict({"data": {"name": "mnist-sample"}, "model": {"hidden": 8}}),
        samples=4,
        entries=100,
    )
    assert set(report["engines"]) == {"autograd", "analytic"} and report["passed"]


def test_loss_only_logging_keeps_the_loss_and_edit_columns(tmp_path, tiny_config):
    result = train(tiny_config(train={"log": "loss"}, edit=[{"type": "clip_norm"}]), tmp_path)
    header = (result.path / "steps.csv").read_text().splitlines()[0].split(",")
    assert header == [
        "step",
        "epoch",
        "lr",
        "loss",
        "skipped",
        "nonfinite",
        "edit0.clip_norm.norm",
        "edit0.clip_norm.scale",
        "edit0.clip_norm.changed",
        "elapsed_s",
    ]
    full = train(tiny_config(edit=[{"type": "clip_norm"}]), tmp_path)
    assert read_losses(result.path) == read_losses(full.path)
    assert (
        result.summary["grad_norm_mean"] is None
        and result.summary["final_train_loss"] == full.summary["final_train_loss"]
    )


def test_cuda_graph_benchmark_is_skipped_cleanly_without_a_gpu(monkeypatch):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[2] / "benchmarks" / "epoch.py"
    spec = importlib.util.spec_from_file_location("epoch_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.cuda_graph_report() == "skipped: no CUDA device on this machine"
    with pytest.raises(ConfigError, match="cuda:0 is not available"):
        from gradlab.environment import resolve_device

        resolve_device("cuda:0")
