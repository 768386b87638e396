"""gradcheck's absolute floor: what finite differences cannot resolve does not fail a check,
and a gradient that is really wrong still does."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny
from typer.testing import CliRunner

from gradlab.cli import app
from gradlab.config import config_from_dict, load_config
from gradlab.model import MLP

gc = importlib.import_module("gradlab.gradcheck")  # the module; gradlab.gradcheck is the function

CONFIGS = Path(__file__).parents[2] / "configs"
DEEP_SIGMOID = CONFIGS / "deep_sigmoid.yaml"
OFFLINE = ["data.name=mnist-sample"]  # the shipped data, whatever the config downloads
runner = CliRunner()


def torch_gradients(model, x, y):
    """The reference: torch.autograd on the loss, without gradlab's engines."""
    params = dict(model.named_parameters())
    loss = F.cross_entropy(model(x), y)
    return dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))


def scaled(name: str, factor: float):
    """An engine that is the reference except for ``name``, multiplied by ``factor``."""

    def engine(model, x, y):
        grads = torch_gradients(model, x, y)
        grads[name] = grads[name] * factor
        return grads

    return engine


def test_the_deep_sigmoid_config_passes_its_gradcheck():
    # the hostile-testing report: fc1.weight "wrong" at relative error 0.0185 while every
    # difference was 3e-11 and both engines agreed
    command = ["gradcheck", str(DEEP_SIGMOID), "--entries", "50"]
    result = runner.invoke(app, [*command, "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    roundoff = report["criterion"]["roundoff"]
    assert 1e-10 < roundoff < 1e-9  # 4 x 2.2e-16 x |J| 2.37 / 1e-5
    for engine in report["engines"].values():
        fc1 = engine["params"]["fc1.weight"]
        assert fc1["verdict"] == "good" and fc1["entry_error"] == 0.0
        assert fc1["rel_error"] > 1e-3  # the noise that used to fail it, still reported
        assert fc1["max_abs_diff"] < roundoff <= fc1["floor"]
        assert fc1["unresolved"] > 0 and engine["passed"]
    result = runner.invoke(app, command, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "below what finite differences resolve at eps=1e-05" in result.stdout
    assert "floor: round-off 4 x machine eps 2.2e-16 (float64)" in result.stdout
    assert "passed" in result.stdout


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda path: path.stem)
def test_every_shipped_config_passes_gradcheck(path):
    report = gc.gradcheck(load_config(path, OFFLINE), samples=8, entries=50)
    failing = {
        (engine, name): row
        for engine, result in report["engines"].items()
        for name, row in result["params"].items()
        if row["verdict"] not in ("good", gc.ALL_KINKS)
    }
    assert report["passed"] and not failing, failing


def test_an_entry_passes_within_its_floor_plus_the_relative_tolerance():
    approx = torch.tensor([2.0, 0.0, 1e-9, 4.0], dtype=torch.float64)
    floor = torch.full_like(approx, 1e-9)
    exact = approx + torch.tensor([2e-5, 0.9e-9, 1e-9, 0.0], dtype=torch.float64)
    errors = gc.entry_errors(approx, exact, floor)
    # 2e-5 beyond the floor on 4 + 2e-5 (with the floor: 2e-5 - 1e-9); 0.9e-9 within it
    assert errors.tolist() == pytest.approx([(2e-5 - 1e-9) / (4 + 2e-5), 0.0, 0.0, 0.0])
    row = gc.report_row(approx, exact, torch.zeros(4, dtype=torch.bool), floor, eps=1e-5)
    assert row["verdict"] == "good" and row["entry_error"] == errors[0].item()
    assert row["unresolved"] == 2 and row["note"] is None  # 0 and 1e-9 are within 1e-9
    row = gc.report_row(approx[1:3], exact[1:3], torch.zeros(2, dtype=torch.bool), floor[1:3], 1e-5)
    assert row["unresolved"] == 2 and row["verdict"] == "good"
    assert row["note"] == (
        "below what finite differences resolve at eps=1e-05; compared by absolute difference"
    )
    # a non-finite gradient is never within a floor
    nan = exact.clone()
    nan[3] = float("nan")
    row = gc.report_row(approx, nan, torch.zeros(4, dtype=torch.bool), floor)
    assert row["verdict"] == "wrong"
    # beyond the floor an entry is wrong however small it is: 3e-9 where 0 is measured
    row = gc.report_row(
        approx[1:2], approx[1:2] + 3e-9, torch.zeros(1, dtype=torch.bool), floor[1:2]
    )
    assert row["verdict"] == "wrong" and row["entry_error"] == pytest.approx(2 / 3)


def test_the_floor_comes_from_the_losses_never_from_the_engine():
    config = load_config(DEEP_SIGMOID, OFFLINE)
    engines = {"torch": torch_gradients, "broken": scaled("fc6.weight", 2.0)}
    report = gc.gradcheck(config, samples=4, entries=8, engines=engines)
    torch.manual_seed(config.seed)
    model = MLP(config.model).double()
    x, y = gc.check_inputs(config, 4, "dataset")
    with torch.no_grad():
        loss = F.cross_entropy(model(x), y).item()
    criterion = report["criterion"]
    assert criterion["loss"] == pytest.approx(loss, rel=1e-12)
    assert criterion["roundoff"] == pytest.approx(4 * 2.0**-52 * loss / 1e-5, rel=1e-12)
    assert criterion["machine_eps"] == 2.0**-52 and criterion["dtype"] == "float64"
    torch_rows, broken_rows = (
        report["engines"]["torch"]["params"],
        report["engines"]["broken"]["params"],
    )
    for name, row in torch_rows.items():
        assert row["floor"] == broken_rows[name]["floor"] >= criterion["roundoff"]
        assert row["unresolved"] == broken_rows[name]["unresolved"]


def test_a_wrong_gradient_of_the_deep_sigmoid_network_fails():
    config = load_config(DEEP_SIGMOID, OFFLINE)
    torch.manual_seed(config.seed)
    model = MLP(config.model).double()
    x, y = gc.check_inputs(config, 8, "dataset")
    # the reference, against an explicit formula: d mean CE / d last bias = mean(softmax - onehot)
    with torch.no_grad():
        explicit = (F.softmax(model(x), dim=1) - F.one_hot(y, 10)).mean(dim=0)
    reference = torch_gradients(model, x, y)
    torch.testing.assert_close(reference["fc6.bias"], explicit, rtol=1e-12, atol=1e-15)
    ratio = scaled("fc6.bias", 1.01)(model, x, y)["fc6.bias"] / explicit
    torch.testing.assert_close(ratio, torch.full_like(ratio, 1.01))

    engines = {
        "torch": torch_gradients,
        "fc6.bias 1% off": scaled("fc6.bias", 1.01),
        "fc6.weight 1% off": scaled("fc6.weight", 1.01),
        "fc1.weight x 100": scaled("fc1.weight", 100.0),  # where most entries are unresolved
        "fc2.weight zero": scaled("fc2.weight", 0.0),
    }
    report = gc.gradcheck(config, entries=30, engines=engines)
    results = report["engines"]
    assert results["torch"]["passed"] and not report["passed"]
    for engine, name in (
        ("fc6.bias 1% off", "fc6.bias"),
        ("fc6.weight 1% off", "fc6.weight"),
        ("fc1.weight x 100", "fc1.weight"),
        ("fc2.weight zero", "fc2.weight"),
    ):
        rows = results[engine]["params"]
        assert not results[engine]["passed"]
        assert rows[name]["verdict"] == "wrong", (engine, rows[name])
        assert {n for n, row in rows.items() if row["verdict"] != "good"} == {name}
    one_percent = results["fc6.weight 1% off"]["params"]["fc6.weight"]
    assert one_percent["entry_error"] == pytest.approx(0.01 / 2.01, rel=1e-3)
    assert one_percent["rel_error"] == pytest.approx(0.01 / 2.01, rel=1e-3)
    # nothing where something is measured: 1 less the floor's share of the largest entry
    zero = results["fc2.weight zero"]["params"]["fc2.weight"]
    assert zero["entry_error"] == pytest.approx(1.0, abs=0.01)


def smooth_net_and_batch():
    config = config_from_dict(tiny(model={"hidden": [8, 8], "activation": "tanh"}))
    torch.manual_seed(config.seed)
    x, y = gc.check_inputs(config, 4, "random")
    return MLP(config.model).double(), x, y


def test_a_large_eps_passes_by_its_measured_truncation_and_still_catches_one_percent():
    model, x, y = smooth_net_and_batch()
    engines = {"torch": torch_gradients, "off": scaled("fc3.weight", 1.01)}
    report = gc.check_model(model, x, y, eps=0.1, entries=50, engines=engines)
    good, off = report["engines"]["torch"], report["engines"]["off"]
    # at eps 0.1 truncation, not round-off, makes the floor; without it this would fail
    assert good["overall"]["max_abs_diff"] > 100 * report["criterion"]["roundoff"]
    assert good["passed"] and good["overall"]["entry_error"] == 0.0
    assert off["params"]["fc3.weight"]["verdict"] == "wrong" and not off["passed"]
    assert {name for name, row in off["params"].items() if row["verdict"] != "good"} == {
        "fc3.weight"
    }


def test_a_parameter_below_what_finite_differences_resolve_gets_a_note():
    config = load_config(DEEP_SIGMOID, OFFLINE)
    engines = {"torch": torch_gradients, "fc1.weight x 1e6": scaled("fc1.weight", 1e6)}
    report = gc.gradcheck(config, samples=4, eps=1e-9, entries=10, engines=engines)
    rows = report["engines"]["torch"]["params"]
    note = "below what finite differences resolve at eps=1e-09; compared by absolute difference"
    assert rows["fc1.weight"]["note"] == note and rows["fc1.weight"]["unresolved"] == 10
    assert rows["fc1.weight"]["verdict"] == "good" and report["engines"]["torch"]["passed"]
    assert rows["fc6.weight"]["note"] is None  # the last layer is well above its floor
    # compared by absolute difference: a gradient far beyond the floor is still wrong there
    off = report["engines"]["fc1.weight x 1e6"]["params"]["fc1.weight"]
    assert off["note"] == note and off["verdict"] == "wrong"
    json.dumps(report)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--entries", "0"], "--entries '0': use a positive whole number or 'all'"),
        (["--entries", "1.5"], "--entries '1.5': use a positive whole number or 'all'"),
        (["--samples", "0"], "Invalid value for '--samples'"),
        (["--samples", "10001"], "--samples 10001: from 1 to 10000"),
        (["--eps", "1e-11"], "--eps 1e-11: must be a number greater than 0"),
        (["--eps", "small"], "Invalid value for '--eps'"),
        (["--inputs", "noise"], "--inputs 'noise': use dataset or random"),
    ],
)
def test_bad_gradcheck_input_is_one_error_line(args, message):
    result = runner.invoke(app, ["gradcheck", str(DEEP_SIGMOID), *args])
    assert result.exit_code == 2 and not result.stdout
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {message}")
