"""Gradient health: statistics, alerts, non-finite policies, gradcheck and inspect."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny
from typer.testing import CliRunner

from gradlab.cli import app
from gradlab.config import config_from_dict, load_config
from gradlab.diagnostics import gradient_statistics
from gradlab.gradcheck import autograd_gradients, gradcheck, relative_error, verdict
from gradlab.runlog import GRADS_STATS as STATS
from gradlab.train import train

CONFIGS = Path(__file__).parents[2] / "configs"
runner = CliRunner()


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_statistics_match_hand_computation():
    g = torch.tensor([[0.0, 3.0], [-4.0, 0.0]])
    b = torch.tensor([1.0, -1.0, 0.5])
    w = torch.tensor([[1.0, 2.0], [2.0, 4.0]])
    wb = torch.tensor([0.0, 3.0, 4.0])
    stats = gradient_statistics([g, b], [w, wb])
    for got, grad, weight in zip(stats.tolist(), (g, b), (w, wb), strict=True):
        a, wa = grad.numpy().ravel(), weight.numpy().ravel()
        norm = math.sqrt(sum(x * x for x in a))
        expected = {
            "mean": a.mean(),
            "std": np.std(a),  # population std
            "norm": norm,
            "max_abs": np.abs(a).max(),
            "zero_frac": np.mean(a == 0),
            "weight_norm": np.linalg.norm(wa),
        }
        assert [got[STATS.index(k)] for k in expected] == pytest.approx(
            list(expected.values()), rel=1e-6
        )
        # filled after the edit and after the optimizer step
        assert math.isnan(got[STATS.index("norm_after")]) and math.isnan(
            got[STATS.index("update_ratio")]
        )


def test_health_is_measured_where_the_update_happens(tmp_path, tiny_config):
    """norm_after is the edited gradient's norm and update_ratio the real step: for plain
    SGD it is lr * norm_after / weight_norm; with momentum it is not."""
    clip = [{"type": "clip_norm", "max_norm": 0.05, "per_param": True}]
    plain = train(tiny_config(edit=clip, diagnostics={"every": 4}), tmp_path)
    grads = rows(plain.path / "grads.csv")
    lr = 0.1
    for r in grads:
        norm, after = float(r["norm"]), float(r["norm_after"])
        assert after == pytest.approx(min(norm, 0.05), rel=1e-4)  # the clip, per parameter
        expected = lr * after / float(r["weight_norm"])
        assert float(r["update_ratio"]) == pytest.approx(expected, rel=1e-3)
    heavy = train(
        tiny_config(edit=clip, optim={"momentum": 0.9}, diagnostics={"every": 4}), tmp_path
    )
    later = [r for r in rows(heavy.path / "grads.csv") if int(r["step"]) >= 4]
    ratios = [
        float(r["update_ratio"]) / (lr * float(r["norm_after"]) / float(r["weight_norm"]))
        for r in later
    ]
    assert max(ratios) > 1.5  # the velocity moves the weights further than lr * g
    adam = train(
        tiny_config(optim={"name": "adam", "lr": 0.001}, diagnostics={"every": 4}), tmp_path
    )
    for r in rows(adam.path / "grads.csv"):
        sgd_like = 0.001 * float(r["norm_after"]) / float(r["weight_norm"])
        assert float(r["update_ratio"]) != pytest.approx(sgd_like, rel=0.05)  # Adam's own step
    assert min(int(r["step"]) for r in grads) == 1  # checked before step 50, from step 1


def test_grads_csv_is_written_every_n_steps(tmp_path, tiny_config):
    result = train(tiny_config(diagnostics={"every": 4}), tmp_path)
    grads = rows(result.path / "grads.csv")
    assert list(grads[0]) == ["step", "param", *STATS]
    assert [(r["step"], r["param"]) for r in grads[:5]] == [
        ("1", "fc1.weight"),
        ("1", "fc1.bias"),
        ("1", "fc2.weight"),
        ("1", "fc2.bias"),
        ("2", "fc1.weight"),
    ]
    # dense early (1, 2, then powers of two below every), then every 4 steps
    assert sorted({int(r["step"]) for r in grads}) == [1, 2, 4, 8, 12]
    steps = {r["step"]: r for r in rows(result.path / "steps.csv")}
    for r in grads:  # the same gradient as the step's own per-parameter norm
        assert float(r["norm"]) == pytest.approx(
            float(steps[r["step"]][f"grad_norm.{r['param']}"]), rel=1e-5
        )
    assert result.summary["alerts"] == {"vanishing": 0, "exploding": 0, "dead_relu": 0}
    off = train(tiny_config(diagnostics={"every": 0}), tmp_path)
    assert not (off.path / "grads.csv").exists() and off.summary["alerts"] is None


def run_config(name: str, tmp_path: Path, **overrides) -> dict:
    config = load_config(CONFIGS / f"{name}.yaml", [f"{k}={v}" for k, v in overrides.items()])
    fired = []
    result = train(config, tmp_path, on_alert=fired.append)
    return {"summary": result.summary, "fired": fired, "path": result.path}


@pytest.mark.parametrize(
    ("config", "alert", "overrides"),
    [
        ("vanishing", "vanishing", {"optim.max_steps": 30}),
        ("exploding", "exploding", {"optim.max_steps": 30}),
        ("dead_relu", "dead_relu", {"optim.max_steps": 80}),
    ],
)
def test_each_alert_fires_on_its_config_and_the_run_survives(tmp_path, config, alert, overrides):
    out = run_config(config, tmp_path, **overrides)
    assert out["summary"]["status"] == "completed"
    assert out["summary"]["alerts"][alert] >= 1
    first = next(a for a in out["fired"] if a.alert == alert)
    assert first.step <= overrides["optim.max_steps"]
    logged = rows(out["path"] / "alerts.csv")
    assert any(r["alert"] == alert and int(r["step"]) == first.step for r in logged)
    # lr 5 kills the ReLUs through an early explosion, which the dense first checks see too;
    # a batch on which every hidden unit is dead passes fc1 no gradient at all (norm 0), which
    # is vanishing, but only that: fc1.weight's norm exactly 0
    allowed = {alert, "exploding", "vanishing"} if alert == "dead_relu" else {alert}
    others = {k: v for k, v in out["summary"]["alerts"].items() if k not in allowed}
    assert not any(others.values()), others
    if alert == "dead_relu":
        vanishing = [r for r in logged if r["alert"] == "vanishing"]
        assert all(r["param"] == "fc1.weight" and float(r["value"]) == 0 for r in vanishing)


def test_no_alert_on_the_baseline(tmp_path):
    out = run_config("quickstart", tmp_path, **{"diagnostics.every": 5})
    assert out["fired"] == [] and not any(out["summary"]["alerts"].values())


class NanAt:
    """A test hook around the gradient engine: at the given steps the loss and every
    gradient come out NaN, whichever engine runs."""

    def __init__(self, steps):
        self.steps, self.calls = set(steps), 0

    def install(self, monkeypatch):
        import importlib

        loop = importlib.import_module("gradlab.train")  # the module: gradlab.train is the function

        make = loop.make_engine

        def patched(*args, **kwargs):
            engine = make(*args, **kwargs)
            step = engine.step

            def poisoned(x, y):
                loss, logits = step(x, y)
                self.calls += 1
                if self.calls in self.steps:
                    for p in engine.model.parameters():
                        p.grad.fill_(float("nan"))
                    return loss * float("nan"), logits
                return loss, logits

            engine.step = poisoned
            return engine

        monkeypatch.setattr(loop, "make_engine", patched)


ENGINES = ["autograd", "analytic"]


@pytest.mark.parametrize("engine", ENGINES)
def test_skip_policy_steps_over_nonfinite_losses(tmp_path, tiny_config, monkeypatch, engine):
    NanAt({3, 4}).install(monkeypatch)
    result = train(tiny_config(train={"on_nonfinite": "skip", "engine": engine}), tmp_path)
    assert result.summary["status"] == "completed" and result.summary["nonfinite_skips"] == 2
    logged = rows(result.path / "steps.csv")
    assert [r["nonfinite"] for r in logged[:6]] == ["0", "0", "1", "1", "0", "0"]
    assert all(torch.isfinite(p).all() for p in result.model.parameters())  # no NaN got in
    assert result.summary["final_test_accuracy"] > 0.3


def test_skip_policy_gives_up_after_max_consecutive_skips(tmp_path, tiny_config, monkeypatch):
    NanAt(range(5, 100)).install(monkeypatch)
    config = tiny_config(train={"on_nonfinite": "skip", "max_consecutive_skips": 3})
    result = train(config, tmp_path)
    assert result.summary["status"] == "diverged" and result.summary["diverged_step"] == 7
    assert len(rows(result.path / "steps.csv")) == 7


@pytest.mark.parametrize("engine", ENGINES)
def test_stop_policy_ends_the_run_as_diverged_with_readable_logs(
    tmp_path, tiny_config, monkeypatch, engine
):
    NanAt({3}).install(monkeypatch)
    result = train(tiny_config(train={"flush_every": 1, "engine": engine}), tmp_path)
    assert result.summary["status"] == "diverged" and result.summary["diverged_step"] == 3
    logged = rows(result.path / "steps.csv")
    assert [int(r["step"]) for r in logged] == [1, 2, 3] and logged[2]["nonfinite"] == "1"
    summary = json.loads((result.path / "summary.json").read_text())
    assert summary["status"] == "diverged"


def test_gradcheck_passes_on_the_real_model():
    config = config_from_dict(
        tiny(model={"hidden": 8, "activation": "tanh", "output_activation": "relu"})
    )
    report = gradcheck(config, samples=4)  # every entry of a small network
    result = report["engines"]["autograd"]
    assert report["passed"] and result["overall"]["entries"] == 8 * 784 + 8 + 80 + 10
    assert result["overall"]["rel_error"] < 1e-7


def test_gradcheck_fails_on_a_wrong_gradient():
    config = config_from_dict(tiny(model={"hidden": 8}))

    def off_by_two_percent(model, x, y):
        grads = autograd_gradients(model, x, y)
        grads["fc2.bias"] = grads["fc2.bias"] * 1.02
        return grads

    def bias_sign_flipped(model, x, y):
        grads = autograd_gradients(model, x, y)
        grads["fc1.bias"] = -grads["fc1.bias"]
        return grads

    report = gradcheck(
        config,
        samples=4,
        entries=50,
        engines={"scaled": off_by_two_percent, "flipped": bias_sign_flipped},
    )
    assert not report["passed"]
    scaled, flipped = report["engines"]["scaled"], report["engines"]["flipped"]
    assert (
        scaled["params"]["fc2.bias"]["verdict"] == "wrong"
        and scaled["params"]["fc1.weight"]["verdict"] == "good"
    )
    assert flipped["params"]["fc1.bias"]["rel_error"] == pytest.approx(1.0)
    assert verdict(1e-6) == "good" and verdict(5e-4) == "suspicious" and verdict(0.1) == "wrong"
    assert relative_error(torch.tensor([1.0]), torch.tensor([1.0])) == 0.0


def test_gradcheck_command(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps(tiny()))
    result = runner.invoke(app, ["gradcheck", str(config), "--entries", "20", "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (
        report["passed"] and report["engines"]["autograd"]["params"]["fc1.weight"]["entries"] == 20
    )
    result = runner.invoke(app, ["gradcheck", str(config), "--entries", "20", "--inputs", "random"])
    assert result.exit_code == 0 and "overall" in result.stdout and "passed" in result.stdout
    result = runner.invoke(app, ["gradcheck", str(config), "--entries", "-3"])
    assert result.exit_code == 2 and "--entries '-3'" in result.stderr


def test_inspect_command(tmp_path):
    out = run_config("vanishing", tmp_path, **{"optim.max_steps": 30})
    plot = tmp_path / "layers.png"
    result = runner.invoke(
        app, ["inspect", str(out["path"]), "--plot", str(plot)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "fc1.weight" in result.stdout and "update_ratio" in result.stdout
    assert "vanishing gradients at step" in result.stdout
    from matplotlib.image import imread

    assert imread(plot)[..., :3].std() > 0.05
    no_diagnostics = train(config_from_dict(tiny(diagnostics={"every": 0})), tmp_path).path
    result = runner.invoke(app, ["inspect", str(no_diagnostics)])
    assert (
        result.exit_code == 2 and "no grads.csv (the run had diagnostics.every: 0)" in result.stderr
    )
    result = runner.invoke(app, ["inspect", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "not a run folder" in result.stderr
