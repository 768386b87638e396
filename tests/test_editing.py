"""Edit strategies against reference computations, and the pipeline machinery."""

import pytest
import torch

from gradlab.config import PARAMETER_NAMES, config_from_dict
from gradlab.editing import EditPipeline, get_strategy, register, strategies
from gradlab.editing.base import Edit
from gradlab.editing.pipeline import edit_seed

SHAPES = {"fc1.weight": (16, 784), "fc1.bias": (16,), "fc2.weight": (10, 16), "fc2.bias": (10,)}


def make_grads(scale: float = 1.0, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=g) * scale for name, shape in SHAPES.items()}


def pipeline(*edits: dict, seed: int = 0) -> EditPipeline:
    config = config_from_dict({"edit": list(edits)})
    return EditPipeline(config.edit, list(PARAMETER_NAMES), seed, torch.device("cpu"))


@pytest.mark.parametrize("max_norm", [0.01, 1.0, 1e6])
@pytest.mark.parametrize("targets", [["*"], ["fc2.*"]])
def test_clip_norm_equals_torch_clip_grad_norm(max_norm, targets):
    grads = make_grads()
    reference = {n: torch.nn.Parameter(torch.zeros(s)) for n, s in SHAPES.items()}
    for name, p in reference.items():
        p.grad = grads[name].clone()
    chosen = [p for n, p in reference.items() if n.startswith("fc2") or targets == ["*"]]
    total = torch.nn.utils.clip_grad_norm_(chosen, max_norm)

    pipe = pipeline({"type": "clip_norm", "max_norm": max_norm, "params": targets})
    norm, scale, changed = pipe.apply(grads, make_grads(seed=9), step=1)
    for name in SHAPES:
        torch.testing.assert_close(grads[name], reference[name].grad, rtol=1e-6, atol=0)
    torch.testing.assert_close(norm, total)
    assert changed.item() == float(total.item() > max_norm)
    assert scale.item() == pytest.approx(min(1.0, max_norm / (total.item() + 1e-6)), rel=1e-6)


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
