"""gradlab.sweeps.syntax at the function level: comma lists, --grid options, the pieces of
run names and their 100-character rule, grid axes and seed lists.

test_study_design.py already checks plain comma lists, a list of pipelines, a quoted comma,
empty parts, the naming of 0.25 / 1e-05 / 3 / [] / true / a pipeline / "a b/c", the short
keys of edit.N.max_norm, and one long name's length; this file checks the rest."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from gradlab.errors import ConfigError
from gradlab.sweeps.syntax import (
    MAX_NAME,
    fit_name,
    grid_axes,
    name_hash,
    parse_grid_option,
    run_name,
    seed_list,
    short_keys,
    split_values,
    value_text,
)

# --------------------------------------------------------------------------- split_values


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(1,2),3", ["(1,2)", 3]),  # parentheses keep their commas
        ("{a: 1, b: 2},[2, 3]", [{"a": 1, "b": 2}, [2, 3]]),
        ("[[1, 2], [3]],[]", [[[1, 2], [3]], []]),  # nested brackets
        ('"a,b",c', ["a,b", "c"]),  # double quotes too
        ("'[',x", ["[", "x"]),  # a bracket inside quotes does not open
        ("'it''s,x',y", ["it's,x", "y"]),  # YAML's doubled single quote
        (" 0.1 , 0.5 ", [0.1, 0.5]),  # spaces around values do not matter
        ("true,null,x,7", [True, None, "x", 7]),  # each part is YAML
        ("relu", ["relu"]),
        ("choicex(1)", ["choicex(1)"]),  # not one of Hydra's sweeps
    ],
)
def test_split_values(text: str, expected: list):
    assert split_values(text, "w") == expected


def test_an_escaped_double_quote_does_not_end_the_quote():
    assert split_values('"a\\",b",c', "w") == ['a",b', "c"]


@pytest.mark.parametrize("text", ["[1,2", "'a,b", '"a', "]", "{a: 1", "(1,2"])
def test_an_unmatched_quote_or_bracket(text: str):
    with pytest.raises(ConfigError) as info:
        split_values(text, "--grid x")
    assert str(info.value) == f"--grid x: an unmatched quote or bracket in {text!r}"


@pytest.mark.parametrize("function", ["choice", "range", "interval", "glob", "tag"])
def test_hydra_sweeps_are_refused_with_a_hint(function: str):
    with pytest.raises(ConfigError) as info:
        split_values(f"  {function}(0.1, 0.5)", "--grid optim.lr")
    assert str(info.value) == (
        f"--grid optim.lr: Hydra's {function}(...) is not supported; list the values, e.g. 0.1,0.5"
    )


def test_a_part_that_is_not_yaml_names_where():
    with pytest.raises(ConfigError, match=r"^grid\.x: invalid YAML at line 1"):
        split_values("0.1,a: b: c", "grid.x")


# --------------------------------------------------------------------------- parse_grid_option


def test_parse_grid_option():
    assert parse_grid_option("optim.lr=0.1,0.5") == ("optim.lr", [0.1, 0.5])
    assert parse_grid_option(" model.hidden =8") == ("model.hidden", [8])
    # only the first `=` separates the key: later ones belong to the values
    assert parse_grid_option("name=a=b,c") == ("name", ["a=b", "c"])
    assert parse_grid_option("edit=[],[{type: agc}]") == ("edit", [[], [{"type": "agc"}]])


@pytest.mark.parametrize("item", ["optim.lr", "=0.1", " =0.1", "optim.lr=", "optim.lr=  "])
def test_parse_grid_option_needs_a_key_and_values(item: str):
    with pytest.raises(ConfigError) as info:
        parse_grid_option(item)
    assert str(info.value) == (
        f"--grid {item!r}: expected KEY=VALUE1,VALUE2,..., e.g. optim.lr=0.1,0.5"
    )


def test_parse_grid_option_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"^--grid optim.lr: Hydra's range\(...\)"):
        parse_grid_option("optim.lr=range(1,3)")
    with pytest.raises(ConfigError, match="^--grid optim.lr: expected values separated"):
        parse_grid_option("optim.lr=0.1,")


# --------------------------------------------------------------------------- value_text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "null"),
        (False, "false"),
        (1.0, "1"),
        (-0.5, "-0.5"),
        (1e6, "1e+06"),
        (1e20, "1e+20"),
        (0.1234567, "0.1234567"),  # %g would say 0.123457
        (0.1234568, "0.1234568"),  # and the same for this one
        (float("inf"), "inf"),
        (2**70, "1180591620717411303424"),
        ({"type": "noise"}, "noise"),
        ({"type": "clip_norm", "max_norm": 0.25}, "clip_norm_0.25"),
        ({"a": 1, "b": "x"}, "1_x"),  # no type: the values in order
        ([[1, 2], [3]], "1+2+3"),
        ([{"type": "agc"}, []], "agc+none"),
        ("adam/w", "adam_w"),
        ("a  b", "a_b"),  # a run of other characters is one _
        ("__x__", "x"),  # no leading or trailing _
        ("", "_"),
        ("é", "_"),  # never empty
        ("a.b=c+d-e", "a.b=c+d-e"),  # the characters a name may keep
    ],
)
def test_value_text(value, text: str):
    assert value_text(value) == text


def test_value_text_is_safe_in_a_folder_name():
    for value in ["../../etc", "a\0b", "tab\there", {"type": "x/y", "p": [1, "..\\z"]}]:
        assert re.fullmatch(r"[A-Za-z0-9._=+-]+", value_text(value)), value
        assert "/" not in value_text(value) and "\\" not in value_text(value)


# --------------------------------------------------------------------------- short_keys


def test_short_keys():
    assert short_keys([]) == {}
    assert short_keys(["optim.lr", "model.hidden", "seed"]) == {
        "optim.lr": "lr",
        "model.hidden": "hidden",
        "seed": "seed",
    }
    # two sections with the same last part: both whole, a third stays short
    assert short_keys(["optim.lr", "privacy.lr", "model.hidden"]) == {
        "optim.lr": "optim.lr",
        "privacy.lr": "privacy.lr",
        "model.hidden": "hidden",
    }
    # a list index keeps its list; an index alone stays as it is
    assert short_keys(["a.edit.0", "b.edit.0", "0"]) == {
        "a.edit.0": "a.edit.0",
        "b.edit.0": "b.edit.0",
        "0": "0",
    }


# --------------------------------------------------------------------------- names


def test_run_name_without_varying_keys_is_the_entry_name():
    assert run_name("sgd", {}) == "sgd"


def test_run_name_keeps_the_order_of_the_keys():
    varying = {"optim.lr": 0.5, "model.hidden": 16, "edit": [{"type": "agc"}]}
    assert run_name("s", varying) == "s-lr=0.5-hidden=16-edit=agc"
    assert run_name("s", dict(reversed(varying.items()))) == "s-edit=agc-hidden=16-lr=0.5"


def reference_hash(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:6]


def test_name_hash_is_stable():
    assert name_hash("x") == "cd65ea"  # a rename would orphan existing sweep folders
    assert name_hash(1, {"a": 1}) == reference_hash(1, {"a": 1}) == "7bb31c"
    assert name_hash(1, {"b": 2, "a": 1}) == name_hash(1, {"a": 1, "b": 2})  # key order
    assert re.fullmatch(r"[0-9a-f]{6}", name_hash(object()))  # anything, through str()
    assert name_hash("x") != name_hash("y") != name_hash("x", "y")


def test_fit_name_leaves_names_of_up_to_100_characters():
    assert MAX_NAME == 100
    for length in (1, 99, 100):
        assert fit_name("n" * length) == "n" * length


def test_fit_name_cuts_a_long_name_to_93_characters_and_a_hash():
    name = "a" * 101
    assert fit_name(name) == "a" * 93 + "-" + reference_hash(name)
    assert fit_name(name) == "a" * 93 + "-33468d"
    assert len(fit_name("b" * 5000)) == 100
    assert fit_name(name) == fit_name(name)  # stable


def test_long_names_that_share_their_start_stay_distinct():
    entry = "x" * 96  # with "-lr=2", 101 characters
    names = {run_name(entry, {"optim.lr": lr}) for lr in (0.5, 0.25, 0.125, 2)}
    assert len(names) == 4
    for name in names:
        assert len(name) == 100 and name.startswith("x" * 93 + "-")
    assert run_name(entry, {"optim.lr": 0.5}) == fit_name(entry + "-lr=0.5")
    assert run_name("x" * 95, {"optim.lr": 2}) == "x" * 95 + "-lr=2"  # 100: kept whole
    assert run_name(entry, {"optim.lr": 0.5}).endswith("-" + reference_hash(entry + "-lr=0.5"))


# --------------------------------------------------------------------------- grid_axes


def test_grid_axes():
    assert grid_axes(None, "f: grid") == {}
    assert grid_axes({}, "f: grid") == {}
    assert grid_axes(
        {"optim.lr": "0.1,0.5", "edit": [[], [{"type": "agc"}]], 7: ["x"]}, "f: grid"
    ) == {"optim.lr": [0.1, 0.5], "edit": [[], [{"type": "agc"}]], "7": ["x"]}
    assert grid_axes({"model.activation": "relu"}, "f: grid") == {"model.activation": ["relu"]}


@pytest.mark.parametrize("value", [[1, 2], "optim.lr=0.1", 3])
def test_grid_axes_needs_a_mapping(value):
    with pytest.raises(ConfigError) as info:
        grid_axes(value, "f: grid")
    assert str(info.value) == "f: grid: expected a mapping of key: [values]"


@pytest.mark.parametrize(
    ("values", "shown"),
    [([], "[]"), (None, "None"), (5, "5"), ({"a": 1}, "{'a': 1}")],
)
def test_every_axis_is_a_non_empty_list(values, shown: str):
    with pytest.raises(ConfigError) as info:
        grid_axes({"optim.lr": values}, "f: grid")
    assert str(info.value) == (
        f"f: grid.optim.lr: expected a non-empty list of values (or 'v1,v2,...'), got {shown}"
    )


def test_a_comma_string_axis_is_checked_as_one():
    with pytest.raises(ConfigError, match=r"^f: grid\.optim\.lr: expected values separated"):
        grid_axes({"optim.lr": "0.1,,0.5"}, "f: grid")
    with pytest.raises(ConfigError, match=r"^f: grid\.optim\.lr: Hydra's choice"):
        grid_axes({"optim.lr": "choice(0.1,0.5)"}, "f: grid")


def test_a_long_key_is_cut_in_the_error():
    with pytest.raises(ConfigError) as info:
        grid_axes({"k" * 500: []}, "f: grid")
    assert str(info.value).startswith("f: grid." + "k" * 100 + ": expected")
    assert "k" * 101 not in str(info.value)


# --------------------------------------------------------------------------- seed_list


def test_seed_list():
    assert seed_list(None, "f: seeds") is None
    assert seed_list([3], "f: seeds") == [3]
    assert seed_list([2, 0, 1], "f: seeds") == [2, 0, 1]  # the order is kept
    assert seed_list("0,1,2", "f: seeds") == [0, 1, 2]
    assert seed_list("5", "--seeds") == [5]


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ([], "[]"),
        ([-1], "[-1]"),
        ([True], "[True]"),  # a boolean is not a seed
        ([1.0], "[1.0]"),
        ([0, "1"], "[0, '1']"),
        ("a", "['a']"),  # a comma string is shown as the list it became
        (5, "5"),  # a number, not a list
        ({"a": 1}, "{'a': 1}"),
    ],
)
def test_seed_list_needs_whole_numbers(value, shown: str):
    with pytest.raises(ConfigError) as info:
        seed_list(value, "f: seeds")
    assert str(info.value) == f"f: seeds: expected a list of whole numbers >= 0, got {shown}"


def test_each_seed_once():
    with pytest.raises(ConfigError) as info:
        seed_list([2, 1, 2, 1, 3], "f: seeds")
    assert str(info.value) == "f: seeds: [1, 2] appear more than once; list each seed once"
    with pytest.raises(ConfigError, match=r"^--seeds: \[0\] appear more than once"):
        seed_list("0,0", "--seeds")


def test_seed_list_comma_errors_name_where():
    with pytest.raises(ConfigError, match="^--seeds: expected values separated by commas"):
        seed_list("0,", "--seeds")
