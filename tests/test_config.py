from pathlib import Path

import pytest
import yaml

from gradlab.config import (
    PARAMETER_NAMES,
    Config,
    ModelConfig,
    config_from_dict,
    load_config,
    parse_override,
)
from gradlab.errors import ConfigError


def test_every_key_has_a_default_and_a_description():
    config = config_from_dict({"data": {"name": "mnist-sample"}})
    assert config.data.name == "mnist-sample"
    assert config.optim.lr == 0.01 and config.optim.batch_size == 100
    for section in (
        Config,
        *(
            Config.model_fields[s].annotation
            for s in ("data", "model", "optim", "train", "diagnostics")
        ),
    ):
        for name, field in section.model_fields.items():
            if section is Config and name in ("data", "model", "optim", "train", "diagnostics"):
                continue
            assert field.description, f"{section.__name__}.{name} has no docstring"


def test_overrides_are_parsed_as_yaml_and_validated(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {name: mnist-sample}\n")
    config = load_config(
        path, ["optim.lr=0.5", "model.activation=tanh", "edit=[{type: clip_norm, max_norm: 2}]"]
    )
    assert config.optim.lr == 0.5
    assert config.model.activation == "tanh"
    assert config.edit[0].max_norm == 2.0
    config = load_config(path, ["edit=[{type: clip_norm}]", "edit.0.max_norm=0.5"])
    assert config.edit[0].max_norm == 0.5
    with pytest.raises(ConfigError, match=r"optim\.lr: .*greater than 0"):
        load_config(path, ["optim.lr=0"])


def test_override_parsing():
    assert parse_override("a.b=1") == ("a.b", 1)
    assert parse_override("name=x=y") == ("name", "x=y")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("optim.lr")
    with pytest.raises(ConfigError, match="optim.lr is a value, not a section"):
        config_from_dict({"optim": {"lr": 0.1}}, ["optim.lr.x=1"])
    with pytest.raises(ConfigError, match=r"optim\.lr: Input should be a valid number"):
        config_from_dict({}, ["optim.lr.x=1"])
    with pytest.raises(ConfigError, match="not an index"):
        config_from_dict({"edit": [{"type": "clip_norm"}]}, ["edit.3.max_norm=1"])


def test_resolved_config_round_trips(tmp_path: Path):
    config = config_from_dict(
        {"data": {"name": "mnist-sample"}, "edit": [{"type": "clip_norm", "params": "fc2.*"}]}
    )
    path = tmp_path / "resolved.yaml"
    path.write_text(config.to_yaml())
    again = load_config(path)
    assert again == config
    assert yaml.safe_load(config.to_yaml())["edit"][0]["params"] == ["fc2.*"]
    cpu = {"device": "cpu", "amp": "off", "grad_scaler": False, "engine": "analytic"}
    assert again.experiment_hash(cpu) == config.experiment_hash(cpu)
    for same in (["name=other"], ["seed=1"]):  # a group: one experiment over seeds
        assert config_from_dict(config.to_dict(), same).experiment_hash(cpu) == (
            config.experiment_hash(cpu)
        )
    assert config_from_dict(config.to_dict(), ["optim.lr=0.5"]).experiment_hash(cpu) != (
        config.experiment_hash(cpu)
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"optim": {"lrr": 1}}, r"optim\.lrr: unknown key; valid keys here: lr, momentum, "),
        (
            {"bogus": 1},
            r"bogus: unknown key; valid keys here: name, seed, data, model, optim, train, diagnostics, edit",
        ),
        ({"optim": {"lr": "fast"}}, r"optim\.lr: .*number.*'fast'"),
        ({"optim": {"batch_size": 0}}, r"optim\.batch_size: .*greater than or equal to 1"),
        ({"data": {"name": "cifar"}}, r"data\.name: .*'mnist', 'fashion-mnist' or 'mnist-sample'"),
        ({"model": {"activation": "gelu"}}, r"model\.activation: .*'relu', 'tanh' or 'sigmoid'"),
        (
            {"train": {"device": "tpu"}},
            r"train\.device: must be one of auto, cpu, cuda, cuda:N, mps",
        ),
        ({"name": "a b"}, r"name: must start with a letter or digit"),
        ({"optim": {"nesterov": True}}, r"nesterov needs momentum > 0"),
        ({"optim": []}, r"optim: .*valid dictionary"),
        (
            {"edit": [{"type": "clip"}]},
            r"edit\[0\]\.type: unknown edit type 'clip'; valid types: clip_norm",
        ),
        ({"edit": [{"max_norm": 1}]}, r"edit\[0\]\.type: required"),
        (
            {"edit": [{"type": "clip_norm", "max_nrom": 1}]},
            r"edit\[0\]\.max_nrom: unknown key; valid keys here: type, params",
        ),
        (
            {"edit": [{"type": "clip_norm", "max_norm": -1}]},
            r"edit\[0\]\.max_norm: .*greater than 0",
        ),
        (
            {"edit": [{"type": "clip_norm", "params": ["fc3.*"]}]},
            r"pattern 'fc3\.\*' matches no parameter",
        ),
        (
            {"edit": [{"type": "clip_norm", "start_step": 5, "end_step": 5}]},
            r"end_step must be greater",
        ),
        ({"edit": {"type": "clip_norm"}}, r"edit: must be a list"),
        ({"edit": ["clip_norm"]}, r"edit\[0\]: expected a mapping"),
    ],
)
def test_invalid_values_name_the_key_and_what_is_allowed(raw, message):
    with pytest.raises(ConfigError, match=message) as info:
        config_from_dict(raw, source="c.yaml")
    assert str(info.value).startswith("c.yaml: ")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("optim: {lr: [1, 2\n", "invalid YAML at line"),
        ("- 1\n- 2\n", "expected a mapping of sections"),
    ],
)
def test_bad_files(tmp_path: Path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.yaml")


def test_parameter_names_match_the_model():
    import torch

    from gradlab.model import TwoLayerNet

    cfg = ModelConfig(hidden=7)
    net = TwoLayerNet(cfg)
    shapes = {name: tuple(p.shape) for name, p in net.named_parameters()}
    assert shapes == cfg.parameter_shapes()
    assert tuple(shapes) == PARAMETER_NAMES
    assert sum(p.numel() for p in TwoLayerNet(ModelConfig()).parameters()) == 79510
    assert net(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
