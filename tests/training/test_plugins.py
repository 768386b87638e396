"""Edits from the user's own files (gradlab.plugins): one that re-implements a built-in trains
exactly like it everywhere the built-in works; the run folder keeps its source and hash; the
hash is the experiment's identity; bad specs, raising code and contract breaches each end in
one line; sweeps run them in worker processes and Ray tasks from the planned source."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny
from typer.testing import CliRunner

from gradlab.cli import app
from gradlab.config import config_from_dict, load_config
from gradlab.environment import resolved_setup
from gradlab.study.compare import comparison
from gradlab.sweeps.plan import load_sweep
from gradlab.sweeps.run import run_sweep
from gradlab.train import train

# clip_norm (gradlab/editing/clipping.py) in twenty lines, as a user would write it
MY_CLIP = '''\
import torch
from pydantic import Field

from gradlab import Edit, EditParams


class MyClipParams(EditParams):
    max_norm: float = Field(1.0, gt=0)
    """Largest allowed global norm."""


class MyClip(Edit):
    """Scale the gradients so that their global L2 norm is at most max_norm."""

    name = "my_clip"
    Params = MyClipParams
    stats = ("norm", "scale")

    def edit(self, grads, weights, step):
        tensors = list(grads.values())
        known = self.known_norms
        norm = torch.linalg.vector_norm(torch.stack(known or torch._foreach_norm(tensors)))
        scale = torch.clamp(self.params.max_norm / (norm + 1e-6), max=1.0)
        torch._foreach_mul_(tensors, scale)
        return {"norm": norm, "scale": scale, "changed": (scale < 1.0).float()}
'''

BROKEN = """\
import torch

from gradlab import Edit


class Raises(Edit):
    def edit(self, grads, weights, step):
        if step == 3:
            raise RuntimeError("a bug of mine")
        return {"changed": torch.zeros(())}


class Replaces(Edit):
    def edit(self, grads, weights, step):
        for name in grads:
            grads[name] = grads[name] * 0.5
        return {"changed": torch.ones(())}


class Reshapes(Edit):
    def edit(self, grads, weights, step):
        for g in grads.values():
            g.data = g.data.flatten()
        return {"changed": torch.ones(())}


class PlainFloat(Edit):
    def edit(self, grads, weights, step):
        return {"changed": 1.0}


class Undeclared(Edit):
    stats = ("norm",)

    def edit(self, grads, weights, step):
        return {"changed": torch.ones(()), "extra": torch.ones(())}


class NotAnEdit:
    pass


class Shadow(Edit):
    name = "clip_norm"
"""


def write_plugin(folder: Path, text: str = MY_CLIP, name: str = "my_edits.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def steps(folder: Path) -> list[dict[str, str]]:
    with open(folder / "steps.csv") as f:
        return list(csv.DictReader(f))


def run_pair(tmp_path: Path, plugin: Path, **sections) -> tuple[Path, Path]:
    """The same run with the built-in clip_norm and with the plugin's re-implementation."""
    folders = []
    for kind in ("clip_norm", f"{plugin}:MyClip"):
        raw = tiny(edit=[{"type": kind, "max_norm": 0.3}], **sections)
        folders.append(train(config_from_dict(raw), tmp_path / "runs").path)
    return folders[0], folders[1]


@pytest.mark.parametrize(
    "sections",
    [
        {"train": {"engine": "analytic"}},
        {"train": {"engine": "autograd"}},
        {"train": {"device": "cpu", "amp": "fp16", "engine": "autograd"}},  # unscaled grads
        {"train": {"device": "cpu"}, "privacy": {"noise_multiplier": 1.0}},  # after DP
    ],
    ids=["analytic", "autograd", "fp16", "dp"],
)
def test_a_plugin_trains_exactly_like_the_builtin_it_reimplements(tmp_path, sections):
    plugin = write_plugin(tmp_path / "mine")
    builtin, mine = run_pair(tmp_path, plugin, **sections)
    a, b = steps(builtin), steps(mine)
    assert len(a) == len(b) == 12
    for row_a, row_b in zip(a, b, strict=True):
        for column in ("loss", "grad_norm", "edit0.clip_norm.scale"):
            if column in row_a:
                theirs = column.replace("clip_norm", "my_clip")
                assert row_a[column] == row_b[theirs], (column, row_a["step"])
    assert any(float(r["edit0.my_clip.changed"]) for r in b)  # the edit did clip
    meta = json.loads((mine / "meta.json").read_text())
    assert meta["edits"] == "my_clip(0.3)"


def test_the_run_folder_keeps_the_plugins_source_and_hash(tmp_path):
    plugin = write_plugin(tmp_path / "mine")
    sha = hashlib.sha256(plugin.read_bytes()).hexdigest()
    _, mine = run_pair(tmp_path, plugin)
    record = json.loads((mine / "meta.json").read_text())["plugins"][f"{plugin}:MyClip"]
    assert record["sha256"] == sha and record["origin"] == "file"
    assert record["path"] == str(plugin) and record["name"] == "my_clip"
    assert (mine / record["copy"]).read_text() == MY_CLIP


def test_a_relative_path_is_relative_to_the_config_file(tmp_path, monkeypatch):
    write_plugin(tmp_path / "study" / "edits")
    config = tmp_path / "study" / "exp.yaml"
    config.write_text(yaml.safe_dump(tiny(edit=[{"type": "edits/my_edits.py:MyClip"}])))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = CliRunner().invoke(app, ["train", str(config), "--runs-dir", "runs", "-q"])
    assert result.exit_code == 0, result.output
    (folder,) = (elsewhere / "runs").iterdir()
    saved = yaml.safe_load((folder / "config.yaml").read_text())
    assert saved["edit"][0]["type"] == f"{tmp_path}/study/edits/my_edits.py:MyClip"
    # the run folder's config.yaml trains again as it is, from anywhere
    again = CliRunner().invoke(app, ["train", str(folder / "config.yaml"), "--runs-dir", "r2"])
    assert again.exit_code == 0, again.output


def test_validate_shows_the_plugins_resolved_parameters(tmp_path):
    plugin = write_plugin(tmp_path)
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(tiny(edit=[{"type": f"{plugin.name}:MyClip"}])))
    result = CliRunner().invoke(app, ["validate", str(config)])
    assert result.exit_code == 0, result.output
    assert "max_norm: 1.0" in result.output and "MyClip" in result.output


@pytest.mark.parametrize(
    ("spec", "extra", "message"),
    [
        ("missing.py:MyClip", {}, "missing.py not found"),
        ("syntax.py:MyClip", {}, "syntax.py, line 2: syntax error"),
        ("raising.py:MyClip", {}, "ZeroDivisionError: division by zero (at "),
        ("my_edits.py:Nope", {}, "has no class Nope; its edits, probes and rules: MyClip"),
        ("broken.py:NotAnEdit", {}, "NotAnEdit is not a subclass of gradlab.Edit"),
        ("broken.py:Shadow", {}, "'clip_norm' shadows the built-in edit"),
        ("my_edits.py:MyClip", {"max_nrom": 1}, "edit[0].max_nrom: unknown key"),
        ("my_edits.py:MyClip", {"max_norm": -1}, "edit[0].max_norm: Input should be greater"),
        ("no_such_package_xyz.edits:MyClip", {}, "cannot import it"),
        ("my_edits.py:my clip", {}, "is not a plugin spec"),
    ],
)
def test_a_bad_plugin_spec_is_one_line_and_creates_nothing(tmp_path, spec, extra, message):
    write_plugin(tmp_path)
    write_plugin(tmp_path, BROKEN, "broken.py")
    write_plugin(tmp_path, "import torch\ndef f(:\n", "syntax.py")
    write_plugin(tmp_path, "x = 1\ny = x / 0\n", "raising.py")
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(tiny(edit=[{"type": spec, **extra}])))
    proc = subprocess.run(
        [sys.executable, "-m", "gradlab.cli", "train", str(config), "--runs-dir", "runs"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert message in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_a_raising_plugin_fails_its_run_with_the_users_file_and_line(tmp_path):
    plugin = write_plugin(tmp_path, BROKEN, "broken.py")
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(tiny(edit=[{"type": "broken.py:Raises"}])))
    proc = subprocess.run(
        [sys.executable, "-m", "gradlab.cli", "train", str(config), "--runs-dir", "runs", "-q"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    (folder,) = (tmp_path / "runs").iterdir()
    summary = json.loads((folder / "summary.json").read_text())
    line = BROKEN.splitlines().index('            raise RuntimeError("a bug of mine")') + 1
    assert summary["status"] == "failed" and summary["steps"] == 3
    assert "RuntimeError: a bug of mine" in summary["error"]
    assert f"(at {plugin}, line {line}, in edit)" in summary["error"]
    assert "a bug of mine" in (folder / "traceback.txt").read_text()


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("Replaces", "replaced the gradient of fc1.weight at step 1: an edit changes the tensors"),
        ("Reshapes", "changed the shape, dtype or device of the gradient of fc1.weight"),
        ("PlainFloat", "returned changed as float at step 1; each statistic is a 0-dim tensor"),
        ("Undeclared", "returned statistics ['changed', 'extra'] at step 1; it must return"),
    ],
)
def test_a_contract_breach_fails_the_run_naming_the_plugin_and_the_rule(tmp_path, name, rule):
    plugin = write_plugin(tmp_path, BROKEN, "broken.py")
    result = train(config_from_dict(tiny(edit=[{"type": f"{plugin}:{name}"}])), tmp_path / "r")
    assert result.summary["status"] == "failed"
    assert result.summary["error"].startswith(f"edit {name.lower()} ({plugin}:{name})")
    assert rule in result.summary["error"]


def test_the_plugins_source_is_the_experiments_identity_not_its_path(tmp_path):
    plugin = write_plugin(tmp_path / "a")
    moved = write_plugin(tmp_path / "b")  # the same code elsewhere
    keys = {}
    for label, path in (("a", plugin), ("b", moved)):
        cfg = config_from_dict(tiny(edit=[{"type": f"{path}:MyClip"}]))
        keys[label] = cfg.experiment_hash(resolved_setup(cfg))
    assert keys["a"] == keys["b"]
    plugin.write_text(MY_CLIP + "\n# fixed a bug\n")
    cfg = config_from_dict(tiny(edit=[{"type": f"{plugin}:MyClip"}]))
    assert cfg.experiment_hash(resolved_setup(cfg)) != keys["a"]


def test_compare_keeps_runs_of_an_edited_plugin_apart(tmp_path):
    plugin = write_plugin(tmp_path / "mine")
    raw = tiny(edit=[{"type": f"{plugin}:MyClip", "max_norm": 0.3}])
    train(config_from_dict(raw), tmp_path / "runs")
    plugin.write_text(MY_CLIP.replace("max=1.0", "max=0.5"))  # a different edit now
    train(config_from_dict(raw), tmp_path / "runs")
    table = comparison([tmp_path / "runs"])
    assert len(table) == 2
    assert set(table["edits"]) == {"my_clip(0.3)"}
    assert table["resolved.plugins"].nunique() == 2  # what tells them apart


PROBE = """\
import gradlab


class Loss(gradlab.Probe):
    stats = ("loss",)

    def measure(self, view):
        return {"loss": view.loss.clone()}
"""


def write_study(folder: Path, probe: bool = False) -> Path:
    write_plugin(folder / "edits")
    base = tiny(optim={"max_steps": 4})
    if probe:  # a probe of one's own, from the same folder
        (folder / "edits" / "probes.py").write_text(PROBE)
        base["diagnostics"] = {"probes": ["edits/probes.py:Loss"]}
    sweep = {
        "name": "s",
        "base": base,
        "list": [
            {"name": "builtin", "edit": [{"type": "clip_norm", "max_norm": 0.3}]},
            {"name": "mine", "edit": [{"type": "edits/my_edits.py:MyClip", "max_norm": 0.3}]},
        ],
        "seeds": [0, 1],
    }
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def folders_by_name(sweep_dir: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for folder in sweep_dir.iterdir():
        if (folder / "config.yaml").is_file():
            name = yaml.safe_load((folder / "config.yaml").read_text())["name"]
            counts[name] = counts.get(name, 0) + 1
    return counts


def test_a_sweep_trains_plugins_in_its_workers_and_retrains_only_their_runs(tmp_path):
    path = write_study(tmp_path)
    runs = tmp_path / "runs"
    folder = run_sweep(load_sweep(path), runs, jobs=2)
    record = json.loads((folder / "sweep.json").read_text())
    assert [r["status"] for r in record["runs"]] == ["done"] * 4
    assert folders_by_name(folder) == {"builtin": 2, "mine": 2}
    table = comparison([folder])
    assert set(table["edits"]) == {"clip_norm(0.3)", "my_clip(0.3)"}
    assert table.set_index("edits")["final_train_loss"].nunique() == 1  # the same training

    run_sweep(load_sweep(path), runs, jobs=2)  # nothing changed: nothing retrained
    assert folders_by_name(folder) == {"builtin": 2, "mine": 2}
    plugin = tmp_path / "edits" / "my_edits.py"
    plugin.write_text(plugin.read_text() + "\n# a fix\n")
    run_sweep(load_sweep(path), runs, jobs=2)
    assert folders_by_name(folder) == {"builtin": 2, "mine": 4}  # exactly the plugin's runs


def test_a_sweeps_workers_run_the_planned_source(tmp_path):
    """Planned, then the file is gone (a node without it, or an edit mid-sweep): the runs
    train with the source the sweep was planned with, recorded as such."""
    path = write_study(tmp_path)
    sweep = load_sweep(path)
    plugin = tmp_path / "edits" / "my_edits.py"
    sha = hashlib.sha256(plugin.read_bytes()).hexdigest()
    shutil.rmtree(tmp_path / "edits")
    folder = run_sweep(sweep, tmp_path / "runs", jobs=2)
    record = json.loads((folder / "sweep.json").read_text())
    assert [r["status"] for r in record["runs"]] == ["done"] * 4, record["runs"]
    for run in record["runs"][2:]:
        meta = json.loads((folder / run["folder"] / "meta.json").read_text())
        assert meta["plugins"][f"{plugin}:MyClip"]["sha256"] == sha


def test_a_ray_sweep_without_a_shared_folder_brings_the_plugins_source(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'gradlab[ray]')")
    if ray.is_initialized():
        pytest.skip("a Ray is already running in this process")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    path = write_study(tmp_path, probe=True)
    sweep = load_sweep(path)
    shutil.rmtree(tmp_path / "edits")  # the tasks cannot read the files
    folder = run_sweep(sweep, tmp_path / "runs", executor="ray", jobs=2, shared_dir=False)
    record = json.loads((folder / "sweep.json").read_text())
    assert [r["status"] for r in record["runs"]] == ["done"] * 4, record["runs"]
    mine = [r for r in record["runs"] if r["name"].startswith("mine")]
    for run in mine:
        run_folder = folder / run["folder"]
        meta = json.loads((run_folder / "meta.json").read_text())
        copies = sorted(p.read_text() for p in (run_folder / "plugins").iterdir())
        assert copies == sorted([MY_CLIP, PROBE]) and meta["edits"] == "my_clip(0.3)"
        with open(run_folder / "steps.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert [r["probe.loss.loss"] for r in rows] == [r["loss"] for r in rows]


def test_the_example_plugins_train(tmp_path):
    """The example plugins of examples/edits train through the CLI's config loader."""
    root = Path(__file__).resolve().parents[2] / "examples" / "edits"
    for name, cls in (("coordinate_clip.py", "CoordinateClip"), ("low_rank.py", "LowRank")):
        raw = tiny(edit=[{"type": f"{root / name}:{cls}"}])
        result = train(config_from_dict(raw), tmp_path / "runs")
        assert result.summary["status"] == "completed", result.summary
        assert torch.isfinite(torch.tensor(result.summary["final_train_loss"]))
    config = load_config(root / "coordinate_clip.yaml")
    assert config.edit[0].type == f"{root / 'coordinate_clip.py'}:CoordinateClip"


def test_strategies_lists_the_edits_of_a_file(tmp_path, monkeypatch):
    write_plugin(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["strategies", "my_edits.py"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "plugin" in text and "MyClip" in text and "max_norm (1.0)" in text
    assert "clip_norm" not in text.replace("my_clip", "")  # its own edits, not the built-ins
    missing = CliRunner().invoke(app, ["strategies", "nothing.py"])
    assert missing.exit_code == 2 and "nothing.py not found" in missing.output


def example(name: str, cls: str):
    from gradlab.plugins import load_plugin

    root = Path(__file__).resolve().parents[2] / "examples" / "edits"
    return load_plugin(f"{root / name}:{cls}").cls


def test_the_low_rank_example_is_the_truncated_svd():
    import numpy as np

    LowRank = example("low_rank.py", "LowRank")
    g = torch.randn(6, 9, generator=torch.Generator().manual_seed(0))
    bias = torch.randn(6)
    grads = {"fc1.weight": g.clone(), "fc1.bias": bias.clone()}
    edit = LowRank(LowRank.Params(type="x", rank=2), list(grads), torch.Generator())
    stats = edit.edit(grads, {}, 1)
    u, s, vh = np.linalg.svd(g.double().numpy(), full_matrices=False)
    want = (u[:, :2] * s[:2]) @ vh[:2]
    np.testing.assert_allclose(grads["fc1.weight"].numpy(), want, rtol=1e-5, atol=1e-6)
    assert torch.equal(grads["fc1.bias"], bias)  # 1-d: left as it is
    assert float(stats["kept_energy"]) == pytest.approx((s[:2] ** 2).sum() / (s**2).sum())


def test_the_coordinate_clip_example_clips_at_its_running_rms():
    import numpy as np

    Clip = example("coordinate_clip.py", "CoordinateClip")
    rng = torch.Generator().manual_seed(1)
    g1, g2 = torch.randn(5, 4, generator=rng), 3 * torch.randn(5, 4, generator=rng)
    edit = Clip(Clip.Params(type="x", factor=1.5, beta=0.9), ["w"], torch.Generator())
    edit.setup({"w": torch.zeros(5, 4)})
    first = {"w": g1.clone()}
    assert float(edit.edit(first, {}, 1)["changed"]) == 0  # nothing to clip against yet
    assert torch.equal(first["w"], g1)
    second = {"w": g2.clone()}
    stats = edit.edit(second, {}, 2)
    bound = 1.5 * np.sqrt(0.1 * g1.numpy() ** 2)  # v after step 1: (1 - beta) g1^2
    np.testing.assert_allclose(second["w"].numpy(), np.clip(g2.numpy(), -bound, bound), rtol=1e-6)
    assert float(stats["clipped_frac"]) == pytest.approx(np.mean(np.abs(g2.numpy()) > bound))


def test_a_raising_plugin_in_a_sweep_is_recorded_with_its_file_and_line(tmp_path):
    plugin = write_plugin(tmp_path, BROKEN, "broken.py")
    sweep = {
        "name": "s",
        "base": tiny(optim={"max_steps": 5}),
        "list": [{"name": "bug", "edit": [{"type": "broken.py:Raises"}]}],
        "seeds": [0],
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    folder = run_sweep(load_sweep(path), tmp_path / "runs", jobs=2)
    (run,) = json.loads((folder / "sweep.json").read_text())["runs"]
    line = BROKEN.splitlines().index('            raise RuntimeError("a bug of mine")') + 1
    assert run["status"] == "failed" and "worker process died" not in run["error"]
    assert f"RuntimeError: a bug of mine (at {plugin}, line {line}, in edit)" in run["error"]
    summary = json.loads((folder / run["folder"] / "summary.json").read_text())
    assert summary["error"] == run["error"]
    assert (folder / run["folder"] / "traceback.txt").is_file()


CONTEXT = '''\
import torch

from gradlab import Edit

SEEN = []


class Records(Edit):
    """Keeps what each step's context held, and the gradient of fc2.bias."""

    def edit(self, grads, weights, step):
        c = self.context
        state = {n: {k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.items()}
                 for n, s in c.optimizer_state.items()}
        SEEN.append((c.step, c.lr, float(c.loss), state, grads["fc2.bias"].clone()))
        return {"changed": torch.zeros(())}
'''


def test_a_plugin_reads_the_steps_learning_rate_loss_and_optimizer_state(tmp_path):
    from gradlab.plugins import load_plugin

    plugin = write_plugin(tmp_path, CONTEXT, "context.py")
    raw = tiny(
        optim={"name": "adam", "lr": 0.01, "schedule": "cosine", "max_steps": 6},
        edit=[{"type": f"{plugin}:Records", "params": "fc2.*"}],
    )
    result = train(config_from_dict(raw), tmp_path / "runs")
    assert result.summary["status"] == "completed", result.summary
    seen = sys.modules[load_plugin(f"{plugin}:Records").cls.__module__].SEEN
    logged = steps(result.path)
    assert [s[0] for s in seen] == [1, 2, 3, 4, 5, 6]
    assert len({s[1] for s in seen}) == 6  # the cosine schedule's lr, step by step
    for (step, lr, loss, state, _), row in zip(seen, logged, strict=True):
        assert lr == pytest.approx(float(row["lr"])) and loss == pytest.approx(float(row["loss"]))
        assert set(state) == (set() if step == 1 else {"fc2.weight", "fc2.bias"})  # targets only
    # at step 3 the state is Adam's after two updates (Kingma & Ba, betas 0.9 and 0.999)
    g1, g2 = seen[0][4], seen[1][4]
    state = seen[2][3]["fc2.bias"]
    assert int(state["step"]) == 2
    torch.testing.assert_close(state["exp_avg"], 0.9 * 0.1 * g1 + 0.1 * g2)
    torch.testing.assert_close(state["exp_avg_sq"], 0.999 * 0.001 * g1**2 + 0.001 * g2**2)


NOT_REPEATABLE = '''\
import time

import torch

from gradlab import Edit


class Clock(Edit):
    """Noise from the clock, not from self.generator: no two runs agree."""

    def edit(self, grads, weights, step):
        for g in grads.values():
            g.add_((time.perf_counter_ns() % 1000) * 1e-6)
        return {"changed": torch.ones(())}
'''


@pytest.mark.parametrize(
    ("spec", "failed"),
    [
        ("examples/edits/coordinate_clip.py:CoordinateClip", None),
        ("examples/edits/low_rank.py:LowRank", None),
        ("clip_norm", None),
        ("broken.py:Raises", "contract"),
        ("broken.py:Undeclared", "contract"),
        ("clock.py:Clock", "repeatable"),
    ],
)
def test_check_edit_passes_the_examples_and_fails_broken_plugins(
    tmp_path, monkeypatch, spec, failed
):
    root = Path(__file__).resolve().parents[2]
    write_plugin(tmp_path, BROKEN, "broken.py")
    write_plugin(tmp_path, NOT_REPEATABLE, "clock.py")
    if spec.startswith("examples/"):
        spec = str(root / spec)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["check-edit", spec, "--steps", "4"])
    text = " ".join(re.sub("[\u2500-\u257f]", " ", result.output).split())  # no box lines
    if failed is None:
        assert result.exit_code == 0, result.output
        assert "all checks passed" in text and "FAILED" not in text
        assert text.count("passed") >= 12 + 1  # 4 checks x 3 setups, and the last line
    else:
        assert result.exit_code == 1, result.output
        assert f"{failed} FAILED" in text and "some checks failed" in text


def test_check_edit_uses_the_configs_entry_and_refuses_bad_input(tmp_path, monkeypatch):
    plugin = write_plugin(tmp_path)
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(tiny(edit=[{"type": "my_edits.py:MyClip", "max_norm": 1e-3}])))
    from gradlab.checkedit import check_edit

    monkeypatch.chdir(tmp_path)
    report = check_edit("my_edits.py:MyClip", load_config(config), steps=3)
    assert report["passed"] and report["spec"] == "my_edits.py:MyClip"
    detail = report["setups"]["analytic"]["statistics"][1]
    assert detail.endswith("changed at 3 of 3 steps")  # max_norm 1e-3 clips every step
    for args, message in (
        (["nothing.py:X"], "nothing.py not found"),
        ([f"{plugin}:MyClip", "--steps", "1"], "--steps 1: use 2 to 10000 steps"),
        ([f"{plugin}:MyClip", "--set", "edit.0.max_norm=-1"], "max_norm"),
    ):
        result = CliRunner().invoke(app, ["check-edit", *args])
        assert result.exit_code == 2 and message in result.output, result.output
