"""gradlab.sweeps.view.describe: what ``gradlab sweep --dry-run`` prints, on hand-built
sweeps and on one planned from a small sweep file."""

from __future__ import annotations

from pathlib import Path

import yaml

from gradlab.sweeps.spec import PlannedRun, Sweep
from gradlab.sweeps.view import describe

CLIP = [{"type": "clip_norm", "max_norm": 1.0}]


def run(index: int, seed: int, hash: str, **overrides) -> PlannedRun:
    """A planned run named by its ``name`` override, as the planner names runs."""
    overrides = {**overrides, "seed": seed}
    name = overrides.setdefault("name", "s")
    return PlannedRun(index=index, name=name, seed=seed, overrides=overrides, config={}, hash=hash)


def test_a_sweep_where_one_key_varies():
    sweep = Sweep(
        name="s",
        source="s.yaml",
        shape="1 entry x 2 grid points x 1 seed",
        runs=[
            run(0, 0, "h1", name="s-lr=0.1", **{"optim.lr": 0.1, "model.hidden": 16}),
            run(1, 0, "h2", name="s-lr=0.5", **{"optim.lr": 0.5, "model.hidden": 16}),
        ],
    )
    assert describe(sweep) == (
        "# 2 runs = 1 entry x 2 grid points x 1 seed; 2 experiments\n"
        "# varies: optim.lr\n"  # model.hidden is the same in every run
        "   0  s-lr=0.1  seed 0    optim.lr=0.1\n"
        "   1  s-lr=0.5  seed 0    optim.lr=0.5\n"
    )


def test_the_folder_is_named_in_the_header():
    sweep = Sweep(name="s", source="s.yaml", shape="1 entry x 1 grid point x 1 seed")
    sweep.runs = [run(0, 0, "h")]
    header = describe(sweep, Path("runs") / "s").splitlines()[0]
    assert header == "# 1 runs = 1 entry x 1 grid point x 1 seed; 1 experiments -> runs/s/"


def test_seeds_vary_and_experiments_count_hashes():
    sweep = Sweep(
        name="s",
        source="s.yaml",
        shape="2 entries x 1 grid point x 2 seeds",
        runs=[
            run(0, 0, "h1", name="sgd", edit=[]),
            run(1, 1, "h1", name="sgd", edit=[]),
            run(2, 0, "h2", name="clip", edit=CLIP),
            run(3, 1, "h2", name="clip", edit=CLIP),
        ],
    )
    assert describe(sweep).splitlines() == [
        "# 4 runs = 2 entries x 1 grid point x 2 seeds; 2 experiments",
        "# varies: edit, seed",
        "   0  sgd   seed 0    edit=[]",
        "   1  sgd   seed 1    edit=[]",
        '   2  clip  seed 0    edit=[{"type": "clip_norm", "max_norm": 1.0}]',
        '   3  clip  seed 1    edit=[{"type": "clip_norm", "max_norm": 1.0}]',
    ]


def test_nothing_varies():
    sweep = Sweep(
        name="s",
        source="s.yaml",
        shape="1 entry x 1 grid point x 1 seed",
        runs=[run(7, 3, "h", **{"optim.lr": 0.1})],
    )
    # no values to show: the line ends at the seed, without trailing spaces
    assert describe(sweep) == (
        "# 1 runs = 1 entry x 1 grid point x 1 seed; 1 experiments\n"
        "# varies: nothing\n"
        "   7  s  seed 3\n"
    )


def test_an_empty_sweep():
    sweep = Sweep(name="s", source="s.yaml", shape="0 entries")
    assert describe(sweep) == "# 0 runs = 0 entries; 0 experiments\n# varies: nothing\n"


def test_a_grid_point_inside_a_varying_key_is_shown_in_it():
    """``edit`` and ``edit.0.max_norm`` both vary: the line shows the whole edit list with
    the grid point applied, once."""
    sweep = Sweep(
        name="s",
        source="s.yaml",
        shape="entries x grid points x seeds: sgd 1x1, clip 2x1",
        runs=[
            run(0, 0, "h1", name="sgd", edit=[]),
            run(1, 0, "h2", name="clip-max_norm=0.25", edit=CLIP, **{"edit.0.max_norm": 0.25}),
            run(2, 0, "h3", name="clip-max_norm=4", edit=CLIP, **{"edit.0.max_norm": 4.0}),
        ],
    )
    assert describe(sweep).splitlines()[1:] == [
        "# varies: edit",
        "   0  sgd                 seed 0    edit=[]",
        '   1  clip-max_norm=0.25  seed 0    edit=[{"type": "clip_norm", "max_norm": 0.25}]',
        '   2  clip-max_norm=4     seed 0    edit=[{"type": "clip_norm", "max_norm": 4.0}]',
    ]
    assert sweep.runs[1].overrides["edit"] == CLIP  # the overrides are not changed


def test_a_key_only_some_runs_set_varies_and_is_left_out_where_unset():
    sweep = Sweep(
        name="s",
        source="s.yaml",
        shape="2 entries x 1 grid point x 1 seed",
        runs=[
            run(0, 0, "h1", name="a", **{"model.activation": "tanh"}),
            run(1, 0, "h2", name="b", **{"model.hidden": 8}),
        ],
    )
    assert describe(sweep).splitlines()[1:] == [
        "# varies: model.activation, model.hidden",  # in the order they first appear
        '   0  a  seed 0    model.activation="tanh"',
        "   1  b  seed 0    model.hidden=8",
    ]


def test_large_indices_and_seeds_keep_the_columns():
    sweep = Sweep(
        name="s",
        source="s.yaml",
        shape="x",
        runs=[
            run(9, 12345, "h1", name="a", **{"optim.lr": 1}),
            run(1234, 2, "h2", name="bbbb", **{"optim.lr": 2}),
        ],
    )
    assert describe(sweep).splitlines()[2:] == [
        "   9  a     seed 12345 optim.lr=1",
        "1234  bbbb  seed 2    optim.lr=2",
    ]


# --------------------------------------------------------------------------- from a file


def write_sweep(folder: Path) -> Path:
    path = folder / "study.yaml"
    sweep = {
        "name": "study",
        "base": {
            "data": {"name": "mnist-sample"},
            "model": {"hidden": 16},
            "optim": {"max_steps": 4},
        },
        "list": [{"name": "sgd", "edit": []}, {"name": "clip", "edit": CLIP}],
        "grid": {"optim.lr": [0.1, 0.5]},
        "seeds": [0, 1],
    }
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def test_describe_a_planned_sweep(tmp_path: Path):
    from gradlab.sweeps.plan import load_sweep

    sweep = load_sweep(write_sweep(tmp_path))
    clip = 'edit=[{"type": "clip_norm", "max_norm": 1.0}]'
    assert describe(sweep, tmp_path / "runs" / "study") == (
        f"# 8 runs = 2 entries x 2 grid points x 2 seeds; 4 experiments -> {tmp_path}/runs/study/\n"
        "# varies: edit, optim.lr, seed\n"
        "   0  sgd-lr=0.1   seed 0    edit=[] optim.lr=0.1\n"
        "   1  sgd-lr=0.1   seed 1    edit=[] optim.lr=0.1\n"
        "   2  sgd-lr=0.5   seed 0    edit=[] optim.lr=0.5\n"
        "   3  sgd-lr=0.5   seed 1    edit=[] optim.lr=0.5\n"
        f"   4  clip-lr=0.1  seed 0    {clip} optim.lr=0.1\n"
        f"   5  clip-lr=0.1  seed 1    {clip} optim.lr=0.1\n"
        f"   6  clip-lr=0.5  seed 0    {clip} optim.lr=0.5\n"
        f"   7  clip-lr=0.5  seed 1    {clip} optim.lr=0.5\n"
    )


def test_describe_a_planned_sweep_with_command_line_options(tmp_path: Path):
    from gradlab.sweeps.plan import load_sweep

    sweep = load_sweep(write_sweep(tmp_path), sets=["model.hidden=32"], seeds="3")
    lines = describe(sweep).splitlines()
    assert lines[:2] == [
        "# 4 runs = 2 entries x 2 grid points x 1 seed; 4 experiments",
        "# varies: edit, optim.lr",  # one seed, and --set is the same for every run
    ]
    assert lines[2] == "   0  sgd-lr=0.1   seed 3    edit=[] optim.lr=0.1"
    assert {r.config["model"]["hidden"] for r in sweep.runs} == {32}
