"""Reading a study: statistics against scipy on hand-built run sets, the experiment
identity, duplicates, discovery at depth, and the baseline's command-line errors."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps
from typer.testing import CliRunner

import gradlab
from gradlab.cli import app
from gradlab.config import config_from_dict
from gradlab.runlog import RunWriter
from gradlab.study import stats
from gradlab.study.compare import comparison
from gradlab.study.reading import load_runs

runner = CliRunner()
CPU = {"device": "cpu", "amp": {"dtype": "off", "grad_scaler": False}, "engine": "analytic"}
FP16 = {"device": "cuda:0", "amp": {"dtype": "float16", "grad_scaler": True}, "engine": "autograd"}


def fake_run(
    root: Path,
    name: str,
    seed: int,
    accuracy: float,
    *,
    config: dict | None = None,
    meta: dict | None = None,
    status: str = "completed",
    alerts: dict | None = None,
    started: str = "2026-11-26T10:00:00+00:00",
    loss: float = 0.5,
) -> Path:
    """A run folder written by gradlab's run writer with chosen summary figures."""
    raw = {"name": name, "seed": seed, "data": {"name": "mnist-sample"}}
    for key, value in (config or {}).items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    cfg = config_from_dict(raw)
    record = {**CPU, "edits": "none", "started": started, **(meta or {})}
    run = RunWriter.create(root, name, cfg.to_yaml(), record, ["step", "loss", "elapsed_s"])
    run.steps.append([[1, loss, 0.01]])
    run.write_summary(
        {
            "status": status,
            "steps": 10,
            "final_test_accuracy": accuracy,
            "final_train_loss": loss,
            "alerts": alerts or {"vanishing": 0, "exploding": 0, "dead_relu": 0},
        }
    )
    run.close()
    return run.path


BASE = [0.80, 0.82, 0.79, 0.81, 0.83]
CLIP = [0.84, 0.85, 0.83, 0.86, 0.845]  # same seeds 0-4: paired
SIGN = [0.80, 0.83, 0.78, 0.82]  # seeds 5-8: Welch


@pytest.fixture
def study(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    for seed, value in enumerate(BASE):
        fake_run(root / "a", "baseline", seed, value)
    for seed, value in enumerate(CLIP):
        fake_run(
            root / "a",
            "clip",
            seed,
            value,
            config={"edit": [{"type": "clip_norm", "max_norm": 0.25}]},
            meta={"edits": "clip_norm(0.25)"},
        )
    for seed, value in zip(range(5, 9), SIGN, strict=True):  # deeper: runs/b/nested/
        fake_run(
            root / "b" / "nested",
            "sign",
            seed,
            value,
            config={"optim": {"lr": 0.5}},
        )
    fake_run(root, "single", 0, 0.7, config={"optim": {"lr": 0.9}})
    return root


def rows_by_name(table) -> dict:
    return {row["name"]: row for row in table.to_dict("records")}


# --------------------------------------------------------------------------- statistics


def test_mean_interval_is_scipys_student_t_interval():
    values = [0.8, 0.82, 0.79, 0.81, 0.83]
    for level in (0.9, 0.95, 0.99):
        low, high = stats.mean_interval(values, level)
        expected = sps.t.interval(
            level, len(values) - 1, loc=np.mean(values), scale=sps.sem(values)
        )
        assert (low, high) == pytest.approx(expected, rel=1e-12)
    assert all(math.isnan(x) for x in stats.mean_interval([0.5]))
    assert stats.mean_interval([0.5, 0.5]) == (0.5, 0.5)


def test_paired_and_welch_tests_are_scipys():
    paired = stats.compare_to_baseline(dict(enumerate(CLIP)), dict(enumerate(BASE)))
    reference = sps.ttest_rel(CLIP, BASE)
    interval = reference.confidence_interval(0.95)
    assert paired.test == "paired" and paired.n_pairs == 5
    assert paired.p_value == pytest.approx(reference.pvalue, rel=1e-12)
    assert paired.delta == pytest.approx(np.mean(np.subtract(CLIP, BASE)))
    assert (paired.ci_low, paired.ci_high) == pytest.approx((interval.low, interval.high))
    d = np.subtract(CLIP, BASE)
    half = sps.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5)
    assert (paired.ci_low, paired.ci_high) == pytest.approx((d.mean() - half, d.mean() + half))

    welch = stats.compare_to_baseline(
        dict(zip(range(5, 9), SIGN, strict=True)), dict(enumerate(BASE))
    )
    reference = sps.ttest_ind(SIGN, BASE, equal_var=False)
    interval = reference.confidence_interval(0.9)
    assert welch.test == "welch" and math.isnan(welch.n_pairs)
    assert welch.p_value == pytest.approx(reference.pvalue, rel=1e-12)
    assert welch.delta == pytest.approx(np.mean(SIGN) - np.mean(BASE))
    at_90 = stats.compare_to_baseline(
        dict(zip(range(5, 9), SIGN, strict=True)), dict(enumerate(BASE)), 0.9
    )
    assert (at_90.ci_low, at_90.ci_high) == pytest.approx((interval.low, interval.high))


def test_degenerate_cases_never_fail():
    same = stats.compare_to_baseline({0: 0.5, 1: 0.6}, {0: 0.5, 1: 0.6})
    assert same.p_value == 1.0 and same.delta == 0 and (same.ci_low, same.ci_high) == (0, 0)
    shifted = stats.compare_to_baseline({0: 0.6, 1: 0.7}, {0: 0.5, 1: 0.6})
    assert shifted.p_value == 0.0 and shifted.delta == pytest.approx(0.1)
    one = stats.compare_to_baseline({0: 0.6}, {0: 0.5})
    assert one.test == "paired" and one.n_pairs == 1 and math.isnan(one.p_value)
    assert one.delta == pytest.approx(0.1)
    lonely = stats.compare_to_baseline({3: 0.6}, {0: 0.5, 1: 0.7})
    assert lonely.test == "welch" and math.isnan(lonely.p_value)
    assert lonely.delta == pytest.approx(0.0)
    flat = stats.compare_to_baseline({3: 0.5, 4: 0.5}, {0: 0.5, 1: 0.5})
    assert flat.test == "welch" and flat.p_value == 1.0
    empty = stats.compare_to_baseline({}, {0: 0.5})
    assert math.isnan(empty.delta)


def brute_force_holm(p):
    """Holm-Bonferroni straight from its definition: reject in order while p(j) <= a/(k-j);
    the adjusted p is the smallest level at which each hypothesis is rejected."""
    k = len(p)
    order = sorted(range(k), key=lambda i: p[i])
    adjusted = [0.0] * k
    for rank, i in enumerate(order):
        adjusted[i] = min(1.0, max(min(1.0, (k - j) * p[order[j]]) for j in range(rank + 1)))
    return adjusted


def test_holm_matches_its_definition():
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = list(rng.uniform(0, 0.2, rng.integers(1, 8)))
        assert stats.holm(p) == pytest.approx(brute_force_holm(p))
    assert stats.holm([0.01, math.nan, 0.04, 0.03]) == pytest.approx(
        [0.03, math.nan, 0.06, 0.06], nan_ok=True
    )


def power_by_nct(d, n, df, nc):
    critical = sps.t.ppf(0.975, df)
    return sps.nct.sf(critical, df, nc) + sps.nct.cdf(-critical, df, nc)


@pytest.mark.parametrize("effect", [0.3, 0.5, 0.8, 1.2, 2.5])
def test_seeds_needed_is_the_smallest_n_with_80_percent_power(effect):
    paired = stats.seeds_needed_paired(effect)
    linear = next(
        n for n in range(2, 1000) if power_by_nct(effect, n, n - 1, effect * math.sqrt(n)) >= 0.8
    )
    assert paired == linear
    two = stats.seeds_needed_two_sample(effect)
    linear = next(
        n
        for n in range(2, 1000)
        if power_by_nct(effect, n, 2 * n - 2, effect * math.sqrt(n / 2)) >= 0.8
    )
    assert two == linear


def test_seeds_needed_textbook_values():
    # G*Power / Cohen: d = 0.5 needs 34 pairs (one-sample t) and 64 per group (two-sample)
    assert stats.seeds_needed_paired(0.5) == 34
    assert stats.seeds_needed_two_sample(0.5) == 64
    assert math.isnan(stats.seeds_needed_paired(0.0))


# --------------------------------------------------------------------------- the table


def test_grouped_table_has_intervals_and_tests_against_scipy(study: Path):
    table = comparison([study], baseline="baseline")
    rows = rows_by_name(table)
    assert rows["baseline"]["n"] == 5 and rows["sign"]["n"] == 4 and rows["single"]["n"] == 1
    low, high = sps.t.interval(0.95, 4, loc=np.mean(BASE), scale=sps.sem(BASE))
    assert rows["baseline"]["final_test_accuracy.ci_low"] == pytest.approx(low)
    assert rows["baseline"]["final_test_accuracy.ci_high"] == pytest.approx(high)
    assert math.isnan(rows["single"]["final_test_accuracy.ci_low"])

    clip = rows["clip"]
    assert clip["test"] == "paired" and clip["n_pairs"] == 5
    assert clip["p_value"] == pytest.approx(sps.ttest_rel(CLIP, BASE).pvalue)
    sign = rows["sign"]
    assert sign["test"] == "welch"
    assert sign["p_value"] == pytest.approx(sps.ttest_ind(SIGN, BASE, equal_var=False).pvalue)
    assert (
        rows["baseline"]["test"] == "baseline"
        and rows["baseline"]["delta.final_test_accuracy"] == 0
    )
    assert math.isnan(rows["single"]["p_value"])  # n = 1: no test, no error
    tested = [clip["p_value"], sign["p_value"]]
    adjusted = brute_force_holm(tested)
    assert [clip["p_adjusted"], sign["p_adjusted"]] == pytest.approx(adjusted)
    d = np.subtract(CLIP, BASE)
    assert clip["seeds_needed"] == stats.seeds_needed_paired(d.mean() / d.std(ddof=1))
    columns = list(table.columns)
    i = columns.index("delta.final_test_accuracy")
    assert columns[i : i + 8] == [
        "delta.final_test_accuracy",
        "delta.final_test_accuracy.ci_low",
        "delta.final_test_accuracy.ci_high",
        "p_value",
        "p_adjusted",
        "test",
        "n_pairs",
        "seeds_needed",
    ]


def test_the_table_marks_significant_rows_and_explains_itself(study: Path):
    result = runner.invoke(
        app, ["compare", str(study), "--baseline", "baseline", "--power", "--width", "250"]
    )
    assert result.exit_code == 0, result.output
    clip_line = next(line for line in result.stdout.splitlines() if "clip" in line)
    assert " *" in clip_line and "paired" in clip_line
    assert "seeds_needed" in result.stdout
    assert "Holm" in result.stdout and "95% confidence interval" in result.stdout
    markdown = runner.invoke(
        app, ["compare", str(study), "--baseline", "baseline", "-f", "markdown"]
    )
    assert "| clip |" in markdown.stdout and " *" in markdown.stdout
    assert "seeds_needed" not in markdown.stdout.splitlines()[2]  # only with --power


def test_selectors_pick_the_baseline(study: Path):
    by_selector = comparison([study], baseline="edits=clip_norm(0.25)")
    assert rows_by_name(by_selector)["clip"]["test"] == "baseline"
    by_lr = comparison([study], baseline="optim.lr=0.5")
    assert rows_by_name(by_lr)["sign"]["test"] == "baseline"
    both = comparison([study], baseline="optim.lr=0.01,edits=none")
    assert rows_by_name(both)["baseline"]["test"] == "baseline"
    folder = next((study / "a").glob("baseline-*")).name
    assert rows_by_name(comparison([study], baseline=folder))["baseline"]["test"] == "baseline"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--baseline", "optim.lr=0.01"], "--baseline 'optim.lr=0.01' matches 2 rows: "),
        (["--baseline", "optim.lr=7"], "--baseline 'optim.lr=7' matches no row; names: "),
        (["--baseline", "colour=red"], "--baseline 'colour=red': no column 'colour'"),
        (
            ["--baseline", "baseline", "--test-metric", "speed"],
            "--test-metric 'speed': the baseline is compared on a metric; metrics: ",
        ),
        (["--test-metric", "final_train_loss"], "--test-metric needs --baseline"),
        (["--ci", "1.5"], "--ci 1.5: the confidence level must be between 0 and 1"),
        (["--ci", "0"], "--ci 0.0: the confidence level must be between 0 and 1"),
        (["--spread", "iqr"], "--spread 'iqr': use ci or std"),
    ],
)
def test_bad_baseline_and_levels_end_in_one_line(study: Path, args, message):
    result = runner.invoke(app, ["compare", str(study), *args])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line


def test_test_metric_and_level_choose_what_is_tested(study: Path):
    table = comparison(
        [study],
        baseline="baseline",
        test_metric="final_train_loss",
        ci=0.8,
        sort_by="final_test_accuracy",
    )
    assert (
        "delta.final_train_loss" in table.columns
        and "delta.final_test_accuracy" not in table.columns
    )
    rows = rows_by_name(table)
    assert rows["clip"]["p_value"] == 1.0  # every fake loss is 0.5: no difference at all
    low, _ = sps.t.interval(0.8, 4, loc=np.mean(BASE), scale=sps.sem(BASE))
    assert rows["baseline"]["final_test_accuracy.ci_low"] == pytest.approx(low)


def test_python_api_returns_the_exported_table(study: Path):
    table = gradlab.comparison(study, baseline="baseline")
    result = runner.invoke(app, ["compare", str(study), "--baseline", "baseline", "-f", "json"])
    exported = json.loads(result.stdout)
    assert list(exported[0]) == list(table.columns)
    assert [r["name"] for r in exported] == list(table["name"])
    assert gradlab.compare_runs([study], baseline="baseline").equals(table)
    assert callable(gradlab.load_grads) and callable(gradlab.load_alerts)


def test_every_measurement_is_averaged_alerts_included(tmp_path: Path):
    counts = [{"dead_relu": 0}, {"dead_relu": 5}, {"dead_relu": 1}]
    for seed, alerts in enumerate(counts):
        fake_run(tmp_path, "relu", seed, 0.5, alerts={"vanishing": 0, "exploding": seed, **alerts})
    (row,) = comparison([tmp_path], metrics=["alerts.dead_relu", "alerts.exploding"]).to_dict(
        "records"
    )
    assert row["alerts.dead_relu"] == pytest.approx(2.0)
    assert row["alerts.dead_relu.std"] == pytest.approx(np.std([0, 5, 1], ddof=1))
    assert row["alerts.exploding"] == pytest.approx(1.0)
    (row,) = comparison([tmp_path]).to_dict("records")
    assert row["alerts"] == pytest.approx(3.0)  # the total of the kinds, averaged
    out = runner.invoke(
        app, ["compare", str(tmp_path), "-f", "csv", "--metrics", "alerts.dead_relu"]
    )
    (exported,) = list(csv.DictReader(io.StringIO(out.stdout)))
    assert float(exported["alerts.dead_relu"]) == pytest.approx(2.0)


# --------------------------------------------------------------------------- identity


def test_logging_keys_do_not_split_a_group_but_the_resolved_setup_does(tmp_path: Path):
    fake_run(tmp_path, "x", 0, 0.8)
    fake_run(
        tmp_path, "x", 1, 0.8, config={"train": {"flush_every": 7, "eval_every": 3, "log": "loss"}}
    )
    fake_run(
        tmp_path,
        "x",
        2,
        0.8,
        config={"data": {"root": "elsewhere", "download": False}, "diagnostics": {"every": 0}},
    )
    fake_run(
        tmp_path,
        "x",
        3,
        0.8,
        config={"train": {"device": "cpu", "engine": "analytic", "amp": "off"}},
    )
    fake_run(tmp_path, "x", 0, 0.6, meta=FP16, config={"train": {"amp": "fp16"}})
    fake_run(tmp_path, "x", 1, 0.6, meta=FP16)
    table = comparison([tmp_path])
    assert sorted(table["n"]) == [2, 4]
    assert set(table["resolved.amp"]) == {"off", "float16"}  # the column that tells them apart
    cpu = table[table["resolved.amp"] == "off"].iloc[0]
    assert (
        cpu["seed"] == "0,1,2,3" and cpu["train.flush_every"] == "100|7"
    )  # joined, sorted as text


def test_duplicates_count_once_with_one_warning(tmp_path: Path):
    first = tmp_path / "sweep-a"
    second = tmp_path / "sweep-b"
    for seed in (0, 1, 2):
        fake_run(first, "x", seed, 0.8 + seed / 100, started="2026-11-26T10:00:00+00:00")
    for folder in first.iterdir():
        shutil.copytree(folder, second / folder.name)
    newer = fake_run(second, "x", 0, 0.9, started="2026-11-26T11:00:00+00:00")
    runs = load_runs([tmp_path])
    assert len(runs) == 7 and len(runs.attrs["duplicates"]) == 4
    (row,) = comparison(runs).to_dict("records")
    assert row["n"] == 3 and row["seed"] == "0,1,2"
    assert row["final_test_accuracy"] == pytest.approx(np.mean([0.9, 0.81, 0.82]))
    assert row["status"] == "3 completed, 4 duplicate"
    result = runner.invoke(app, ["compare", str(first), str(second), "-f", "csv"])
    warnings = [line for line in result.stderr.splitlines() if "duplicate" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: 4 duplicate runs not counted")
    assert str(newer) in warnings[0]


def test_runs_are_found_at_any_depth_and_missing_sweep_runs_are_named(study: Path):
    runs = load_runs([study])
    assert len(runs) == 5 + 5 + 4 + 1
    (study / "a" / "sweep.json").write_text(
        json.dumps({"runs": [{"folder": "gone-1"}], "history": [{"runs": [{"folder": "gone-0"}]}]})
    )
    runs = load_runs([study])
    assert len(runs) == 15
    assert sorted(runs.attrs["skipped"]) == [
        f"{study / 'a' / 'gone-0'} (listed in sweep.json, not found)",
        f"{study / 'a' / 'gone-1'} (listed in sweep.json, not found)",
    ]


def test_the_study_side_never_imports_torch(study: Path):
    code = (
        "import sys\nfrom gradlab.cli import app\n"
        f"try:\n    app(['compare', {str(study)!r}, '--baseline', 'baseline', '--power'])\n"
        "except SystemExit:\n    pass\n"
        "import gradlab.study.compare, gradlab.study.baseline, gradlab.study.stats, gradlab.identity, gradlab.study.exports, gradlab.study.inspection\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_selectors_compare_numbers_as_numbers_and_names_and_paths_as_given(study: Path):
    for spec in ("optim.lr=5e-1", "optim.lr=0.50", "optim.lr=.5"):
        assert rows_by_name(comparison([study], baseline=spec))["sign"]["test"] == "baseline"
    folder = next((study / "a").glob("clip-*"))
    for spec in (str(folder), str(folder.resolve()) + "/", folder.name):
        assert rows_by_name(comparison([study], baseline=spec))["clip"]["test"] == "baseline"
    fake_run(study / "a", "other-name", 9, 0.81)  # joins the baseline experiment
    table = comparison([study], baseline="baseline")
    (row,) = table[table["test"] == "baseline"].to_dict("records")
    assert row["name"] == "baseline|other-name" and row["n"] == 6


def test_ungrouped_ambiguity_names_seeds_and_folders(study: Path):
    result = runner.invoke(app, ["compare", str(study), "--no-group", "--baseline", "clip"])
    assert result.exit_code == 2
    assert "seed=0, run=clip-" in result.stderr and "name one run folder" in result.stderr


def test_a_group_without_completed_runs_is_never_tested(tmp_path: Path):
    for seed in (0, 1, 2):
        fake_run(tmp_path, "ok", seed, 0.8 + seed / 100)
        fake_run(tmp_path, "dead", seed, math.nan, config={"optim": {"lr": 9.0}}, status="diverged")
    table = comparison([tmp_path], baseline="dead")
    rows = rows_by_name(table)
    assert math.isnan(rows["dead"]["delta.final_test_accuracy"])
    assert rows["ok"]["test"] is None or math.isnan(rows["ok"]["test"])
    assert math.isnan(rows["ok"]["p_value"])
    result = runner.invoke(
        app, ["compare", str(tmp_path), "--baseline", "dead"], env={"COLUMNS": "250"}
    )
    assert "the baseline has no completed run" in result.stdout
    rows = rows_by_name(comparison([tmp_path], baseline="ok"))
    assert rows["dead"]["n"] == 0 and rows["dead"]["status"] == "diverged"
    assert rows["dead"]["test"] is None or math.isnan(rows["dead"]["test"])


def test_a_failed_seed_drops_its_pair_instead_of_unpairing_the_arms(tmp_path: Path):
    for seed, value in enumerate(BASE):
        fake_run(tmp_path, "base", seed, value)
    for seed, value in enumerate(CLIP):
        status = "diverged" if seed == 2 else "completed"
        fake_run(tmp_path, "clip", seed, value, config={"optim": {"lr": 0.2}}, status=status)
    clip = rows_by_name(comparison([tmp_path], baseline="base"))["clip"]
    kept = [0, 1, 3, 4]
    reference = sps.ttest_rel([CLIP[s] for s in kept], [BASE[s] for s in kept])
    assert clip["test"] == "paired" and clip["n_pairs"] == 4
    assert clip["p_value"] == pytest.approx(reference.pvalue)


def test_level_and_counts_are_written_exactly(study: Path):
    result = runner.invoke(app, ["compare", str(study), "--ci", "0.999"], env={"COLUMNS": "250"})
    assert "99.9% confidence interval" in result.stdout
    out = runner.invoke(app, ["compare", str(study), "--baseline", "baseline", "-f", "json"])
    clip = next(r for r in json.loads(out.stdout) if r["name"] == "clip")
    assert clip["n_pairs"] == 5 and isinstance(clip["n_pairs"], int) and clip["n"] == 5
    assert isinstance(clip["seeds_needed"], int)
