"""gradlab.sweeps.checks on hand-built sweeps: the one-line summary of invalid runs, index
ranges, runs that repeat another, and names shared by different experiments."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradlab.errors import ConfigError
from gradlab.sweeps.checks import check_names, check_no_duplicates, grouped_problems, ranges
from gradlab.sweeps.spec import PlannedRun, Sweep

PATH = Path("sweeps/s.yaml")


def planned(index: int, name: str, seed: int, hash: str) -> PlannedRun:
    return PlannedRun(
        index=index, name=name, seed=seed, overrides={"name": name}, config={}, hash=hash
    )


def sweep_of(*runs: tuple[str, int, str]) -> Sweep:
    """A sweep of runs given as (name, seed, hash), indexed in order."""
    return Sweep(
        name="s",
        source=str(PATH),
        runs=[planned(i, name, seed, h) for i, (name, seed, h) in enumerate(runs)],
    )


# --------------------------------------------------------------------------- ranges


@pytest.mark.parametrize(
    ("numbers", "text"),
    [
        ([], ""),
        ([3], "3"),
        ([7, 8], "7-8"),
        ([0, 1, 2, 5], "0-2, 5"),
        ([5, 0, 2, 1], "0-2, 5"),  # in any order
        ([1, 3, 5], "1, 3, 5"),
        ([0, 1, 3, 4, 5, 9, 10], "0-1, 3-5, 9-10"),
    ],
)
def test_ranges(numbers: list[int], text: str):
    assert ranges(numbers) == text


# --------------------------------------------------------------------------- grouped_problems


def test_one_problem_of_one_run():
    assert grouped_problems([("optim.lr: must be > 0", 3, "a")]) == (
        "optim.lr: must be > 0 (run 3: a)"
    )


def test_a_problem_shared_by_runs_is_said_once():
    problems = [("bad lr", 0, "a"), ("bad lr", 1, "a"), ("bad lr", 2, "b")]
    # the two seeds of run a name it once
    assert grouped_problems(problems) == "bad lr (runs 0-2: a, b)"


def test_more_than_three_names_are_counted():
    problems = [("bad", i, name) for i, name in enumerate("abcde")]
    assert grouped_problems(problems) == "bad (runs 0-4: a, b, c and 2 more)"


def test_problems_keep_their_first_order_and_more_than_three_are_counted():
    problems = [
        ("second", 1, "b"),
        ("first", 0, "a"),
        ("second", 4, "e"),
        ("third", 2, "c"),
        ("fourth", 3, "d"),
        ("fifth", 5, "f"),
    ]
    assert grouped_problems(problems) == (
        "second (runs 1, 4: b, e); first (run 0: a); third (run 2: c); and 2 more problems"
    )


def test_exactly_three_problems_are_all_shown():
    problems = [("x", 0, "a"), ("y", 1, "b"), ("z", 2, "c")]
    assert grouped_problems(problems) == "x (run 0: a); y (run 1: b); z (run 2: c)"


# --------------------------------------------------------------------------- check_no_duplicates


def test_distinct_experiments_and_seeds_pass():
    check_no_duplicates(PATH, sweep_of(("a", 0, "h1"), ("a", 1, "h1"), ("b", 0, "h2")))
    check_no_duplicates(PATH, sweep_of())


def test_the_same_experiment_and_seed_twice_is_refused():
    sweep = sweep_of(("a", 0, "h1"), ("b", 0, "h2"), ("a2", 0, "h1"), ("b2", 0, "h2"))
    with pytest.raises(ConfigError) as info:
        check_no_duplicates(PATH, sweep)
    assert str(info.value) == (
        f"{PATH}: 2 runs repeat another run (the same experiment and seed, see 'What counts "
        "as the same experiment'): run 2 (a2) = run 0 (a); run 3 (b2) = run 1 (b)"
    )


def test_one_repeat_is_said_in_the_singular():
    with pytest.raises(ConfigError) as info:
        check_no_duplicates(PATH, sweep_of(("a", 0, "h"), ("b", 0, "h")))
    assert ": 1 run repeats another run (" in str(info.value)


def test_every_repeat_names_the_first_run():
    sweep = sweep_of(("a", 0, "h"), ("b", 0, "h"), ("c", 0, "h"), ("d", 1, "h"))
    with pytest.raises(
        ConfigError,
        match=r": 2 runs repeat another run .*: run 1 \(b\) = run 0 "
        r"\(a\); run 2 \(c\) = run 0 \(a\)$",
    ):
        check_no_duplicates(PATH, sweep)


def test_more_than_five_repeats_are_counted():
    sweep = sweep_of(*[(f"r{i}", 0, "h") for i in range(8)])
    with pytest.raises(ConfigError) as info:
        check_no_duplicates(PATH, sweep)
    message = str(info.value)
    assert ": 7 runs repeat another run" in message
    assert message.endswith("run 5 (r5) = run 0 (r0); and 2 more")
    assert "run 6 (r6)" not in message


# --------------------------------------------------------------------------- check_names


def test_one_name_for_the_seeds_of_one_experiment_passes():
    check_names(PATH, sweep_of(("a", 0, "h1"), ("a", 1, "h1"), ("b", 0, "h2")))
    check_names(PATH, sweep_of())


def test_one_name_for_two_experiments_is_refused():
    sweep = sweep_of(("a", 0, "h1"), ("a", 1, "h1"), ("a", 0, "h2"), ("a", 0, "h3"))
    with pytest.raises(ConfigError) as info:
        check_names(PATH, sweep)
    assert str(info.value) == (
        f"{PATH}: 1 name would be shared by different experiments: run 0 and run 2 are both "
        "named 'a'; give each list entry its own name, or leave the name out of --set and the "
        "grid (runs are then named by what varies)"
    )


def test_two_shared_names():
    sweep = sweep_of(("a", 0, "h1"), ("b", 0, "h2"), ("b", 0, "h3"), ("a", 0, "h4"))
    with pytest.raises(ConfigError) as info:
        check_names(PATH, sweep)
    assert str(info.value).startswith(
        f"{PATH}: 2 names would be shared by different experiments: run 1 and run 2 are both "
        "named 'b'; run 0 and run 3 are both named 'a'; give each"
    )


def test_more_than_five_shared_names_are_counted():
    runs = [(f"n{i}", 0, f"h{i}{j}") for i in range(7) for j in range(2)]
    with pytest.raises(ConfigError) as info:
        check_names(PATH, sweep_of(*runs))
    message = str(info.value)
    assert ": 7 names would be shared" in message
    assert "run 8 and run 9 are both named 'n4'; and 2 more; give each" in message
    assert "'n5'" not in message


def test_names_and_duplicates_are_separate_questions():
    """The same experiment and seed under two names is a repeat, not a shared name."""
    sweep = sweep_of(("a", 0, "h"), ("b", 0, "h"))
    check_names(PATH, sweep)
    with pytest.raises(ConfigError, match="1 run repeats another run"):
        check_no_duplicates(PATH, sweep)
