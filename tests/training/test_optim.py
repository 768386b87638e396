"""gradlab's optimizers against torch.optim, update for update; the registry; the config."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gradlab.config import OptimConfig, config_from_dict
from gradlab.errors import ConfigError
from gradlab.optimizers import (
    Optimizer,
    get_optimizer,
    make_optimizer,
    optimizer_names,
    optimizers,
    register,
)

SETTINGS = {
    "sgd": [
        {},
        {"weight_decay": 0.01},
        {"momentum": 0.9},
        {"momentum": 0.9, "dampening": 0.5, "weight_decay": 0.001},
        {"momentum": 0.8, "nesterov": True, "weight_decay": 0.01},
    ],
    "adam": [
        {},
        {"weight_decay": 0.01},
        {"betas": [0.8, 0.99], "eps": 1e-6},
        {"amsgrad": True, "weight_decay": 0.1},
    ],
    "adamw": [
        {},
        {"weight_decay": 0.01},
        {"weight_decay": 0.1, "amsgrad": True, "betas": [0.5, 0.9]},
    ],
    "rmsprop": [
        {},
        {"weight_decay": 0.01},
        {"momentum": 0.9, "alpha": 0.9},
        {"centered": True, "momentum": 0.5, "weight_decay": 0.01, "eps": 1e-4},
    ],
}
"""Settings each optimizer is checked with; every registered optimizer needs an entry."""

CASES = [(name, options) for name in optimizer_names() for options in SETTINGS.get(name, [{}])]
SHAPES = [(6, 4), (6,), (3, 6), (3,)]


def reference(name: str, params: list[torch.Tensor], cfg: OptimConfig) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimizer ``name`` reproduces, with the same settings (gradlab's
    keys are torch's keyword arguments)."""
    module, _, cls = get_optimizer(name).reference.rpartition(".")
    assert module == "torch.optim"
    kwargs = {key: getattr(cfg, key) for key in get_optimizer(name).keys}
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    return getattr(torch.optim, cls)(params, lr=cfg.lr, **kwargs)


def test_every_optimizer_has_settings_to_check():
    assert optimizer_names() == ["adam", "adamw", "rmsprop", "sgd"]
    assert set(SETTINGS) == set(optimizer_names())
    for name, cls in optimizers().items():
        assert cls.name == name and cls.reference.startswith("torch.optim.")
        assert "weight_decay" in cls.keys and set(cls.keys) <= set(OptimConfig.model_fields)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(("name", "options"), CASES)
def test_matches_torch_optim(name, options, dtype):
    """20 steps with random gradients and a changing lr; some steps freeze a parameter,
    which torch.optim reproduces by a None gradient (it then skips that parameter)."""
    cfg = OptimConfig(name=name, lr=0.05, **options)
    g = torch.Generator().manual_seed(0)
    ours = {f"p{i}": torch.randn(s, generator=g, dtype=dtype) for i, s in enumerate(SHAPES)}
    theirs = [p.clone().requires_grad_() for p in ours.values()]
    torch_opt = reference(name, theirs, cfg)
    opt = make_optimizer(ours, cfg)
    assert type(opt).name == name
    for step in range(1, 21):
        lr = 0.05 * (1 + step % 3) / 2  # as a schedule does
        opt.lr = lr
        for group in torch_opt.param_groups:
            group["lr"] = lr
        grads = [torch.randn(s, generator=g, dtype=dtype) for s in SHAPES]
        frozen = frozenset({"p1"} if 5 <= step < 9 else {"p0", "p3"} if step == 12 else set())
        for (n, p), q, grad in zip(ours.items(), theirs, grads, strict=True):
            p.grad = grad.clone()
            q.grad = None if n in frozen else grad.clone()
        opt.step(frozen=frozen)
        torch_opt.step()
    tolerance = {"rtol": 1e-12, "atol": 1e-14} if dtype == torch.float64 else {}
    for a, b in zip(ours.values(), theirs, strict=True):
        assert a.dtype == dtype
        torch.testing.assert_close(a, b.detach(), **(tolerance or {"rtol": 1e-6, "atol": 1e-7}))


@pytest.mark.parametrize(("name", "options"), CASES)
def test_frozen_parameters_stay_bit_identical(name, options):
    cfg = OptimConfig(name=name, lr=0.1, **{"weight_decay": 0.1, **options})
    params = {"a": torch.ones(3), "b": torch.ones(3)}
    before = params["a"].clone()
    opt = make_optimizer(params, cfg)
    for _ in range(3):
        params["a"].grad = torch.full((3,), 0.5)
        params["b"].grad = torch.full((3,), 0.5)
        opt.step(frozen=frozenset({"a"}))
    assert torch.equal(params["a"], before)
    assert "a" not in opt.state
    assert not torch.equal(params["b"], before)
    opt.step(frozen=frozenset({"a", "b"}))  # nothing to update: a no-op


def test_step_leaves_the_gradients_alone():
    for name in optimizer_names():
        cfg = OptimConfig(name=name, weight_decay=0.1)
        params = {"w": torch.ones(4)}
        params["w"].grad = grad = torch.arange(4.0)
        make_optimizer(params, cfg).step()
        assert params["w"].grad is grad and torch.equal(grad, torch.arange(4.0))


def test_grad_scaler_drives_every_optimizer():
    """torch.amp.GradScaler unscales through ``param_groups`` and skips ``step`` on overflow."""
    for name in optimizer_names():
        w = torch.ones(3, requires_grad=True)
        opt = make_optimizer({"w": w}, OptimConfig(name=name))
        scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
        scaler.scale((w * torch.tensor([1.0, 2.0, 3.0])).sum()).backward()
        scaler.unscale_(opt)
        torch.testing.assert_close(w.grad, torch.tensor([1.0, 2.0, 3.0]))
        scaler.step(opt, frozen=frozenset())
        scaler.update()
        assert not torch.equal(w.detach(), torch.ones(3))
        moved = w.detach().clone()
        w.grad = torch.tensor([float("inf"), 0.0, 0.0])
        scaler.step(opt)  # an overflow: the step is skipped
        assert torch.equal(w.detach(), moved)


def test_registry_refuses_duplicates_and_lists_valid_names():
    with pytest.raises(ValueError, match="already registered"):

        @register
        class Again(Optimizer):
            name = "adam"

    with pytest.raises(KeyError, match="valid optimizers: adam, adamw, rmsprop, sgd"):
        get_optimizer("adamax")


def test_keys_of_the_chosen_optimizer_only_in_its_dump():
    config = config_from_dict({"optim": {"name": "adamw", "weight_decay": 0.01}})
    optim = config.to_dict()["optim"]
    assert optim["name"] == "adamw" and optim["betas"] == [0.9, 0.999]
    assert not {"momentum", "nesterov", "dampening", "alpha", "centered"} & set(optim)
    assert config_from_dict(config.to_dict()) == config  # config.yaml loads again
    sgd = config_from_dict({}).to_dict()["optim"]
    assert not {"betas", "eps", "amsgrad", "alpha", "centered"} & set(sgd)


@pytest.mark.parametrize(
    ("optim", "message"),
    [
        (
            {"betas": [0.9, 0.99]},
            r"optim\.betas: not a key of optim\.name=sgd \(only of adam, adamw\); "
            r"sgd takes lr, momentum, dampening, nesterov, weight_decay$",
        ),
        ({"name": "adam", "nesterov": True}, r"optim\.nesterov: not a key of optim\.name=adam"),
        ({"name": "adamw", "momentum": 0.9}, r"optim\.momentum: .* \(only of rmsprop, sgd\)"),
        ({"name": "rmsprop", "amsgrad": True}, r"optim\.amsgrad: not a key of optim\.name="),
        ({"name": "adamax"}, r"optim\.name: must be one of adam, adamw, rmsprop, sgd"),
        ({"name": "adam", "betas": [0.9, 1.0]}, r"optim\.betas\[1\]: .*less than 1"),
        ({"name": "adam", "betas": [-0.1, 0.9]}, r"optim\.betas\[0\]: .*greater than or equal"),
        ({"name": "adam", "betas": [0.9]}, r"optim\.betas: .*at least 2 items"),
        ({"name": "adam", "betas": [True, 0.9]}, r"optim\.betas\[0\]: expected a number"),
        ({"name": "adam", "eps": 0}, r"optim\.eps: .*greater than 0"),
        ({"name": "rmsprop", "eps": -1e-8}, r"optim\.eps: .*greater than 0"),
        ({"name": "rmsprop", "alpha": 1}, r"optim\.alpha: .*less than 1"),
    ],
)
def test_bad_optimizer_configs_end_in_one_line(optim, message):
    with pytest.raises(ConfigError, match=message) as info:
        config_from_dict({"optim": optim}, source="c.yaml")
    assert str(info.value).startswith("c.yaml: optim.")
    assert "\n" not in str(info.value)


def test_switching_optimizer_on_a_config_that_writes_out_sgd_defaults():
    """configs/baseline.yaml writes momentum: 0.0 and weight_decay: 0.0: --set
    optim.name=adam (or a sweep grid over optim.name) must still work."""
    from gradlab.config import load_config

    root = Path(__file__).parents[2]
    config = load_config(root / "configs/baseline.yaml", ["optim.name=adam"])
    assert config.optim.name == "adam"
    with pytest.raises(ConfigError, match="optim.momentum: not a key of optim.name=adam"):
        load_config(root / "configs/baseline.yaml", ["optim.name=adam", "optim.momentum=0.9"])


def test_the_optimizer_is_part_of_the_experiment():
    cpu = {"device": "cpu", "amp": "off", "grad_scaler": False, "engine": "analytic"}

    def key(**optim):
        return config_from_dict({"optim": optim}).experiment_hash(cpu)

    keys = {
        key(),
        key(name="adam"),
        key(name="adamw"),
        key(name="adam", betas=[0.9, 0.99]),
        key(name="adam", amsgrad=True),
        key(name="rmsprop"),
        key(name="rmsprop", centered=True),
    }
    assert len(keys) == 7
    assert key() == key(name="sgd")
    # an SGD run written before optim.name existed is the same experiment as one now
    from gradlab.identity import experiment_key

    old = config_from_dict({}).to_dict()
    del old["optim"]["name"]
    assert experiment_key(old, cpu) == key()


def test_constructing_and_stepping_never_imports_dynamo():
    code = (
        "import sys, torch\n"
        "from gradlab.config import OptimConfig\n"
        "from gradlab.optimizers import make_optimizer, optimizer_names\n"
        "for name in optimizer_names():\n"
        "    w = torch.ones(3)\n"
        "    w.grad = torch.ones(3)\n"
        "    make_optimizer({'w': w}, OptimConfig(name=name, weight_decay=0.1)).step()\n"
        "assert 'torch._dynamo' not in sys.modules, 'torch._dynamo was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_adam_trains_end_to_end_after_the_edits(tmp_path, tiny_config):
    """A tiny run with Adam and clipping equals a plain autograd loop that clips, then
    calls torch.optim.Adam: the edits act on the gradient Adam receives."""
    import csv

    from conftest import TEST_DEVICE

    from gradlab.config import load_config
    from gradlab.data import batch_order, load_dataset
    from gradlab.environment import seed_everything
    from gradlab.model import TwoLayerNet
    from gradlab.train import train

    def losses(run):
        with open(run.path / "steps.csv", newline="") as f:
            return [float(row["loss"]) for row in csv.DictReader(f)]

    clip = [{"type": "clip_norm", "max_norm": 0.5}]
    config = tiny_config(optim={"name": "adam", "lr": 0.01, "weight_decay": 0.001}, edit=clip)
    run = train(config, tmp_path)
    assert run.summary["status"] == "completed"
    assert load_config(run.path / "config.yaml") == config
    ours = losses(run)

    seed_everything(config.seed)
    device = torch.device(TEST_DEVICE)
    data = load_dataset(config.data, device)
    model = TwoLayerNet(config.model).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=0.001)
    order = torch.Generator().manual_seed(config.seed)
    expected = []
    for idx in batch_order(4000, 50, order, device):
        loss = torch.nn.functional.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
        expected.append(loss.item())
        if len(expected) == 12:
            break
    rel = 1e-5 if TEST_DEVICE == "cpu" else 1e-3
    assert ours == pytest.approx(expected, rel=rel)
    assert ours[-1] < ours[0]

    sgd = train(tiny_config(edit=clip), tmp_path)
    assert losses(sgd)[0] == ours[0] and losses(sgd)[1:] != ours[1:]
    hashes = [json.loads((r.path / "meta.json").read_text())["experiment_hash"] for r in (run, sgd)]
    assert hashes[0] != hashes[1]


@pytest.mark.parametrize("name", ["adamw", "rmsprop"])
def test_adaptive_optimizers_run_with_a_grad_scaler(tmp_path, tiny_config, name):
    from gradlab.train import train

    config = tiny_config(
        optim={"name": name, "lr": 0.001, "max_steps": 4}, train={"amp": "fp16", "log": "loss"}
    )
    run = train(config, tmp_path)
    assert run.summary["status"] == "completed" and run.summary["steps"] == 4
