"""gradlab.registry.Registry on its own: classes by name in registration order, duplicate
and empty names refused, unknown names answered with the valid ones."""

from __future__ import annotations

import pytest

from gradlab.registry import Registry


def named(name):
    """A fresh class whose ``name`` is ``name``."""
    return type(f"Thing_{name}", (), {"name": name})


@pytest.fixture
def registry() -> Registry:
    return Registry("edit strategy", "edit type", "types")


def test_register_returns_the_class_and_get_finds_it(registry: Registry):
    clip = named("clip")
    assert registry.register(clip) is clip  # usable as a decorator
    assert registry.get("clip") is clip


def test_works_as_a_class_decorator(registry: Registry):
    @registry.register
    class Noise:
        name = "noise"

    assert registry.get("noise") is Noise
    assert registry.names() == ["noise"]


def test_names_and_all_keep_registration_order(registry: Registry):
    classes = [named(n) for n in ("zeta", "alpha", "mid")]
    for cls in classes:
        registry.register(cls)
    assert registry.names() == ["zeta", "alpha", "mid"]  # not sorted
    assert list(registry.all()) == ["zeta", "alpha", "mid"]
    assert list(registry.all().values()) == classes


def test_an_empty_registry(registry: Registry):
    assert registry.names() == [] and registry.all() == {}
    with pytest.raises(KeyError) as info:
        registry.get("x")
    assert info.value.args[0] == "unknown edit type 'x'; valid types: "


def test_a_duplicate_name_is_refused_and_the_first_class_kept(registry: Registry):
    first = named("clip")
    registry.register(first)
    with pytest.raises(ValueError) as info:
        registry.register(named("clip"))
    assert str(info.value) == "edit strategy name 'clip' is empty or already registered"
    assert registry.get("clip") is first
    assert registry.names() == ["clip"]


def test_the_same_class_twice_is_a_duplicate(registry: Registry):
    cls = named("clip")
    registry.register(cls)
    with pytest.raises(ValueError, match="already registered"):
        registry.register(cls)


@pytest.mark.parametrize("name", ["", None])
def test_an_empty_name_is_refused(registry: Registry, name):
    with pytest.raises(ValueError) as info:
        registry.register(named(name))
    assert str(info.value) == f"edit strategy name {name!r} is empty or already registered"
    assert registry.names() == []


def test_an_unknown_name_lists_the_valid_ones_in_registration_order(registry: Registry):
    for n in ("zeta", "alpha", "mid"):
        registry.register(named(n))
    with pytest.raises(KeyError) as info:
        registry.get("nope")
    # KeyError's str() quotes its argument: the message itself is args[0]
    assert info.value.args[0] == "unknown edit type 'nope'; valid types: zeta, alpha, mid"
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_the_words_of_the_errors_come_from_the_constructor():
    optimizers = Registry("optimizer", "optimizer", "optimizers")
    optimizers.register(named("sgd"))
    with pytest.raises(KeyError) as info:
        optimizers.get("adamax")
    assert info.value.args[0] == "unknown optimizer 'adamax'; valid optimizers: sgd"
    with pytest.raises(ValueError, match=r"^optimizer name 'sgd' is empty"):
        optimizers.register(named("sgd"))


def test_names_are_exact(registry: Registry):
    registry.register(named("clip"))
    for other in ("Clip", "clip ", "cli"):
        with pytest.raises(KeyError):
            registry.get(other)


def test_all_and_names_return_copies(registry: Registry):
    clip = named("clip")
    registry.register(clip)
    everything = registry.all()
    everything["intruder"] = named("intruder")
    del everything["clip"]
    names = registry.names()
    names.append("intruder")
    assert registry.all() == {"clip": clip}
    assert registry.names() == ["clip"]
    with pytest.raises(KeyError):
        registry.get("intruder")


def test_registries_are_independent():
    edits = Registry("edit strategy", "edit type", "types")
    optimizers = Registry("optimizer", "optimizer", "optimizers")
    edits.register(named("sgd"))
    optimizers.register(named("sgd"))  # the same name in another registry is fine
    assert edits.names() == optimizers.names() == ["sgd"]
    assert edits.get("sgd") is not optimizers.get("sgd")
