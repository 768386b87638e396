"""The edit machinery around the strategies: stat columns, schedules, the registry, per-edit
seeds, every strategy in a real run, freezing, AMP, labels (the strategies themselves are
checked against references in test_strategies.py)."""

import pytest
import torch

from gradlab.config import config_from_dict
from gradlab.editing import EditPipeline, get_strategy, register, strategies
from gradlab.editing.base import Edit
from gradlab.editing.pipeline import edit_seed
from gradlab.schema import PARAMETER_NAMES

SHAPES = {"fc1.weight": (16, 784), "fc1.bias": (16,), "fc2.weight": (10, 16), "fc2.bias": (10,)}


def make_grads(scale: float = 1.0, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=g) * scale for name, shape in SHAPES.items()}


def pipeline(*edits: dict, seed: int = 0) -> EditPipeline:
    config = config_from_dict({"edit": list(edits)})
    return EditPipeline(config.edit, list(PARAMETER_NAMES), seed, torch.device("cpu"))


def test_columns_are_named_by_position_and_type():
    pipe = pipeline({"type": "clip_norm"}, {"type": "clip_norm", "max_norm": 2.0})
    assert pipe.columns == [
        "edit0.clip_norm.norm",
        "edit0.clip_norm.scale",
        "edit0.clip_norm.changed",
        "edit1.clip_norm.norm",
        "edit1.clip_norm.scale",
        "edit1.clip_norm.changed",
    ]


def test_schedule_switches_edits_on_and_off():
    pipe = pipeline(
        {"type": "clip_norm", "max_norm": 1e-3, "start_step": 3, "end_step": 9, "every": 2}
    )
    active = []
    for step in range(1, 12):
        grads = make_grads()
        norm, scale, changed = pipe.apply(grads, make_grads(seed=9), step)
        active.append(step if changed.item() else None)
        if not changed.item():
            assert torch.isnan(norm) and torch.isnan(scale)
            assert torch.equal(grads["fc1.weight"], make_grads()["fc1.weight"])
    assert [s for s in active if s] == [3, 5, 7]


def test_registry_rejects_duplicates_and_lists_names():
    assert get_strategy("clip_norm").name == "clip_norm"
    with pytest.raises(KeyError, match="valid types: clip_norm"):
        get_strategy("nope")

    class Again(Edit):
        name = "clip_norm"

    with pytest.raises(ValueError, match="already registered"):
        register(Again)


@pytest.mark.parametrize("name", list(strategies()))
def test_every_strategy_is_documented(name):
    cls = strategies()[name]
    assert cls.family and cls.summary and cls.__doc__
    for field, info in cls.Params.model_fields.items():
        assert info.description, f"{name}.{field} has no docstring"
    assert cls.stats is not None


def test_edit_seeds_differ_by_position_and_run_seed():
    seeds = {edit_seed(s, p) for s in range(3) for p in range(3)}
    assert len(seeds) == 9
    assert edit_seed(1, 2) == edit_seed(1, 2)


@pytest.mark.parametrize("name", list(strategies()))
def test_every_strategy_trains_and_logs_its_columns(tmp_path, tiny_config, name):
    from gradlab.train import train

    result = train(tiny_config(edit=[{"type": name}], optim={"max_steps": 3}), tmp_path)
    assert result.summary["status"] == "completed"
    header = (result.path / "steps.csv").read_text().splitlines()[0].split(",")
    stats = [c for c in header if c.startswith(f"edit0.{name}.")]
    assert stats == [f"edit0.{name}.{s}" for s in (*strategies()[name].stats, "changed")]


def test_freeze_keeps_parameters_bit_identical_under_momentum_and_weight_decay(
    tmp_path, tiny_config
):
    from gradlab.environment import seed_everything
    from gradlab.model import TwoLayerNet
    from gradlab.train import train

    optim = {"momentum": 0.9, "weight_decay": 0.01, "max_steps": 10}
    config = tiny_config(optim=optim, edit=[{"type": "freeze", "params": ["fc1.*"]}])
    seed_everything(config.seed)
    initial = TwoLayerNet(config.model).state_dict()
    trained = {k: v.cpu() for k, v in train(config, tmp_path).model.state_dict().items()}
    assert torch.equal(trained["fc1.weight"], initial["fc1.weight"])
    assert torch.equal(trained["fc1.bias"], initial["fc1.bias"])
    assert not torch.equal(trained["fc2.weight"], initial["fc2.weight"])

    # a zero gradient alone is not enough: weight decay still shrinks the weights
    zeroed = tiny_config(
        optim=optim, edit=[{"type": "replace", "with": "zero", "params": ["fc1.*"]}]
    )
    moved = {k: v.cpu() for k, v in train(zeroed, tmp_path).model.state_dict().items()}
    assert not torch.equal(moved["fc1.weight"], initial["fc1.weight"])
    torch.testing.assert_close(
        moved["fc1.weight"], initial["fc1.weight"] * (1 - 0.1 * 0.01) ** 10, rtol=0.05, atol=0
    )


def test_freeze_window_lets_momentum_resume(tmp_path, tiny_config):
    from gradlab.train import train

    config = tiny_config(
        optim={"momentum": 0.9, "max_steps": 8},
        edit=[{"type": "freeze", "params": ["fc2.*"], "start_step": 3, "end_step": 6}],
    )
    rows = (train(config, tmp_path).path / "steps.csv").read_text().splitlines()[1:]
    changed = [row.split(",")[-2] for row in rows]
    assert changed == ["0", "0", "1", "1", "1", "0", "0", "0"]


def test_edits_see_unscaled_gradients_under_amp(tmp_path, tiny_config):
    """Replacing the gradient by N(0, 0.1^2) gives a norm of about 0.1 * sqrt(#entries) only
    if the edit runs after unscale_ (before it, the scaler would divide it by 65536)."""
    import csv
    import math

    from gradlab.train import train

    config = tiny_config(
        train={"amp": "fp16"},
        optim={"max_steps": 5},
        edit=[{"type": "replace", "with": "gaussian", "sigma": 0.1}],
    )
    result = train(config, tmp_path)
    entries = 16 * 784 + 16 + 10 * 16 + 10
    with open(result.path / "steps.csv") as f:
        for row in csv.DictReader(f):
            assert float(row["grad_norm_after"]) == pytest.approx(
                0.1 * math.sqrt(entries), rel=0.03
            )
            assert row["skipped"] == "0"


def test_pipeline_label_is_short_and_complete():
    pipe = pipeline(
        {"type": "clip_norm"},
        {"type": "mask", "p": 0.3, "params": "fc2.bias", "start_step": 10, "end_step": 20},
        {"type": "freeze", "params": ["fc1.*"], "every": 3},
        {"type": "clip_norm", "max_norm": 2, "per_param": True},
    )
    assert pipe.label() == (
        "clip_norm(1.0) > mask(0.3 @fc2.bias [10:20]) > freeze(@fc1.* [0::3])"
        " > clip_norm(2.0, per_param=True)"
    )
    assert pipeline().label() == "none"
