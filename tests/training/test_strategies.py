"""Every registered strategy against a reference computation, plus properties that every
strategy must have. Both are generated from the registry: a new strategy without a
reference case fails ``test_every_strategy_has_a_reference``."""

from __future__ import annotations

import math

import pytest
import torch

from gradlab.config import config_from_dict
from gradlab.editing import EditPipeline, strategies
from gradlab.editing.pipeline import edit_seed
from gradlab.schema import PARAMETER_NAMES

SHAPES = {"fc1.weight": (16, 784), "fc1.bias": (16,), "fc2.weight": (10, 16), "fc2.bias": (10,)}
STEP = 3


def hand_built(seed: int, scale: float = 0.01) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(s, generator=g) * scale for n, s in SHAPES.items()}


def make_pipeline(*edits: dict, seed: int = 0) -> EditPipeline:
    config = config_from_dict({"edit": list(edits)})
    pipe = EditPipeline(config.edit, list(PARAMETER_NAMES), seed, torch.device("cpu"))
    pipe.setup(hand_built(99, scale=1.0))
    return pipe


def reference_rng() -> torch.Generator:
    """The generator an edit at position 0 of a seed-0 run draws from."""
    return torch.Generator().manual_seed(edit_seed(0, 0))


def randn_like_all(grads, rng):
    return {n: torch.randn(g.shape, generator=rng) for n, g in grads.items()}


def plus_noise(grads, rng, std):
    """``g + std(g) * z`` with ``z`` drawn tensor by tensor, in parameter order."""
    return {n: g + std(g) * torch.randn(g.shape, generator=rng) for n, g in grads.items()}


def torch_clip_norm(grads, max_norm, norm_type=2.0, per_param=False):
    params = {n: torch.nn.Parameter(torch.zeros_like(g)) for n, g in grads.items()}
    for n, p in params.items():
        p.grad = grads[n].clone()
    if per_param:
        for p in params.values():
            torch.nn.utils.clip_grad_norm_([p], max_norm, norm_type)
    else:
        torch.nn.utils.clip_grad_norm_(list(params.values()), max_norm, norm_type)
    return {n: p.grad for n, p in params.items()}


def torch_clip_value(grads, value):
    params = {n: torch.nn.Parameter(torch.zeros_like(g)) for n, g in grads.items()}
    for n, p in params.items():
        p.grad = grads[n].clone()
    torch.nn.utils.clip_grad_value_(list(params.values()), value)
    return {n: p.grad for n, p in params.items()}


def agc_by_hand(grads, weights, lam, eps):
    out = {}
    for n, g in grads.items():
        g, w = g.clone(), weights[n]
        units = [(g, w)] if g.ndim == 1 else list(zip(g, w, strict=True))  # rows are views
        for g_i, w_i in units:
            w_norm = max(w_i.norm().item(), eps)
            g_norm = g_i.norm().item()
            if g_norm / w_norm > lam:
                g_i.mul_(lam * w_norm / g_norm)
        out[n] = g
    return out


def topk_by_sorting(grads, k):
    out = {}
    for n, g in grads.items():
        count = max(1, math.ceil(k * g.numel()))
        threshold = g.abs().flatten().sort(descending=True).values[count - 1]
        out[n] = torch.where(g.abs() >= threshold, g, torch.zeros_like(g))
    return out


# name -> list of (edit params, expected gradients from (grads, weights, rng))
REFERENCES = {
    "clip_norm": [
        ({"max_norm": 0.05}, lambda g, w, r: torch_clip_norm(g, 0.05)),
        ({"max_norm": 1e6}, lambda g, w, r: g),
        ({"max_norm": 0.02, "norm": "inf"}, lambda g, w, r: torch_clip_norm(g, 0.02, math.inf)),
        (
            {"max_norm": 0.02, "per_param": True},
            lambda g, w, r: torch_clip_norm(g, 0.02, per_param=True),
        ),
    ],
    "clip_value": [({"value": 0.005}, lambda g, w, r: torch_clip_value(g, 0.005))],
    "agc": [
        ({"lam": 0.01, "eps": 1e-3}, lambda g, w, r: agc_by_hand(g, w, 0.01, 1e-3)),
        ({"lam": 0.5, "eps": 10.0}, lambda g, w, r: agc_by_hand(g, w, 0.5, 10.0)),
    ],
    "mask": [
        (
            {"p": 0.3},
            lambda g, w, r: {n: t * (torch.rand(t.shape, generator=r) < 0.3) for n, t in g.items()},
        ),
        (
            {"p": 0.3, "rescale": True},
            lambda g, w, r: {
                n: t * (torch.rand(t.shape, generator=r) < 0.3) / 0.3 for n, t in g.items()
            },
        ),
        (
            {"p": 0.5, "fixed": True},
            lambda g, w, r: {n: t * (torch.rand(t.shape, generator=r) < 0.5) for n, t in g.items()},
        ),
    ],
    "topk": [
        ({"k": 0.1}, lambda g, w, r: topk_by_sorting(g, 0.1)),
        ({"k": 1e-6}, lambda g, w, r: topk_by_sorting(g, 1e-6)),
    ],
    "freeze": [({}, lambda g, w, r: {n: torch.zeros_like(t) for n, t in g.items()})],
    "noise": [
        (
            {"sigma": 0.1},
            lambda g, w, r: plus_noise(g, r, lambda t: 0.1),
        ),
        (
            {"sigma": 0.5, "relative": True},
            lambda g, w, r: plus_noise(g, r, lambda t: 0.5 * t.norm() / math.sqrt(t.numel())),
        ),
    ],
    "annealed_noise": [
        (
            {"eta": 0.3, "gamma": 0.55},
            lambda g, w, r: plus_noise(g, r, lambda t: math.sqrt(0.3 / (1 + STEP - 1) ** 0.55)),
        )
    ],
    "replace": [
        (
            {"with": "gaussian", "sigma": 0.2},
            lambda g, w, r: {n: 0.2 * z for n, z in randn_like_all(g, r).items()},
        ),
        (
            {"with": "sign", "scale": 0.01},
            lambda g, w, r: {n: 0.01 * torch.sign(t) for n, t in g.items()},
        ),
        (
            {"with": "normalize"},
            lambda g, w, r: {
                n: t / torch.cat([x.flatten() for x in g.values()]).norm() for n, t in g.items()
            },
        ),
        (
            {"with": "normalize", "per_param": True},
            lambda g, w, r: {n: t / t.norm() for n, t in g.items()},
        ),
        (
            {"with": "centralize"},
            lambda g, w, r: {
                n: t - t.mean(dim=1, keepdim=True) if t.ndim == 2 else t for n, t in g.items()
            },
        ),
        ({"with": "zero"}, lambda g, w, r: {n: torch.zeros_like(t) for n, t in g.items()}),
    ],
}
CASES = [(name, params, fn) for name, cases in REFERENCES.items() for params, fn in cases]


@pytest.mark.parametrize("name", list(strategies()))
def test_every_strategy_has_a_reference(name):
    assert REFERENCES.get(name), f"strategy {name!r} has no reference case in REFERENCES"


@pytest.mark.parametrize(
    ("name", "params", "expected"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_strategy_matches_its_reference(name, params, expected):
    grads = hand_built(1)
    weights = hand_built(99, scale=1.0)
    want = expected({n: g.clone() for n, g in grads.items()}, weights, reference_rng())
    pipe = make_pipeline({"type": name, **params})
    stats = pipe.apply(grads, weights, STEP)
    for n in SHAPES:
        torch.testing.assert_close(
            grads[n], want[n], rtol=1e-5, atol=1e-7, msg=f"{name} {params} {n}"
        )
    assert len(stats) == len(pipe.columns)
    changed = stats[-1].item()
    moved = any(not torch.equal(grads[n], g) for n, g in hand_built(1).items())
    assert changed == float(moved) or name in ("mask",) and params.get("rescale")


@pytest.mark.parametrize("name", list(strategies()))
def test_only_targeted_parameters_change(name):
    grads = hand_built(1)
    pipe = make_pipeline({"type": name, "params": ["fc2.bias"]})
    pipe.apply(grads, hand_built(99, scale=1.0), STEP)
    for n, original in hand_built(1).items():
        if n != "fc2.bias":
            assert torch.equal(grads[n], original), f"{name} touched {n}"


@pytest.mark.parametrize("name", list(strategies()))
def test_schedule_off_leaves_gradients_alone(name):
    pipe = make_pipeline({"type": name, "start_step": 2, "end_step": 6, "every": 2})
    for step in range(1, 9):
        grads = hand_built(step)
        stats = pipe.apply(grads, hand_built(99, scale=1.0), step)
        if step in (2, 4):
            continue
        assert all(torch.equal(grads[n], g) for n, g in hand_built(step).items())
        assert stats[-1].item() == 0.0 and all(torch.isnan(s) for s in stats[:-1])
    assert pipe.edits[0].active(4) and not pipe.edits[0].active(6)


@pytest.mark.parametrize("name", list(strategies()))
def test_reruns_are_identical_and_seeds_matter(name):
    def run(seed: int) -> list[torch.Tensor]:
        pipe = make_pipeline({"type": name}, seed=seed)
        out = []
        for step in (1, 2, 3):
            grads = hand_built(step)
            stats = pipe.apply(grads, hand_built(99, scale=1.0), step)
            out += [*grads.values(), *stats]
        return out

    first, second = run(0), run(0)
    assert all(
        torch.equal(a, b) or (a.isnan().all() and b.isnan().all())
        for a, b in zip(first, second, strict=True)
    )


def test_random_strategies_have_the_right_statistics():
    big = {"fc1.weight": torch.zeros(16, 784)}
    pipe = make_pipeline({"type": "mask", "p": 0.3, "params": "fc1.weight"})
    ones = {"fc1.weight": torch.ones(16, 784)}
    (kept,) = pipe.apply(ones, big, 1)[:1]
    assert kept.item() == pytest.approx(0.3, abs=0.02)
    assert ones["fc1.weight"].mean().item() == pytest.approx(kept.item())
    pipe = make_pipeline({"type": "noise", "sigma": 0.2, "params": "fc1.weight"})
    zeros = {"fc1.weight": torch.zeros(16, 784)}
    pipe.apply(zeros, big, 1)
    assert zeros["fc1.weight"].std().item() == pytest.approx(0.2, rel=0.05)


def test_fixed_mask_is_the_same_every_step_and_fresh_mask_is_not():
    def zero_patterns(fixed: bool) -> list[torch.Tensor]:
        pipe = make_pipeline({"type": "mask", "p": 0.5, "fixed": fixed})
        patterns = []
        for step in (1, 2):
            grads = {n: torch.ones(s) for n, s in SHAPES.items()}
            pipe.apply(grads, hand_built(99), step)
            patterns.append(grads["fc1.weight"] == 0)
        return patterns

    a, b = zero_patterns(fixed=True)
    assert torch.equal(a, b)
    a, b = zero_patterns(fixed=False)
    assert not torch.equal(a, b)


def test_annealed_noise_variance_decays():
    pipe = make_pipeline({"type": "annealed_noise", "eta": 1.0, "gamma": 0.55})
    stds = [pipe.apply(hand_built(0), hand_built(99), step)[0].item() for step in (1, 2, 11)]
    assert stds == pytest.approx([1.0, math.sqrt(1 / 2**0.55), math.sqrt(1 / 11**0.55)])


def test_order_of_composition_matters():
    clip_then_noise = make_pipeline(
        {"type": "clip_norm", "max_norm": 0.01}, {"type": "noise", "sigma": 0.01}
    )
    noise_then_clip = make_pipeline(
        {"type": "noise", "sigma": 0.01}, {"type": "clip_norm", "max_norm": 0.01}
    )
    a, b = hand_built(1), hand_built(1)
    clip_then_noise.apply(a, hand_built(99), 1)
    noise_then_clip.apply(b, hand_built(99), 1)
    norm = lambda g: torch.cat([t.flatten() for t in g.values()]).norm().item()  # noqa: E731
    assert norm(b) == pytest.approx(0.01, rel=1e-4)  # clipping last bounds the result
    assert norm(a) > 0.5  # noise of std 0.01 over 12,730 entries has norm ~1.1


def test_edits_at_other_positions_draw_other_numbers():
    pipe = make_pipeline(
        {"type": "noise", "sigma": 1.0, "params": "fc2.bias"},
        {"type": "noise", "sigma": 1.0, "params": "fc1.bias"},
    )
    grads = {n: torch.zeros(s) for n, s in SHAPES.items()}
    pipe.apply(grads, hand_built(99), 1)
    assert not torch.equal(grads["fc2.bias"], grads["fc1.bias"][:10])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"type": "mask", "p": 0}, r"edit\[0\]\.p: Input should be greater than 0"),
        ({"type": "mask", "p": 1.5}, r"edit\[0\]\.p: Input should be less than or equal to 1"),
        (
            {"type": "noise", "sigma": -0.1},
            r"edit\[0\]\.sigma: Input should be greater than or equal to 0",
        ),
        ({"type": "topk", "k": 0}, r"edit\[0\]\.k: Input should be greater than 0"),
        ({"type": "topk", "k": 2}, r"edit\[0\]\.k: Input should be less than or equal to 1"),
        (
            {"type": "replace", "with": "sign", "sigma": 0.1},
            r"sigma applies only to `with: gaussian`",
        ),
        (
            {"type": "replace", "with": "swap"},
            r"edit\[0\]\.with: Input should be 'gaussian', 'sign'",
        ),
        ({"type": "clip_norm", "norm": "l1"}, r"edit\[0\]\.norm: Input should be 'l2' or 'inf'"),
        ({"type": "agc", "lam": 0}, r"edit\[0\]\.lam: Input should be greater than 0"),
        ({"type": "freeze", "p": 0.5}, r"edit\[0\]\.p: unknown key; valid keys here: type, params"),
    ],
)
def test_invalid_edit_values(edit, message):
    from gradlab.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        config_from_dict({"edit": [edit]})


def test_replace_round_trips_with_its_alias():
    config = config_from_dict({"edit": [{"type": "replace", "with": "sign"}]})
    entry = config.to_dict()["edit"][0]
    assert entry["with"] == "sign" and entry["scale"] == 1.0 and entry["sigma"] is None
    assert config_from_dict(config.to_dict()) == config


def numeric_parameters():
    from gradlab.schema import is_number_field

    for name, cls in strategies().items():
        for key, field in cls.Params.model_fields.items():
            if key not in ("start_step", "end_step", "every") and is_number_field(field.annotation):
                yield name, field.alias or key


@pytest.mark.parametrize(("strategy", "key"), list(numeric_parameters()))
@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "expected a number, not true/false"),
        (float("inf"), "finite number"),
        (float("nan"), "finite number"),
        ("1e39", "must be below 3.4e38|less than or equal to"),
    ],
)
def test_every_numeric_parameter_is_a_finite_float32_number(strategy, key, value, message):
    from gradlab.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        config_from_dict({"edit": [{"type": strategy, key: value}]})
