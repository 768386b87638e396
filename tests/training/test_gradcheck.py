"""gradcheck and ReLU kinks: entries whose finite difference straddles a kink are left out."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch
from conftest import tiny
from typer.testing import CliRunner

from gradlab.cli import app
from gradlab.cli.render import print_gradcheck
from gradlab.config import config_from_dict
from gradlab.model import TwoLayerNet

gc = importlib.import_module("gradlab.gradcheck")  # the module; gradlab.gradcheck is the function

BASELINE = str(Path(__file__).parents[2] / "configs" / "baseline.yaml")
EPS = 1e-5
runner = CliRunner()


def net_and_batch(inputs: str = "dataset", samples: int = 4, **model):
    config = config_from_dict(tiny(model={"hidden": 8, **model}))
    torch.manual_seed(config.seed)
    x, y = gc.check_inputs(config, samples, inputs)
    return TwoLayerNet(config.model).double(), x, y


def crossings(z: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Reference: does ``z + delta`` or ``z - delta`` lie on another side of 0 than ``z``?"""
    side = z > 0
    return ((z + delta > 0) != side) | ((z - delta > 0) != side)


def test_a_planted_hidden_kink_is_reported_left_out_and_the_check_passes():
    model, x, y = net_and_batch()
    with torch.no_grad():  # the pre-activation of hidden unit 3 on sample 1 is 0
        model.fc1.bias[3] = -(model.fc1.weight[3] @ x[1])
    report = gc.check_model(model, x, y, EPS)

    # every entry whose +-eps moves some pre-activation across 0, computed by hand: the
    # pre-activations are affine in fc1's entries (weight [j, k] moves z[:, j] by eps x[:, k])
    # and do not depend on fc2's
    z = x @ model.fc1.weight.detach().T + model.fc1.bias.detach()
    weight = crossings(z[:, :, None], EPS * x[:, None, :]).any(dim=0).flatten()
    bias = crossings(z, torch.full_like(z, EPS)).any(dim=0)
    assert report["kinks"] == {
        "fc1.weight": weight.nonzero().flatten().tolist(),
        "fc1.bias": bias.nonzero().flatten().tolist(),
        "fc2.weight": [],
        "fc2.bias": [],
    }
    planted = set(range(3 * 784, 4 * 784)) & set(report["kinks"]["fc1.weight"])
    assert planted == {3 * 784 + k for k in x[1].nonzero().flatten().tolist()}  # lit pixels
    assert 3 in report["kinks"]["fc1.bias"]

    assert report["passed"]
    for result in report["engines"].values():
        params = result["params"]
        assert params["fc1.bias"]["kinks"] == len(report["kinks"]["fc1.bias"])
        assert params["fc1.weight"]["kinks"] == len(report["kinks"]["fc1.weight"])
        assert params["fc1.weight"]["entries"] == 8 * 784
        assert result["overall"]["kinks"] == int(weight.sum() + bias.sum())
        assert result["overall"]["rel_error"] < 1e-7 and result["overall"]["verdict"] == "good"

    # the kink is real: with it, fc1.bias would not pass
    diffs = gc.finite_differences(model, x, y, "fc1.bias", torch.arange(8), EPS)
    approx, kink = diffs.approx, diffs.kink
    exact = gc.analytic_gradients(model, x, y)["fc1.bias"]
    assert gc.relative_error(approx, exact) > gc.SUSPICIOUS
    assert gc.relative_error(approx[~kink], exact[~kink]) < 1e-7


def test_a_planted_output_kink_is_reported():
    model, x, y = net_and_batch("random", output_activation="relu")
    with torch.no_grad():  # logit 2 of sample 0 is 0
        h = torch.relu(model.fc1(x))
        model.fc2.bias[2] = -(model.fc2.weight[2] @ h[0])
        h = torch.relu(model.fc1(x))
        z = model.fc2(h)
    report = gc.check_model(model, x, y, EPS)
    # logits are affine in fc2's entries: weight [c, j] moves z[:, c] by eps h[:, j]
    weight = crossings(z[:, :, None], EPS * h[:, None, :]).any(dim=0).flatten()
    bias = crossings(z, torch.full_like(z, EPS)).any(dim=0)
    assert report["kinks"]["fc2.bias"] == bias.nonzero().flatten().tolist()
    assert report["kinks"]["fc2.weight"] == weight.nonzero().flatten().tolist()
    assert 2 in report["kinks"]["fc2.bias"] and report["kinks"]["fc1.weight"]
    assert report["passed"]


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_smooth_networks_have_no_kinks(activation):
    model, x, y = net_and_batch(activation=activation)
    report = gc.check_model(model, x, y, EPS, entries=300)
    assert report["kinks"] == {name: [] for name, _ in model.named_parameters()}
    for result in report["engines"].values():
        assert result["overall"]["kinks"] == 0 and result["overall"]["entries"] == 300 + 8 + 80 + 10
    assert report["passed"]


def test_rows_leave_kinks_out_and_say_when_every_entry_is_one():
    approx = torch.tensor([1.0, 2.0, 3.0])
    exact = torch.tensor([1.0, 2.0, 4.0])
    row = gc.report_row(approx, exact, torch.tensor([False, False, True]))
    assert row == {
        "entries": 3,
        "kinks": 1,
        "rel_error": 0.0,
        "max_abs_diff": 0.0,
        "floor": 0.0,
        "entry_error": 0.0,
        "unresolved": 0,
        "note": None,
        "verdict": "good",
    }
    row = gc.report_row(approx, exact, torch.tensor([True, True, True]))
    assert row == {
        "entries": 3,
        "kinks": 3,
        "rel_error": None,
        "max_abs_diff": None,
        "floor": None,
        "entry_error": None,
        "unresolved": 0,
        "note": None,
        "verdict": "all kinks",
    }


def test_a_parameter_of_kinks_only_is_said_so(capsys):
    model, x, y = net_and_batch("random", hidden=2)
    with torch.no_grad():  # both hidden units at 0 on sample 0: every fc1 entry is a kink
        model.fc1.bias.copy_(-(model.fc1.weight @ x[0]))
    report = {"samples": 4, "eps": EPS, "inputs": "random", **gc.check_model(model, x, y, EPS)}
    params = report["engines"]["analytic"]["params"]
    for name, size in (("fc1.weight", 2 * 784), ("fc1.bias", 2)):
        assert params[name]["verdict"] == "all kinks" and params[name]["kinks"] == size
        assert params[name]["rel_error"] is None and params[name]["max_abs_diff"] is None
        assert params[name]["floor"] is None and params[name]["entry_error"] is None
    assert params["fc2.weight"]["kinks"] == 0 and params["fc2.weight"]["verdict"] == "good"
    assert report["passed"]  # every other parameter is good
    json.dumps(report)
    print_gradcheck(report)
    out = capsys.readouterr().out
    assert "all kinks" in out and "every entry of fc1.weight, fc1.bias is a kink" in out
    assert "passed" in out


def test_the_readme_baseline_check_passes_and_reports_kinks():
    command = ["gradcheck", BASELINE, "--inputs", "random", "--entries", "1000"]
    result = runner.invoke(app, command, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "kinks" in result.stdout and "passed" in result.stdout
    result = runner.invoke(app, [*command, "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["passed"] and report["kinks"]["fc1.bias"]
    for engine in ("autograd", "analytic"):
        overall = report["engines"][engine]["overall"]
        assert overall["kinks"] >= 1 and overall["entries"] == 2110
        assert overall["rel_error"] < 1e-7 and overall["verdict"] == "good"
        fc1_bias = report["engines"][engine]["params"]["fc1.bias"]
        assert fc1_bias["kinks"] == len(report["kinks"]["fc1.bias"])


def test_a_wrong_gradient_is_still_caught(monkeypatch):
    def one_percent_off(model, x, y):
        grads = gc.analytic_gradients(model, x, y)
        grads["fc1.bias"] = grads["fc1.bias"] * 1.01  # the parameter with a kink
        return grads

    monkeypatch.setitem(gc.ENGINES, "analytic", one_percent_off)
    command = ["gradcheck", BASELINE, "--inputs", "random", "--entries", "1000"]
    result = runner.invoke(app, [*command, "--format", "json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    analytic, autograd = report["engines"]["analytic"], report["engines"]["autograd"]
    assert analytic["params"]["fc1.bias"]["kinks"] >= 1
    assert analytic["params"]["fc1.bias"]["verdict"] == "wrong"
    assert analytic["params"]["fc1.bias"]["rel_error"] == pytest.approx(0.01 / 2.01, rel=1e-3)
    assert analytic["params"]["fc2.weight"]["verdict"] == "good"
    assert not analytic["passed"] and autograd["passed"] and not report["passed"]
    result = runner.invoke(app, command, env={"COLUMNS": "200"})
    assert result.exit_code == 1 and "failed" in result.stdout


@pytest.mark.parametrize("eps", ["inf", "nan", "0", "-1e-5", "0.5", "1e-320"])
def test_eps_must_be_a_small_positive_number(eps):
    config = Path(__file__).parents[2] / "configs" / "baseline.yaml"
    result = CliRunner().invoke(app, ["gradcheck", str(config), "--eps", eps])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: --eps") and "greater than 0 and at most 0.1" in line
