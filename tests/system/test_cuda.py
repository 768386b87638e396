"""The CUDA path: mixed precision, both engines, every edit and the sweep on a real GPU.

Skipped on machines without CUDA (CI has none); run on a GPU machine with
``pytest tests/system/test_cuda.py``. References are CPU runs in full precision and torch itself.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from gradlab.config import config_from_dict
from gradlab.editing import strategy_names
from gradlab.engines import AnalyticEngine, AutogradEngine
from gradlab.model import TwoLayerNet
from gradlab.train import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def tiny_raw(**train_keys) -> dict:
    return {
        "name": "cuda",
        "data": {"name": "mnist-sample"},
        "model": {"hidden": 32},
        "optim": {"lr": 0.1, "batch_size": 50, "max_steps": 40},
        "train": {"flush_every": 7, **train_keys},
        "diagnostics": {"every": 5},
    }


def test_auto_on_cuda_is_fp16_autograd_with_a_scaler_and_tracks_fp32_on_the_cpu(tmp_path):
    gpu = train(config_from_dict(tiny_raw(device="auto")), tmp_path / "gpu")
    cpu = train(config_from_dict(tiny_raw(device="cpu")), tmp_path / "cpu")
    meta = json.loads((gpu.path / "meta.json").read_text())
    assert meta["device"].startswith("cuda") and meta["engine"] == "autograd"
    assert meta["amp"]["dtype"] == "float16" and meta["amp"]["grad_scaler"]
    assert gpu.summary["status"] == "completed" and gpu.summary["steps"] == 40
    gpu_steps, cpu_steps = read_csv(gpu.path / "steps.csv"), read_csv(cpu.path / "steps.csv")
    # same seed, same batches: fp16 losses follow the fp32 ones to fp16 round-off
    for g, c in zip(gpu_steps[:10], cpu_steps[:10], strict=True):
        assert float(g["loss"]) == pytest.approx(float(c["loss"]), rel=2e-2)
    # the first step's logged norm is the unscaled one (not multiplied by 65536)
    assert float(gpu_steps[0]["grad_norm"]) == pytest.approx(
        float(cpu_steps[0]["grad_norm"]), rel=2e-2
    )
    assert (gpu.path / "grads.csv").stat().st_size > 0
    assert gpu.summary["final_test_accuracy"] > 0.5


@pytest.mark.parametrize("engine", ["analytic", "autograd"])
def test_full_precision_on_cuda_matches_the_cpu(tmp_path, engine):
    raw = tiny_raw(device="cuda", amp="off", engine=engine)
    gpu = train(config_from_dict(raw), tmp_path / "gpu")
    raw["train"]["device"] = "cpu"
    cpu = train(config_from_dict(raw), tmp_path / "cpu")
    assert json.loads((gpu.path / "meta.json").read_text())["engine"] == engine
    g = [float(r["loss"]) for r in read_csv(gpu.path / "steps.csv")]
    c = [float(r["loss"]) for r in read_csv(cpu.path / "steps.csv")]
    assert g == pytest.approx(c, rel=1e-3)


def test_analytic_gradients_match_autograd_on_cuda():
    torch.manual_seed(0)
    model = TwoLayerNet(config_from_dict({}).model).cuda()
    x = torch.rand(100, 784, device="cuda")
    y = torch.randint(0, 10, (100,), device="cuda")
    reference = AutogradEngine(model).gradients(x, y)
    AnalyticEngine(model).step(x, y)
    for name, p in model.named_parameters():
        scale = reference[name].abs().max().clamp_min(1e-12)
        torch.testing.assert_close(p.grad / scale, reference[name] / scale, rtol=0, atol=1e-5)


@pytest.mark.parametrize("strategy", strategy_names())
def test_every_strategy_runs_under_fp16_on_cuda(tmp_path, strategy):
    raw = tiny_raw(device="cuda", amp="fp16")
    raw["edit"] = [{"type": strategy}]
    result = train(config_from_dict(raw), tmp_path)
    assert result.summary["status"] == "completed", result.summary.get("error")
    steps = read_csv(result.path / "steps.csv")
    assert len(steps) == 40
    assert any(k.startswith(f"edit0.{strategy}.") for k in steps[0])


def test_bf16_on_cuda_completes_without_a_scaler(tmp_path):
    result = train(config_from_dict(tiny_raw(device="cuda", amp="bf16")), tmp_path)
    meta = json.loads((result.path / "meta.json").read_text())
    assert meta["amp"]["dtype"] == "bfloat16" and not meta["amp"]["grad_scaler"]
    assert result.summary["status"] == "completed"


def test_early_fp16_overflow_skips_are_not_divergence_on_cuda(tmp_path):
    raw = tiny_raw(device="cuda", amp="fp16", amp_init_scale=2.0**40)
    result = train(config_from_dict(raw), tmp_path)
    steps = read_csv(result.path / "steps.csv")
    assert result.summary["status"] == "completed"
    assert steps[0]["skipped"] == "1" and steps[-1]["skipped"] == "0"


def test_cuda_graph_benchmark_reports_figures():
    import importlib.util

    path = Path(__file__).parents[2] / "benchmarks" / "epoch.py"
    spec = importlib.util.spec_from_file_location("epoch_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert "steps/s" in bench.cuda_graph_report()


@pytest.mark.parametrize(("engine", "amp"), [("analytic", "off"), ("autograd", "fp16")])
def test_dp_sgd_on_cuda_tracks_the_cpu(tmp_path, engine, amp):
    """DP-SGD without noise (the noise generators of the two devices differ) on the same
    Poisson batches: the per-example norms and the losses follow the fp32 CPU run."""
    privacy = {"noise_multiplier": 0.0, "max_grad_norm": 1.0}
    raw = tiny_raw(engine=engine, amp=amp)
    gpu = train(config_from_dict({**raw, "privacy": privacy}), tmp_path / "gpu")
    cpu_raw = tiny_raw(device="cpu", amp="off")
    cpu = train(config_from_dict({**cpu_raw, "privacy": privacy}), tmp_path / "cpu")
    assert gpu.summary["status"] == "completed" and gpu.summary["steps"] == 40
    gpu_steps, cpu_steps = read_csv(gpu.path / "steps.csv"), read_csv(cpu.path / "steps.csv")
    rel = 2e-2 if amp == "fp16" else 1e-3
    for g, c in zip(gpu_steps[:10], cpu_steps[:10], strict=True):
        assert g["batch_size"] == c["batch_size"]
        # fp16 may swap two middle examples: the median then jumps to a neighbour
        columns = ("loss", "dp.norm_max", "grad_norm") + (
            () if amp == "fp16" else ("dp.norm_median",)
        )
        for column in columns:
            assert float(g[column]) == pytest.approx(float(c[column]), rel=rel), column
    assert gpu.summary["epsilon"] is None and cpu.summary["sample_rate"] == 50 / 4000
