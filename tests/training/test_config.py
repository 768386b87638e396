from pathlib import Path

import pytest
import yaml

from gradlab.config import (
    MAX_HIDDEN,
    Config,
    ModelConfig,
    config_from_dict,
    load_config,
    parse_override,
)
from gradlab.errors import ConfigError
from gradlab.schema import PARAMETER_NAMES
from gradlab.yamlfile import MAX_CONFIG_BYTES, MAX_YAML_DEPTH, MAX_YAML_VALUES, load_yaml


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
        ({"optim": {"lrr": 1}}, r"optim\.lrr: unknown key; valid keys here: name, lr, momentum, "),
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


# --------------------------------------------------------------------------- limits


def nested(depth: int) -> str:
    return "seed: " + "[" * (depth - 1) + "]" * (depth - 1) + "\n"


def test_yaml_depth_and_size_limits():
    value = load_yaml(nested(MAX_YAML_DEPTH), "f")["seed"]  # the mapping is the first level
    for _ in range(MAX_YAML_DEPTH - 2):
        (value,) = value
    assert value == []
    with pytest.raises(ConfigError, match=rf"^f: line 1: nested more than {MAX_YAML_DEPTH} "):
        load_yaml(nested(MAX_YAML_DEPTH + 1), "f")
    fits = "x: [" + ", ".join(["1"] * (MAX_YAML_VALUES - 3)) + "]"
    assert len(load_yaml(fits, "f")["x"]) == MAX_YAML_VALUES - 3  # + the mapping and "x"
    with pytest.raises(ConfigError, match="more than 100,000 values once aliases are expanded"):
        load_yaml(fits + "\ny: 1", "f")
    aliases = (
        "a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    )
    assert len(load_yaml(aliases + "c: [*b, *b, *b]", "f")["c"]) == 3
    bomb = aliases + "".join(
        f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("bcd", "cde", strict=True)
    )
    with pytest.raises(ConfigError, match="line 5: more than 100,000 values"):
        load_yaml(bomb, "f")
    with pytest.raises(ConfigError, match="an alias inside the node it refers to"):
        load_yaml("a: &a {b: *a}", "f")


def test_duplicate_keys_and_merges():
    with pytest.raises(ConfigError, match=r"^f: invalid YAML at line 2, column 1: duplicate key a"):
        load_yaml("a: 1\na: 2\n", "f")
    with pytest.raises(ConfigError, match="duplicate key <not a key name> \\(first at line 1\\)"):
        load_yaml("1: x\n1.0: y\n", "f")  # equal keys in Python, whatever their spelling
    merged = load_yaml("base: &b {lr: 0.1, momentum: 0.9}\noptim: {<<: *b, lr: 0.5}\n", "f")
    assert merged["optim"] == {"lr": 0.5, "momentum": 0.9}  # a merge may be overridden


def test_python_values_in_errors_are_shortened_without_expanding_them():
    import tracemalloc

    bomb: list = ["lol"] * 9
    for _ in range(8):
        bomb = [bomb] * 9  # 387 million strings if expanded
    tracemalloc.start()
    try:
        for raw in (
            {"seed": bomb},
            {"optim": {"lr": bomb}},
            {"edit": bomb},
            {"edit": [{"type": "clip_norm", "max_norm": bomb}]},
            {"seed": 10**5000},
            {"name": "a" * 10**6},
            {"bogus\nkey" * 1000: 1},
        ):
            with pytest.raises(ConfigError) as info:
                config_from_dict(raw)
            assert len(str(info.value)) < 300 and "\n" not in str(info.value), str(info.value)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20e6


def test_only_small_regular_utf8_files_are_read(tmp_path: Path):
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)
    exact = tmp_path / "exact.yaml"
    exact.write_text("data: {name: mnist-sample}\n#".ljust(MAX_CONFIG_BYTES, "x"))
    assert load_config(exact).data.name == "mnist-sample"
    exact.write_text("#".ljust(MAX_CONFIG_BYTES + 1, "x"))
    with pytest.raises(ConfigError, match=r"1,000,001 bytes, more than the 1,000,000 allowed"):
        load_config(exact)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(invalid byte at offset 9\)"):
        load_config(latin)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path / "nul\0.yaml"))


def test_limits_accept_their_edges_and_yaml_number_spellings():
    config = config_from_dict(
        {
            "model": {"hidden": MAX_HIDDEN, "init_std": 3.3e38},
            "optim": {"lr": "1e-3", "momentum": 1, "weight_decay": 1},
            "train": {"amp_init_scale": 2.0**64, "flush_every": 100_000},
        }
    )
    assert config.optim.lr == 0.001 and config.optim.momentum == 1.0
    assert config.model.hidden == MAX_HIDDEN and config.train.amp_init_scale == 2.0**64
    for raw, message in [
        ({"model": {"hidden": MAX_HIDDEN + 1}}, "at most 65,536"),
        ({"optim": {"lr": "inf"}}, "finite number"),
        ({"optim": {"min_lr": 3.5e38}}, "below 3.4e38"),
        ({"train": {"amp_init_scale": 0.5}}, "greater than or equal to 1"),
        ({"optim": {"max_steps": True}}, "not true/false"),
        ({"diagnostics": {"vanishing_ratio": float("nan")}}, "finite number"),
        ({"data": {"root": "a\0b"}}, "NUL"),
        ({"train": {"device": "cuda:12345"}}, "must be one of"),
        ({"edit": [{"type": "noise", "sigma": "-inf"}]}, r"edit\[0\]\.sigma: .*finite"),
        ({"edit": [{"type": ["clip_norm"]}]}, r"edit\[0\]\.type: unknown edit type \['clip"),
    ]:
        with pytest.raises(ConfigError, match=message):
            config_from_dict(raw)


def test_override_limits():
    with pytest.raises(ConfigError, match="more than 50 levels of keys"):
        parse_override("a" + ".a" * 60 + "=1")
    with pytest.raises(ConfigError, match=r"'²' is not an index"):
        config_from_dict({"edit": [{"type": "clip_norm"}]}, ["edit.²=1"])
    with pytest.raises(ConfigError, match=r"^--set 'x=\[1': invalid YAML at line"):
        parse_override("x=[1")
