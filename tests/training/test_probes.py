"""Probes (``diagnostics.probes``) against independent references.

- each example's squared gradient norm per tensor against ``torch.func`` per-example
  gradients, both engines, float64 (and fp16 autocast with a GradScaler on the CPU);
- the noise scale and diversity against the formulas written out on those gradients;
- their expected values against McCandlish et al.'s two-batch-size estimator (Appendix A)
  and the population's own tr(Sigma) and |G|^2 on a fixed model;
- a probed run against the same run without probes: every gradient, every other column
  and the experiment's identity the same;
- a user's probe: trained through train and a sweep, its breaches and its bad specs.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny
from typer.testing import CliRunner

from gradlab.cli import app
from gradlab.config import ModelConfig, config_from_dict, load_config
from gradlab.engines import AnalyticEngine, AutogradEngine
from gradlab.errors import ConfigError
from gradlab.identity import run_experiment_key
from gradlab.model import MLP
from gradlab.probes import Diversity, NoiseScale, ProbeSet, ProbeView, finished, parse_probe
from gradlab.train import train

CPU = torch.device("cpu")


def per_example_gradients(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    """Each example's gradient of its own cross-entropy: ``{name: (B, *shape)}``."""
    from torch.func import functional_call, grad, vmap

    params = {name: p.detach() for name, p in model.named_parameters()}

    def loss(p, xi, yi):
        return F.cross_entropy(functional_call(model, p, (xi[None],)), yi[None])

    return vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)


def make_engine(kind: str, model, scaler=None, amp=None):
    return AnalyticEngine(model) if kind == "analytic" else AutogradEngine(model, scaler, amp)


def case(activation="relu", hidden=(12,), output="none", batch=9, seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(hidden=list(hidden), activation=activation, output_activation=output)
    model = MLP(cfg).double()
    x = torch.rand(batch, 784, dtype=torch.float64)
    y = torch.randint(0, 10, (batch,))
    return model, x, y


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- 1. per-example


@pytest.mark.parametrize("engine", ["analytic", "autograd"])
@pytest.mark.parametrize(
    "activation,hidden,output",
    [("relu", (12,), "none"), ("tanh", (10, 7), "none"), ("sigmoid", (6, 5, 4), "relu")],
)
def test_per_example_norms_match_torch_func(engine, activation, hidden, output):
    model, x, y = case(activation, hidden, output)
    reference = per_example_gradients(model, x, y)
    want = torch.stack([g.flatten(1).square().sum(1) for g in reference.values()], dim=1)
    eng = make_engine(engine, model)
    _, _, squared = eng.measured_step(x, y)
    assert squared.shape == want.shape
    torch.testing.assert_close(squared, want, rtol=1e-10, atol=1e-14)
    # and the batch gradient is the mean of the examples' ones, bit for bit step()'s
    measured = {n: p.grad.clone() for n, p in model.named_parameters()}
    eng.step(x, y)
    for name, p in model.named_parameters():
        assert torch.equal(measured[name], p.grad), name
        torch.testing.assert_close(p.grad, reference[name].mean(0), rtol=1e-10, atol=1e-14)


def test_per_example_norms_under_fp16_autocast_and_grad_scaler():
    torch.manual_seed(3)
    model = MLP(ModelConfig(hidden=[32]))
    x, y = torch.rand(20, 784), torch.randint(0, 10, (20,))
    want = torch.stack(
        [g.flatten(1).square().sum(1) for g in per_example_gradients(model, x, y).values()], 1
    )
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    _, _, squared = AutogradEngine(model, scaler, torch.float16).measured_step(x, y)
    assert squared.dtype == torch.float32
    # unscaled by the loss scale; fp16 rounding of the layers' outputs and gradients
    torch.testing.assert_close(squared, want, rtol=2e-2, atol=1e-6)


# --------------------------------------------------------------------------- 2. estimators


def explicit(model, x, y):
    """From explicit per-example gradients: S, |G_B|^2 per layer group (all, fc1, fc2, ...)."""
    grads = per_example_gradients(model, x, y)
    names = list(grads)
    layers = list(dict.fromkeys(n.rpartition(".")[0] for n in names))
    groups = {
        "all": names,
        **{layer: [n for n in names if n.startswith(layer + ".")] for layer in layers},
    }
    out = {}
    for group, members in groups.items():
        flat = torch.cat([grads[n].flatten(1) for n in members], dim=1)  # (B, P)
        out[group] = (flat.square().sum(1).mean().item(), flat.mean(0).square().sum().item())
    return out, layers


def view_of(engine, model, x, y, step=1):
    _, _, squared = engine.measured_step(x, y)
    grads = {n: p.grad for n, p in model.named_parameters()}
    return ProbeView(
        step, 0.1, torch.zeros(()), len(x), grads, dict(model.named_parameters()), squared
    )


@pytest.mark.parametrize("engine", ["analytic", "autograd"])
@pytest.mark.parametrize("hidden", [(12,), (10, 7)])
def test_noise_scale_and_diversity_match_explicit_per_example_gradients(engine, hidden):
    model, x, y = case("tanh", hidden, batch=11, seed=len(hidden))
    sums, layers = explicit(model, x, y)
    b = len(x)
    names = [n for n, _ in model.named_parameters()]
    params = NoiseScale.Params(type="noise_scale", beta=0.0)  # this step's estimates alone
    noise = NoiseScale(params, names, CPU)
    diversity = Diversity(Diversity.Params(type="diversity"), names, CPU)
    view = view_of(make_engine(engine, model), model, x, y)
    got_noise = dict(zip(noise.stat_names(), finished(noise, view), strict=True))
    got_div = dict(zip(diversity.stat_names(), finished(diversity, view), strict=True))

    def b_simple(group):
        s, g2 = sums[group]
        trace = (s - g2) * b / (b - 1)
        grad_sq = (b * g2 - s) / (b - 1)
        return trace, grad_sq, trace / grad_sq

    trace, grad_sq, ratio = b_simple("all")
    assert got_noise["trace"] == pytest.approx(trace, rel=1e-6)
    assert got_noise["grad_sq"] == pytest.approx(grad_sq, rel=1e-6)
    assert got_noise["b_simple"] == pytest.approx(ratio, rel=1e-6)
    for layer in layers:
        assert got_noise[f"{layer}.b_simple"] == pytest.approx(b_simple(layer)[2], rel=1e-6)
    # Yin et al.: sum_b |g_b|^2 / |sum_b g_b|^2
    grads = per_example_gradients(model, x, y)
    flat = torch.cat([g.flatten(1) for g in grads.values()], dim=1)
    want = (flat.square().sum() / flat.sum(0).square().sum()).item()
    assert got_div["diversity"] == pytest.approx(want, rel=1e-6)
    for layer in layers:
        s, g2 = sums[layer]
        assert got_div[f"{layer}.diversity"] == pytest.approx(s / (b * g2), rel=1e-6)


def test_noise_scale_smooths_each_estimate_before_the_ratio():
    model, _, _ = case("relu", (8,))
    names = [n for n, _ in model.named_parameters()]
    beta = 0.7
    noise = NoiseScale(NoiseScale.Params(type="noise_scale", beta=beta), names, CPU)
    engine = AnalyticEngine(model)
    traces, grad_sqs = [], []
    for step in range(1, 6):
        torch.manual_seed(100 + step)
        x, y = torch.rand(7, 784, dtype=torch.float64), torch.randint(0, 10, (7,))
        sums, _ = explicit(model, x, y)
        s, g2 = sums["all"]
        traces.append((s - g2) * 7 / 6)
        grad_sqs.append((7 * g2 - s) / 6)
        got = finished(noise, view_of(engine, model, x, y, step))
    # bias-corrected exponential moving averages: weights (1-beta) beta^(t-k), normalized
    weights = [(1 - beta) * beta ** (4 - k) for k in range(5)]
    trace = sum(w * t for w, t in zip(weights, traces, strict=True)) / sum(weights)
    grad_sq = sum(w * g for w, g in zip(weights, grad_sqs, strict=True)) / sum(weights)
    assert got[1] == pytest.approx(trace, rel=1e-6)
    assert got[2] == pytest.approx(grad_sq, rel=1e-6)
    assert got[0] == pytest.approx(trace / grad_sq, rel=1e-6)


def test_noise_scale_is_not_estimated_from_fewer_than_two_examples_nor_from_infinities():
    model, x, y = case("relu", (8,), batch=6)
    names = [n for n, _ in model.named_parameters()]
    beta = 0.5
    noise = NoiseScale(NoiseScale.Params(type="noise_scale", beta=beta), names, CPU)
    again = NoiseScale(NoiseScale.Params(type="noise_scale", beta=beta), names, CPU)
    engine = AnalyticEngine(model)
    assert all(math.isnan(v) for v in finished(noise, view_of(engine, model, x[:1], y[:1])))
    view = view_of(engine, model, x, y)
    first = finished(noise, view)
    assert all(map(math.isfinite, first))
    assert first == finished(again, view)  # a batch of one left nothing behind
    skipped = view_of(engine, model, x, y)
    skipped.per_example = torch.full_like(skipped.per_example, math.inf)  # a skipped fp16 step
    assert all(math.isnan(v) for v in finished(noise, skipped))
    torch.manual_seed(9)
    x2, y2 = torch.rand(6, 784, dtype=torch.float64), torch.randint(0, 10, (6,))
    view2 = view_of(engine, model, x2, y2)
    assert finished(noise, view2) == finished(again, view2)  # the averages as they were
    empty = ProbeView(1, 0.1, torch.zeros(()), 0, view.grads, view.weights, torch.empty(0, 4))
    diversity = Diversity(Diversity.Params(type="diversity"), names, CPU)
    assert all(math.isnan(v) for v in finished(diversity, empty))


def test_expected_values_match_the_two_batch_size_estimator_of_mccandlish():
    """On a fixed model and a fixed population of 256 examples, batches drawn with
    replacement: the mean of the probe's estimates of tr(Sigma) and |G|^2 over many batches
    of 16 agrees with the estimator of McCandlish et al. (Appendix A) from batch gradients of
    sizes 4 and 64 alone, and both with the population's own values."""
    torch.manual_seed(0)
    model = MLP(ModelConfig(hidden=[16], activation="tanh")).double()
    population = torch.rand(256, 784, dtype=torch.float64)
    labels = torch.randint(0, 10, (256,))
    grads = per_example_gradients(model, population, labels)
    flat = torch.cat([g.flatten(1) for g in grads.values()], dim=1)  # (N, P)
    true_g = flat.mean(0)
    true_grad_sq = true_g.square().sum().item()
    true_trace = (flat - true_g).square().sum(1).mean().item()

    names = [n for n, _ in model.named_parameters()]
    noise = NoiseScale(NoiseScale.Params(type="noise_scale", beta=0.0), names, CPU)
    engine = AnalyticEngine(model)
    generator = torch.Generator().manual_seed(1)
    ours = []
    for step in range(1, 1501):
        idx = torch.randint(0, 256, (16,), generator=generator)
        est = finished(noise, view_of(engine, model, population[idx], labels[idx], step))
        ours.append((est[1], est[2]))
    ours_t = torch.tensor(ours, dtype=torch.float64)

    def batch_grad_sq(size: int) -> torch.Tensor:
        idx = torch.randint(0, 256, (1500, size), generator=generator)
        return flat[idx].mean(1).square().sum(1)  # |G_B|^2 of each batch

    small, big = batch_grad_sq(4), batch_grad_sq(64)
    b_small, b_big = 4, 64
    mc_grad_sq = (b_big * big - b_small * small) / (b_big - b_small)
    mc_trace = (small - big) / (1 / b_small - 1 / b_big)
    for column, mc, truth in ((0, mc_trace, true_trace), (1, mc_grad_sq, true_grad_sq)):
        mean, se = ours_t[:, column].mean().item(), ours_t[:, column].std().item() / 1500**0.5
        mc_mean, mc_se = mc.mean().item(), mc.std().item() / 1500**0.5
        assert abs(mean - mc_mean) < 4 * math.hypot(se, mc_se), (column, mean, mc_mean)
        assert abs(mean - truth) < 4 * se, (column, mean, truth)
        assert abs(mc_mean - truth) < 4 * mc_se, (column, mc_mean, truth)


# --------------------------------------------------------------------------- 3. changes nothing


def probed(**sections):
    raw = tiny(**sections)
    raw["train"]["device"] = "cpu"
    raw["train"]["log"] = "full"
    raw["diagnostics"] = {"every": 2, **raw.get("diagnostics", {})}
    return raw


@pytest.mark.parametrize(
    "setup",
    [
        {"engine": "analytic"},
        {"engine": "autograd"},
        {"engine": "autograd", "amp": "fp16"},
        {"engine": "analytic", "log": "loss"},
    ],
)
def test_probes_leave_every_gradient_and_the_identity_as_they_were(tmp_path, setup):
    raw = probed(train=setup, edit=[{"type": "clip_norm", "max_norm": 0.5}])
    plain = train(config_from_dict(raw), tmp_path / "plain")
    raw["diagnostics"]["probes"] = [
        "noise_scale", {"type": "diversity", "every": 3},
    ]  # fmt: skip
    with_probes = train(config_from_dict(raw), tmp_path / "probes")
    assert with_probes.summary["status"] == plain.summary["status"] == "completed"
    a, b = read_csv(plain.path / "steps.csv"), read_csv(with_probes.path / "steps.csv")
    probe_columns = [c for c in b[0] if c.startswith("probe.")]
    assert "probe.noise_scale.b_simple" in probe_columns
    assert "probe.diversity.fc1.diversity" in probe_columns
    for row_a, row_b in zip(a, b, strict=True):
        row_a.pop("elapsed_s"), row_b.pop("elapsed_s")
        assert row_a == {k: v for k, v in row_b.items() if k not in probe_columns}
        assert row_b["probe.diversity.diversity"] != "" or int(row_b["step"]) % 3 != 1
    assert [r["probe.diversity.diversity"] != "" for r in b] == [
        (int(r["step"]) - 1) % 3 == 0 for r in b
    ]
    if (plain.path / "grads.csv").exists():
        assert (plain.path / "grads.csv").read_text().replace("\r", "").splitlines()[0] == (
            (with_probes.path / "grads.csv").read_text().splitlines()[0]
        )
    for name in ("config.yaml",):
        assert "probes" in (with_probes.path / name).read_text()
    for model_a, model_b in zip(
        plain.model.parameters(), with_probes.model.parameters(), strict=True
    ):
        assert torch.equal(model_a, model_b)
    meta_a = json.loads((plain.path / "meta.json").read_text())
    meta_b = json.loads((with_probes.path / "meta.json").read_text())
    assert meta_a["experiment_hash"] == meta_b["experiment_hash"]
    import yaml

    key_a = run_experiment_key(yaml.safe_load((plain.path / "config.yaml").read_text()), meta_a)
    key_b = run_experiment_key(
        yaml.safe_load((with_probes.path / "config.yaml").read_text()), meta_b
    )
    assert key_a == key_b


def test_b_simple_grows_as_the_loss_falls(tmp_path):
    """The study's claim in small: over a run the noise scale rises as the loss falls."""
    raw = probed(optim={"lr": 0.1, "max_steps": 240, "batch_size": 64})
    raw["diagnostics"]["probes"] = [{"type": "noise_scale", "beta": 0.95}]
    result = train(config_from_dict(raw), tmp_path)
    rows = read_csv(result.path / "steps.csv")
    early = [float(r["probe.noise_scale.b_simple"]) for r in rows[20:60]]
    late = [float(r["probe.noise_scale.b_simple"]) for r in rows[-40:]]
    loss_early = sum(float(r["loss"]) for r in rows[20:60]) / 40
    loss_late = sum(float(r["loss"]) for r in rows[-40:]) / 40
    assert loss_late < loss_early
    assert sum(late) / 40 > 1.5 * sum(early) / 40


# --------------------------------------------------------------------------- 4. config


@pytest.mark.parametrize(
    "probes,message",
    [
        ("noise_scale", "must be a list of probes"),
        ([{"type": "nope"}], "unknown probe 'nope'; probes: noise_scale, diversity"),
        ([{"at": "before"}], "diagnostics.probes[0].type: required"),
        ([{"type": "noise_scale", "at": "after"}], "describe the gradient before the edits"),
        ([{"type": "noise_scale", "beta": 1}], "diagnostics.probes[0].beta"),
        ([{"type": "noise_scale", "bogus": 1}], "diagnostics.probes[0].bogus"),
        ([{"type": "diversity", "every": 0}], "diagnostics.probes[0].every"),
        (["diversity", {"type": "diversity", "every": 2}], "already diagnostics.probes[0]"),
        ([3], "expected a probe's name"),
    ],
)
def test_bad_probes_are_one_line(probes, message):
    with pytest.raises(ConfigError) as info:
        config_from_dict(probed(diagnostics={"probes": probes}))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_per_example_probes_are_refused_with_privacy():
    raw = probed(diagnostics={"probes": ["noise_scale"]})
    raw["privacy"] = {"noise_multiplier": 1.0}
    with pytest.raises(ConfigError, match="DP-SGD keeps private"):
        config_from_dict(raw)


def test_a_probe_is_outside_the_experiment_even_in_a_resolved_config():
    params = parse_probe(0, "noise_scale")
    assert params.at == "before" and params.every == 1
    raw = probed(diagnostics={"probes": ["noise_scale"]})
    config = config_from_dict(raw)
    again = config_from_dict(config.to_dict())  # a run folder's config.yaml reads back
    assert again.diagnostics.probes == config.diagnostics.probes
    resolved = {"device": "cpu", "amp": "off", "grad_scaler": False, "engine": "analytic"}
    del raw["diagnostics"]["probes"]
    assert config.experiment_hash(resolved) == config_from_dict(raw).experiment_hash(resolved)


# --------------------------------------------------------------------------- 5. your own probe

SNR = '''
import torch
import gradlab


class GradSNR(gradlab.Probe):
    """Signal-to-noise of the batch gradient: |G_B|^2 over the variance of the mean."""

    per_example = True
    stats = ("snr",)

    def measure(self, view):
        b = view.batch_size
        g2 = view.squared_norms().sum()
        s = view.per_example.mean(0).sum()
        return {"snr": g2 / ((s - g2) / max(b - 1, 1))}


class AfterNorm(gradlab.Probe):
    """The gradient norm the optimizer applies."""

    stats = ("norm",)

    def measure(self, view):
        return {"norm": torch.stack(torch._foreach_norm(list(view.grads.values()))).norm()}
'''

BROKEN = {
    "in_place": "list(view.grads.values())[0].mul_(1.0)\n        return {'x': torch.zeros(())}",
    "data": "list(view.grads.values())[0].data.add_(1.0)\n        return {'x': torch.zeros(())}",
    "weights": "list(view.weights.values())[1].data.mul_(2)\n        return {'x': torch.zeros(())}",
    "raises": "raise ValueError('no luck')",
    "loss": "view.loss.mul_(0)\n        return {'x': torch.zeros(())}",
    "weights_dict": "del view.weights['fc1.bias']",
    "float": "return {'x': 1.0}",
    "names": "return {'y': torch.zeros(())}",
}


def write_probe(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "broken.py"
    path.write_text(
        "import torch\nimport gradlab\n\n\nclass Bad(gradlab.Probe):\n    stats = ('x',)\n\n"
        f"    def measure(self, view):\n        {body}\n"
    )
    return path


def test_a_users_probe_trains_and_keeps_its_source(tmp_path):
    (tmp_path / "snr.py").write_text(SNR)
    raw = probed(edit=[{"type": "clip_norm", "max_norm": 0.1}])
    raw["diagnostics"]["probes"] = [
        "snr.py:GradSNR", {"type": "snr.py:AfterNorm", "at": "after"}, "noise_scale",
    ]  # fmt: skip
    (tmp_path / "exp.yaml").write_text(json.dumps(raw))
    config = load_config(tmp_path / "exp.yaml")
    result = train(config, tmp_path / "runs")
    assert result.summary["status"] == "completed"
    rows = read_csv(result.path / "steps.csv")
    for row in rows:
        # after clip_norm(0.1) the applied norm is at most 0.1; before it, grad_norm
        assert float(row["probe.afternorm_after.norm"]) == pytest.approx(
            min(float(row["grad_norm"]), 0.1), rel=1e-5
        )
        s_over_g = float(row["probe.gradsnr.snr"])
        assert s_over_g > 0
    meta = json.loads((result.path / "meta.json").read_text())
    kinds = {record["class"]: record["kind"] for record in meta["plugins"].values()}
    assert kinds == {"GradSNR": "probe", "AfterNorm": "probe"}
    copies = {record["copy"] for record in meta["plugins"].values()}
    assert all((result.path / copy).read_text() == SNR for copy in copies)
    # a probe is not the experiment: compare shows no plugin column for it
    from gradlab.study.compare import comparison

    table = comparison(str(tmp_path / "runs"))
    assert "resolved.plugins" not in table.columns


@pytest.mark.parametrize("breach", sorted(BROKEN))
def test_a_probe_that_breaks_the_contract_fails_the_run_in_one_line(tmp_path, breach):
    path = write_probe(tmp_path, BROKEN[breach])
    raw = probed()
    raw["diagnostics"]["probes"] = [f"{path}:Bad"]
    result = train(config_from_dict(raw), tmp_path / "runs")
    error = result.summary["error"]
    assert result.summary["status"] == "failed"
    assert error.startswith(f"probe bad ({path}:Bad)") and "\n" not in error
    want = {
        "in_place": "changed the gradient of fc1.weight",
        "data": "changed the gradient of fc1.weight",
        "weights": "changed the weight fc1.bias",
        "raises": f"ValueError: no luck (at {path}, line 9, in measure)",
        "loss": "changed the loss",
        "weights_dict": "TypeError",
        "float": "returned x as float",
        "names": "returned statistics ['y']",
    }[breach]
    assert want in error
    assert (result.path / "traceback.txt").exists()


def test_bad_probe_specs_are_one_line(tmp_path):
    (tmp_path / "snr.py").write_text(SNR + "\n\nclass NotOne:\n    pass\n")
    (tmp_path / "edits.py").write_text(
        "import gradlab\n\n\nclass E(gradlab.Edit):\n    pass\n\n\n"
        "class Noise(gradlab.Probe):\n    name = 'noise_scale'\n"
    )
    cases = {
        f"{tmp_path}/missing.py:X": "not found",
        f"{tmp_path}/snr.py:Nope": "has no class Nope",
        f"{tmp_path}/snr.py:NotOne": "not a subclass of gradlab.Edit",
        f"{tmp_path}/edits.py:E": "is not a probe",
        f"{tmp_path}/edits.py:Noise": "shadows the built-in probe",
    }
    for spec, message in cases.items():
        with pytest.raises(ConfigError) as info:
            config_from_dict(probed(diagnostics={"probes": [spec]}))
        assert message in str(info.value), spec
        assert str(info.value).startswith("config: diagnostics.probes[0].type: ")
    with pytest.raises(ConfigError, match="clip_norm is an edit, not a probe"):
        config_from_dict(probed(diagnostics={"probes": ["clip_norm"]}))
    with pytest.raises(ConfigError, match="is a probe, not a clipping rule"):
        raw = probed(privacy={"noise_multiplier": 1.0, "clipping": f"{tmp_path}/snr.py:AfterNorm"})
        config_from_dict(raw)
    with pytest.raises(ConfigError, match="is a probe .gradlab.Probe., not an edit"):
        config_from_dict(probed(edit=[{"type": f"{tmp_path}/snr.py:GradSNR"}]))


def test_a_users_probe_runs_in_a_sweep_with_its_planned_source(tmp_path):
    from gradlab.plugins import plugin_sources, plugin_specs

    (tmp_path / "snr.py").write_text(SNR)
    raw = probed()
    raw["diagnostics"]["probes"] = ["snr.py:GradSNR"]
    (tmp_path / "base.yaml").write_text(json.dumps(raw))
    sources = plugin_sources(plugin_specs(load_config(tmp_path / "base.yaml")))
    assert [s["source"] for s in sources.values()] == [SNR]  # travels with each task
    (tmp_path / "sweep.yaml").write_text("name: probed\nbase: base.yaml\nseeds: [0, 1]\n")
    runner = CliRunner()
    result = runner.invoke(
        app, ["sweep", str(tmp_path / "sweep.yaml"), "--runs-dir", str(tmp_path / "runs"),
              "--jobs", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    runs = sorted(p for p in (tmp_path / "runs").glob("*/*") if (p / "steps.csv").exists())
    assert len(runs) == 2
    for run in runs:
        rows = read_csv(run / "steps.csv")
        assert all(float(r["probe.gradsnr.snr"]) > 0 for r in rows)


def test_probeset_measures_nothing_when_there_are_none():
    probes = ProbeSet([], ["fc1.weight"], CPU)
    assert not probes.per_example and not probes.measures("before") and probes.columns == []
    assert probes.values() == []


def test_strategies_lists_the_probes_and_a_files_probes(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["strategies"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "noise_scale" in result.output and "diversity" in result.output
    assert "Every probe (diagnostics.probes) also takes" in result.output
    (tmp_path / "snr.py").write_text(SNR)
    result = runner.invoke(app, ["strategies", str(tmp_path / "snr.py")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "gradsnr" not in result.output or "GradSNR" in result.output
    assert "GradSNR" in result.output and "AfterNorm" in result.output


def test_the_probe_panels_draw_the_probes_columns(tmp_path):
    from gradlab.study.compare import comparison
    from gradlab.study.plots import plot_comparison

    for seed in (0, 1):
        raw = probed(seed=seed, diagnostics={"probes": ["noise_scale", "diversity"]})
        train(config_from_dict(raw), tmp_path)
    figure = plot_comparison(comparison([tmp_path]), panels=["noise_scale", "diversity"])
    axes = {ax.get_label(): ax for ax in figure.axes if ax.get_label()}
    assert len(axes["noise_scale"].get_lines()) == 1  # one row, its two seeds' mean
    assert axes["noise_scale"].get_yscale() == "log"
    ys = axes["diversity"].get_lines()[0].get_ydata()
    assert len(ys) > 0 and all(0 < y for y in ys)


def test_installed_packages_give_edits_and_probes_short_names(tmp_path, monkeypatch):
    """The entry point groups gradlab.edits and gradlab.probes, from a package's metadata
    (a dist-info folder on sys.path, as pip installs one)."""
    package = tmp_path / "labtools"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "ideas.py").write_text(
        SNR + "\n\nclass Halve(gradlab.Edit):\n    stats = ()\n\n"
        "    def edit(self, grads, weights, step):\n        for g in grads.values():\n"
        "            g.mul_(0.5)\n        return {'changed': torch.ones(())}\n"
    )
    info = tmp_path / "labtools-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: labtools\nVersion: 1.2\n")
    (info / "top_level.txt").write_text("labtools\n")
    (info / "entry_points.txt").write_text(
        "[gradlab.edits]\nhalve = labtools.ideas:Halve\n\n"
        "[gradlab.probes]\nsnr = labtools.ideas:GradSNR\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    importlib.invalidate_caches()
    raw = probed(edit=[{"type": "halve"}], diagnostics={"probes": ["snr"]})
    config = config_from_dict(raw)
    assert config.edit[0].type == "labtools.ideas:Halve"  # what config.yaml records
    assert config.diagnostics.probes[0].type == "labtools.ideas:GradSNR"
    result = train(config, tmp_path / "runs")
    assert result.summary["status"] == "completed"
    meta = json.loads((result.path / "meta.json").read_text())
    records = meta["plugins"]
    assert {r["origin"] for r in records.values()} == {"module"}
    assert {r["version"] for r in records.values()} == {"1.2"}
    rows = read_csv(result.path / "steps.csv")
    assert float(rows[0]["grad_norm_after"]) == pytest.approx(float(rows[0]["grad_norm"]) / 2)
    assert "probe.gradsnr.snr" in rows[0]
    with pytest.raises(ConfigError, match="unknown edit type 'halv'"):
        config_from_dict(probed(edit=[{"type": "halv"}]))


def test_a_read_only_probe_passes_its_value_checks_on_a_gradient_with_a_nan(tmp_path):
    """The first steps' value comparison counts NaN as equal to itself (a GradScaler's
    overflow), and the diversity of a step whose sums are not finite is an empty cell."""
    (tmp_path / "snr.py").write_text(SNR)
    model, x, y = case("relu", (8,), batch=6)
    names = [n for n, _ in model.named_parameters()]
    probes = ProbeSet(
        [parse_probe(0, f"{tmp_path}/snr.py:AfterNorm"), parse_probe(1, "diversity")], names, CPU
    )
    view = view_of(AnalyticEngine(model), model, x, y)
    model.fc1.weight.grad[0, 0] = math.nan
    probes.measure("before", view)  # no "changed the gradient"
    rows = [torch.cat(probes.values()).tolist()]
    probes.finish(rows, [6], 0)
    assert math.isnan(rows[0][0]) and all(math.isnan(v) for v in rows[0][1:])
