"""Multi-layer perceptrons: hidden widths, parameter names, inits, both engines at any depth."""

from __future__ import annotations

import importlib
import itertools
import json
from pathlib import Path

import pytest
import torch
from conftest import tiny
from typer.testing import CliRunner

from gradlab.cli import app
from gradlab.config import (
    MAX_HIDDEN,
    MAX_HIDDEN_LAYERS,
    MAX_PARAMETERS,
    ModelConfig,
    config_from_dict,
)
from gradlab.diagnostics import first_and_last_weights
from gradlab.engines import AnalyticEngine, AutogradEngine
from gradlab.errors import ConfigError
from gradlab.model import MLP, TwoLayerNet

gc = importlib.import_module("gradlab.gradcheck")  # the module; gradlab.gradcheck is the function

runner = CliRunner()
DEPTHS = {1: 24, 2: [24, 12], 3: [20, 16, 12], 4: [16, 12, 8, 6]}


# --------------------------------------------------------------------------- config


def test_hidden_widths_name_fc1_to_fcN():
    cfg = ModelConfig(hidden=[256, 128, 64])
    assert cfg.widths == [256, 128, 64]
    assert cfg.parameter_shapes() == {
        "fc1.weight": (256, 784),
        "fc1.bias": (256,),
        "fc2.weight": (128, 256),
        "fc2.bias": (128,),
        "fc3.weight": (64, 128),
        "fc3.bias": (64,),
        "fc4.weight": (10, 64),
        "fc4.bias": (10,),
    }
    net = MLP(cfg)
    assert {n: tuple(p.shape) for n, p in net.named_parameters()} == cfg.parameter_shapes()
    assert net(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    # an integer is today's two-layer net; a list of one width is the same network
    assert ModelConfig(hidden=[100]).parameter_shapes() == ModelConfig().parameter_shapes()
    assert TwoLayerNet is MLP and ModelConfig().hidden == 100


@pytest.mark.parametrize(
    "hidden",
    [
        [],
        [0],
        [64, -1],
        [64, 1.5],
        [64, "8"],
        [64, True],
        "wide",
        0,
        2.5,
        MAX_HIDDEN + 1,
        [MAX_HIDDEN + 1],
        [8] * (MAX_HIDDEN_LAYERS + 1),
    ],
)
def test_bad_hidden_is_one_error_naming_the_key_and_what_is_allowed(hidden):
    with pytest.raises(ConfigError) as info:
        config_from_dict({"model": {"hidden": hidden}})
    message = str(info.value)
    assert "\n" not in message and message.startswith("config: model.hidden: ")
    if not isinstance(hidden, bool) and hidden not in (True,):
        assert "at most 65,536" in message or "not true/false" in message


def test_too_many_parameters_in_all_is_an_error_that_says_how_many():
    config_from_dict({"model": {"hidden": MAX_HIDDEN}})  # the widest two-layer net: allowed
    with pytest.raises(ConfigError, match=r"model\.hidden: .*at most 52,101,130 parameters"):
        config_from_dict({"model": {"hidden": [MAX_HIDDEN, MAX_HIDDEN]}})
    assert MAX_PARAMETERS == sum(a * b + b for a, b in [(784, MAX_HIDDEN), (MAX_HIDDEN, 10)])


def test_edit_patterns_match_the_configs_own_parameters():
    deep = config_from_dict(
        {"model": {"hidden": [8, 8, 8]}, "edit": [{"type": "clip_norm", "params": "fc4.*"}]}
    )
    assert deep.edit[0].params == ["fc4.*"]
    with pytest.raises(ConfigError, match=r"edit\[0\]\.params: pattern 'fc4\.\*' matches no"):
        config_from_dict({"edit": [{"type": "clip_norm", "params": "fc4.*"}]})
    with pytest.raises(ConfigError, match=r"matches no parameter; parameters: fc1.weight, .*fc4"):
        config_from_dict(
            {"model": {"hidden": [8, 8, 8]}, "edit": [{"type": "freeze", "params": "fc9.*"}]}
        )
    # a bad model is reported as such, not as a pattern matching nothing
    with pytest.raises(ConfigError, match=r"model\.hidden"):
        config_from_dict({"model": {"hidden": []}, "edit": [{"type": "freeze", "params": "fc3.*"}]})


def test_globs_target_every_layer_of_a_deep_network(tmp_path, tiny_config):
    from gradlab.environment import seed_everything
    from gradlab.train import train

    config = tiny_config(
        model={"hidden": [8, 6, 4]},
        optim={"max_steps": 3},
        edit=[{"type": "freeze", "params": ["fc*.weight"]}],
    )
    seed_everything(config.seed)
    initial = MLP(config.model).state_dict()
    trained = {k: v.cpu() for k, v in train(config, tmp_path).model.state_dict().items()}
    for i in range(1, 5):
        assert torch.equal(trained[f"fc{i}.weight"], initial[f"fc{i}.weight"])
        assert not torch.equal(trained[f"fc{i}.bias"], initial[f"fc{i}.bias"])


# --------------------------------------------------------------------------- inits


@pytest.mark.parametrize(
    ("init", "reference"),
    [
        ("normal", lambda w: torch.nn.init.normal_(w, std=0.05)),
        ("xavier", torch.nn.init.xavier_uniform_),
        ("xavier_uniform", torch.nn.init.xavier_uniform_),
        ("xavier_normal", torch.nn.init.xavier_normal_),
        ("kaiming", lambda w: torch.nn.init.kaiming_normal_(w, nonlinearity="relu")),
        ("kaiming_normal", lambda w: torch.nn.init.kaiming_normal_(w, nonlinearity="relu")),
        ("kaiming_uniform", lambda w: torch.nn.init.kaiming_uniform_(w, nonlinearity="relu")),
    ],
)
def test_inits_match_torch_nn_init_on_every_layer(init, reference):
    torch.manual_seed(3)
    net = MLP(ModelConfig(hidden=[32, 16], init=init, init_std=0.05))
    torch.manual_seed(3)  # the same layers built with PyTorch's init, then the reference
    expected = MLP(ModelConfig(hidden=[32, 16]))
    with torch.no_grad():
        for layer in expected.layers:
            reference(layer.weight)
            layer.bias.zero_()
    for name, p in net.named_parameters():
        assert torch.equal(p, expected.state_dict()[name]), name


def test_default_init_is_pytorchs_and_keeps_biases():
    torch.manual_seed(0)
    net = MLP(ModelConfig(hidden=[32, 16]))
    torch.manual_seed(0)
    layers = [torch.nn.Linear(784, 32), torch.nn.Linear(32, 16), torch.nn.Linear(16, 10)]
    for layer, ours in zip(layers, net.layers, strict=True):
        assert torch.equal(layer.weight, ours.weight) and torch.equal(layer.bias, ours.bias)


# --------------------------------------------------------------------------- engines

OPTIONS = list(itertools.product(DEPTHS, ["relu", "tanh", "sigmoid"], ["none", "relu"]))


@pytest.mark.parametrize(("depth", "activation", "output"), OPTIONS)
def test_analytic_equals_autograd_at_every_depth(depth, activation, output):
    torch.manual_seed(depth)
    cfg = ModelConfig(
        hidden=DEPTHS[depth], activation=activation, output_activation=output, init="xavier"
    )
    model = MLP(cfg).double()
    assert len(model.layers) == depth + 1
    with torch.no_grad():  # nonzero biases, so that the bias paths are checked too
        for layer in model.layers:
            layer.bias.normal_(0, 0.1)
    x, y = torch.rand(37, 784, dtype=torch.float64), torch.randint(0, 10, (37,))
    reference = AutogradEngine(model).gradients(x, y)
    expected_logits = model(x).detach()
    engine = AnalyticEngine(model)
    for _ in range(2):  # the second step reuses the work tensors
        loss, logits = engine.step(x, y)
        torch.testing.assert_close(logits, expected_logits)
        torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(expected_logits, y))
        for name, p in model.named_parameters():
            torch.testing.assert_close(p.grad, reference[name], msg=name)
    assert engine._rows == 37


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_both_engines_train_the_same_deep_run(tmp_path, tiny_config, activation):
    from gradlab.train import train

    runs = {
        engine: train(
            tiny_config(
                model={"hidden": [16, 8], "activation": activation, "output_activation": "relu"},
                optim={"momentum": 0.9},
                train={"engine": engine},
                edit=[{"type": "clip_norm", "max_norm": 0.5, "params": "fc3.*"}],
            ),
            tmp_path,
        )
        for engine in ("autograd", "analytic")
    }
    autograd = dict(runs["autograd"].model.named_parameters())
    for name, p in runs["analytic"].model.named_parameters():
        torch.testing.assert_close(p, autograd[name], rtol=1e-4, atol=1e-5, msg=name)
    header = (runs["analytic"].path / "steps.csv").read_text().splitlines()[0]
    assert "grad_norm.fc3.weight" in header and "edit0.clip_norm" in header


def test_gradcheck_passes_for_a_deep_network():
    config = config_from_dict(tiny(model={"hidden": [32, 16], "activation": "tanh"}))
    report = gc.gradcheck(config, samples=4, entries=200, inputs="random")
    assert report["passed"]
    for result in report["engines"].values():
        assert set(result["params"]) == set(config.model.parameter_names())


def test_gradcheck_command_finds_the_kinks_of_every_hidden_relu(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("model:\n  hidden: [32, 16]\n  output_activation: relu\n")
    command = ["gradcheck", str(path), "--inputs", "random", "--entries", "300"]
    result = runner.invoke(app, [*command, "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["passed"] and set(report["kinks"]) == {
        f"fc{i}.{kind}" for i in (1, 2, 3) for kind in ("weight", "bias")
    }
    assert len(gc.relu_inputs(MLP(ModelConfig(hidden=[32, 16], output_activation="relu")))) == 3


# --------------------------------------------------------------------------- diagnostics


def test_vanishing_ratio_compares_the_first_and_the_last_layer():
    names = ModelConfig(hidden=[8, 8, 8, 8]).parameter_names()
    assert first_and_last_weights(names) == ("fc1.weight", "fc5.weight")
    assert first_and_last_weights(ModelConfig().parameter_names()) == ("fc1.weight", "fc2.weight")


SHIPPED = Path(__file__).parents[2] / "configs"


def test_deep_configs_ship_with_their_alerts(tmp_path):
    """The deep sigmoid net's early gradients vanish; with relu and kaiming they do not."""
    from gradlab.config import load_config
    from gradlab.train import train

    overrides = ["optim.max_steps=60", "train.eval_every=60"]
    alerts = {}
    for name in ("deep_sigmoid", "deep_relu_kaiming"):
        seen = []
        train(load_config(SHIPPED / f"{name}.yaml", overrides), tmp_path, on_alert=seen.append)
        alerts[name] = [a for a in seen if a.alert == "vanishing"]
    assert alerts["deep_sigmoid"][0].param.startswith("fc1.")  # a tiny norm, or the ratio
    assert alerts["deep_relu_kaiming"] == []
