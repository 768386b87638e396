"""gradlab.yamlfile at the function level: which files are opened at all, the size and
encoding checks, the error class a caller asks for, the YAML limits and loader rules, and
error messages that never quote the file.

test_config.py checks the depth limit on lists, the value limit on one long list, an alias
bomb, a mapping that holds its own alias, a top-level duplicate and a merge; the system
tests go through the CLI. What is here is what those leave out."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import pytest

from gradlab.errors import ConfigError, DataError, GradlabError, RunFolderError
from gradlab.yamlfile import (
    MAX_CONFIG_BYTES,
    MAX_YAML_DEPTH,
    MAX_YAML_VALUES,
    key_text,
    load_yaml,
    open_regular_file,
    read_small_text_file,
)

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
needs_dev_null = pytest.mark.skipif(not os.path.exists("/dev/null"), reason="no /dev/null")


@pytest.fixture
def no_hang():
    """Fail (instead of hanging the suite) if the code under test blocks: opening a FIFO
    for reading without O_NONBLOCK waits for a writer forever."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum, frame):
        raise AssertionError("blocked: the call did not return")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(10)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# --------------------------------------------------------------------------- open_regular_file


def test_a_regular_file_is_opened_for_binary_reading(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"seed: 1\n\xff")
    with open_regular_file(path) as file:
        assert file.read() == b"seed: 1\n\xff"  # bytes as they are: no decoding here
        assert file.mode == "rb"


def test_no_size_limit_unless_one_is_given(tmp_path: Path):
    path = tmp_path / "big"
    path.write_bytes(b"x" * 5000)
    with open_regular_file(path) as file:
        assert len(file.read()) == 5000
    with open_regular_file(path, max_bytes=5000) as file:  # the limit itself is allowed
        assert len(file.read()) == 5000
    with pytest.raises(ConfigError) as info:
        open_regular_file(path, max_bytes=4999)
    assert str(info.value) == (
        f"{path}: 5,000 bytes, more than the 4,999 allowed (gradlab.yamlfile.MAX_CONFIG_BYTES); "
        "check that this is the right file, and split a large sweep into several files"
    )


@needs_fifo
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path, no_hang):
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError) as info:
        open_regular_file(fifo)
    assert str(info.value) == (
        f"{fifo}: is a named pipe, not a regular file; save the contents to a file"
    )
    with pytest.raises(ConfigError, match="is a named pipe"):
        read_small_text_file(fifo)


@needs_fifo
def test_a_symlink_to_a_fifo_is_refused(tmp_path: Path, no_hang):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "config.yaml"
    link.symlink_to(fifo)
    with pytest.raises(ConfigError, match=r"config\.yaml: is a named pipe"):
        open_regular_file(link)


@needs_fifo
def test_the_opened_file_is_checked_again(tmp_path: Path, monkeypatch, no_hang):
    """The path may name another file between the check and the open: what was opened is
    checked too, and closed when refused."""
    import gradlab.yamlfile as yamlfile

    fifo = tmp_path / "swapped"
    os.mkfifo(fifo)
    regular = tmp_path / "regular"
    regular.write_text("x")
    real_stat = os.stat
    monkeypatch.setattr(
        yamlfile.os, "stat", lambda p, *a, **k: real_stat(regular if p == fifo else p, *a, **k)
    )
    opened = []
    real_fdopen = os.fdopen

    def fdopen(fd, *args, **kwargs):
        opened.append(real_fdopen(fd, *args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(yamlfile.os, "fdopen", fdopen)
    with pytest.raises(ConfigError, match="is a named pipe, not a regular file"):
        open_regular_file(fifo)
    assert len(opened) == 1 and opened[0].closed


@needs_dev_null
def test_a_character_device_is_refused():
    with pytest.raises(ConfigError) as info:
        open_regular_file(Path("/dev/null"))
    assert str(info.value) == (
        "/dev/null: is a character device, not a regular file; save the contents to a file"
    )


def test_a_folder_is_refused(tmp_path: Path):
    with pytest.raises(ConfigError) as info:
        open_regular_file(tmp_path)
    assert str(info.value) == f"{tmp_path}: is a folder, expected a file"
    link = tmp_path / "link"
    link.symlink_to(tmp_path / ".", target_is_directory=True)
    with pytest.raises(ConfigError, match="is a folder"):
        read_small_text_file(link)


def test_a_missing_file(tmp_path: Path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        open_regular_file(missing)
    assert str(info.value) == f"{missing}: no such file"
    assert info.value.__suppress_context__  # one line, not a chained traceback
    dangling = tmp_path / "dangling.yaml"
    dangling.symlink_to(missing)
    with pytest.raises(ConfigError, match="dangling.yaml: no such file"):
        read_small_text_file(dangling)


def test_a_path_that_cannot_be_opened(tmp_path: Path):
    with pytest.raises(ConfigError) as info:
        open_regular_file(Path(f"{tmp_path}/a\0b"))
    assert str(info.value).endswith(": cannot read (embedded null byte)")
    inside_a_file = tmp_path / "file"
    inside_a_file.write_text("x")
    with pytest.raises(ConfigError, match=r"cannot read \(Not a directory\)"):
        open_regular_file(inside_a_file / "c.yaml")


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads unreadable files"
)
def test_an_unreadable_file(tmp_path: Path):
    path = tmp_path / "secret.yaml"
    path.write_text("seed: 1\n")
    path.chmod(0)
    try:
        with pytest.raises(ConfigError, match=r"cannot read \(Permission denied\)"):
            open_regular_file(path)
    finally:
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)


@pytest.mark.parametrize("error", [RunFolderError, DataError, ConfigError])
def test_the_error_class_is_the_callers(tmp_path: Path, error: type[GradlabError]):
    big = tmp_path / "big"
    big.write_bytes(b"x" * 11)
    latin = tmp_path / "latin"
    latin.write_bytes(b"caf\xe9")
    calls = [
        lambda: open_regular_file(tmp_path / "missing", error=error),
        lambda: open_regular_file(tmp_path, error=error),
        lambda: open_regular_file(Path(f"{tmp_path}/nul\0"), error=error),
        lambda: open_regular_file(big, max_bytes=10, error=error),
        lambda: read_small_text_file(big, max_bytes=10, error=error),
        lambda: read_small_text_file(latin, error=error),
    ]
    if os.path.exists("/dev/null"):
        calls.append(lambda: read_small_text_file(Path("/dev/null"), error=error))
    for call in calls:
        with pytest.raises(GradlabError) as info:
            call()
        assert type(info.value) is error, info.value


# --------------------------------------------------------------------------- read_small_text_file


def test_small_text_is_decoded(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_bytes("name: café ✓\n".encode())
    assert read_small_text_file(path) == "name: café ✓\n"
    empty = tmp_path / "empty.yaml"
    empty.write_bytes(b"")
    assert read_small_text_file(empty) == ""


def test_the_size_limit_is_the_callers(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"0123456789")
    assert read_small_text_file(path, max_bytes=10) == "0123456789"
    with pytest.raises(ConfigError) as info:
        read_small_text_file(path, max_bytes=9)
    assert str(info.value).startswith(f"{path}: 10 bytes, more than the 9 allowed ")


def test_the_default_limit_is_max_config_bytes(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"#" * MAX_CONFIG_BYTES)
    assert len(read_small_text_file(path)) == MAX_CONFIG_BYTES
    path.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigError, match="1,000,001 bytes, more than the 1,000,000 allowed"):
        read_small_text_file(path)


def test_a_file_that_grows_after_the_check(tmp_path: Path, monkeypatch):
    """The size is checked on the open file, and the read takes at most one byte more
    than allowed: a file that grows meanwhile is refused, never read whole."""
    import gradlab.yamlfile as yamlfile

    path = tmp_path / "growing.yaml"
    path.write_bytes(b"x" * 100)

    def small(result: os.stat_result) -> os.stat_result:
        fields = list(result)
        fields[stat.ST_SIZE] = 5  # what the file held when it was checked
        return os.stat_result(fields)

    real_stat, real_fstat = os.stat, os.fstat
    monkeypatch.setattr(yamlfile.os, "stat", lambda p, *a, **k: small(real_stat(p, *a, **k)))
    monkeypatch.setattr(yamlfile.os, "fstat", lambda fd: small(real_fstat(fd)))
    with pytest.raises(ConfigError) as info:
        read_small_text_file(path, max_bytes=10)
    assert str(info.value) == f"{path}: more than the 10 bytes allowed"


@pytest.mark.parametrize(
    ("data", "offset"),
    [
        ("name: caf\xe9\n".encode("latin-1"), 9),
        (b"\xff\xfeseed: 1", 0),  # UTF-16's byte order mark
        ("ok ✓".encode()[:-1], 3),  # a character cut in half
    ],
)
def test_bytes_that_are_not_utf8(tmp_path: Path, data: bytes, offset: int):
    path = tmp_path / "c.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as info:
        read_small_text_file(path)
    assert str(info.value) == (
        f"{path}: not UTF-8 text (invalid byte at offset {offset}); is it a YAML file?"
    )


def test_a_binary_file_is_not_quoted(tmp_path: Path):
    path = tmp_path / "blob"
    path.write_bytes(b"token: hunter2-secret\n\x80\x81")
    with pytest.raises(ConfigError) as info:
        read_small_text_file(path)
    assert "hunter2" not in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------- load_yaml


def test_plain_documents(tmp_path: Path):
    assert load_yaml("", "f") is None
    assert load_yaml("# only a comment\n", "f") is None
    assert load_yaml("seed: 3\noptim: {lr: 0.5, betas: [0.9, 0.99]}\n", "f") == {
        "seed": 3,
        "optim": {"lr": 0.5, "betas": [0.9, 0.99]},
    }
    assert load_yaml("0.1", "--set optim.lr=0.1") == 0.1
    assert load_yaml("[1, two, null, true]", "f") == [1, "two", None, True]


def test_errors_start_with_where():
    with pytest.raises(ConfigError) as info:
        load_yaml("a: [1", "--set a=[1")
    assert str(info.value).startswith("--set a=[1: invalid YAML at line ")


def test_only_safe_tags():
    with pytest.raises(ConfigError) as info:
        load_yaml("a: !!python/object/apply:os.system [echo hi]\n", "f")
    assert str(info.value) == (
        "f: invalid YAML at line 1, column 4: could not determine a constructor for the tag (...)"
    )


def test_a_duplicate_key_in_a_nested_mapping_names_both_lines():
    text = "edit:\n  - type: clip_norm\n    max_norm: 1\n    max_norm: 2\n"
    with pytest.raises(ConfigError) as info:
        load_yaml(text, "f")
    assert str(info.value) == (
        "f: invalid YAML at line 4, column 5: duplicate key max_norm (first at line 3)"
    )


def test_the_same_key_in_different_mappings_is_not_a_duplicate():
    assert load_yaml("a: {lr: 1}\nb: {lr: 2}\nlr: 3\n", "f") == {
        "a": {"lr": 1},
        "b": {"lr": 2},
        "lr": 3,
    }


def test_keys_equal_in_python_are_duplicates_whatever_their_type():
    with pytest.raises(ConfigError, match=r"duplicate key <not a key name> \(first at line 1\)"):
        load_yaml("true: a\n1: b\n", "f")  # True == 1


def test_an_unhashable_key_is_one_error():
    with pytest.raises(ConfigError) as info:
        load_yaml("? [1, 2]\n: x\n", "f")
    assert str(info.value) == "f: invalid YAML at line 1, column 3: found unhashable key"


def test_merge_keys_are_allowed_and_may_be_overridden():
    text = (
        "small: &small {hidden: 16, activation: relu}\n"
        "fast: &fast {lr: 0.5}\n"
        "run:\n"
        "  <<: [*small, *fast]\n"
        "  hidden: 32\n"
    )
    assert load_yaml(text, "f")["run"] == {"hidden": 32, "activation": "relu", "lr": 0.5}


def test_a_merge_does_not_hide_a_real_duplicate():
    text = "b: &b {lr: 0.1}\noptim:\n  <<: *b\n  lr: 0.5\n  lr: 0.7\n"
    with pytest.raises(
        ConfigError, match=r"line 5, column 3: duplicate key lr \(first at line 4\)"
    ):
        load_yaml(text, "f")


def test_a_merge_of_a_scalar_is_an_error():
    with pytest.raises(ConfigError, match="expected a mapping or list of mappings for merging"):
        load_yaml("a: &a 1\nb: {<<: *a}\n", "f")


def nested_mappings(depth: int) -> str:
    """A block mapping ``depth`` levels deep: ``k:`` lines, each indented once more."""
    lines = [("  " * level) + "k:" for level in range(depth - 1)]
    return "\n".join(lines) + "\n" + "  " * (depth - 1) + "k: 1\n"


def test_the_depth_limit_counts_mappings_and_names_the_line():
    value = load_yaml(nested_mappings(MAX_YAML_DEPTH), "f")
    for _ in range(MAX_YAML_DEPTH - 1):
        value = value["k"]
    assert value == {"k": 1}
    with pytest.raises(ConfigError) as info:
        load_yaml(nested_mappings(MAX_YAML_DEPTH + 1), "f")
    assert str(info.value) == (
        f"f: line {MAX_YAML_DEPTH + 1}: nested more than {MAX_YAML_DEPTH} levels deep "
        "(gradlab.yamlfile.MAX_YAML_DEPTH); a config or sweep nests fewer than ten"
    )


def test_the_value_limit_counts_aliases_as_expanded():
    # values: the mapping, "a", the anchored list (1 + 8332 scalars), "b", b's list, then
    # 11 aliases of 8333 values each: 4 + 8333 * 12 = 100,000 exactly
    anchored = "a: &a [" + ", ".join(["1"] * 8332) + "]\n"
    assert 4 + 8333 * 12 == MAX_YAML_VALUES
    fits = anchored + "b: [" + ", ".join(["*a"] * 11) + "]\n"
    loaded = load_yaml(fits, "f")
    assert len(loaded["b"]) == 11 and loaded["b"][0] is loaded["a"]
    with pytest.raises(ConfigError) as info:
        load_yaml(anchored + "b: [" + ", ".join(["*a"] * 11) + ", 1]\n", "f")
    assert str(info.value) == (
        f"f: line 2: more than {MAX_YAML_VALUES:,} values once aliases are expanded "
        "(gradlab.yamlfile.MAX_YAML_VALUES); a config or sweep holds far fewer"
    )


def test_an_alias_of_a_scalar_counts_once():
    text = "a: &s x\nb: [" + ", ".join(["*s"] * (MAX_YAML_VALUES - 5)) + "]\n"
    assert len(load_yaml(text, "f")["b"]) == MAX_YAML_VALUES - 5  # 5 + the aliases: the limit
    with pytest.raises(ConfigError, match="more than 100,000 values"):
        load_yaml(text.replace("]", ", *s]"), "f")


@pytest.mark.parametrize(
    "text",
    [
        "a: &a [*a]\n",
        "a: &a {b: [1, {c: *a}]}\n",
        "- &x\n  - 1\n  - *x\n",
    ],
)
def test_an_alias_inside_its_own_anchor_is_refused(text: str):
    with pytest.raises(ConfigError) as info:
        load_yaml(text, "f")
    assert "an alias inside the node it refers to (a recursive structure)" in str(info.value)
    assert str(info.value).startswith("f: line ")


def test_an_alias_of_an_earlier_sibling_is_not_recursive():
    loaded = load_yaml("a: &a [1, 2]\nb: {c: *a, d: [*a]}\n", "f")
    assert loaded["b"] == {"c": [1, 2], "d": [[1, 2]]}


def test_an_undefined_alias():
    with pytest.raises(ConfigError, match="found undefined alias"):
        load_yaml("a: *nowhere\n", "f")


@pytest.mark.parametrize(
    ("digits", "reason"),
    [("!!int " + "7" * 5000, "too many digits"), ("!!int abc", "not a valid int value")],
)
def test_values_that_cannot_be_converted(digits: str, reason: str):
    with pytest.raises(ConfigError) as info:
        load_yaml(f"seed: {digits}\n", "f")
    assert (
        str(info.value) == f"f: invalid YAML at line 1, column 7: cannot convert a value ({reason})"
    )


SECRET = "Zq9$hunter2$Xv"  # not a key name: key_text never shows it


@pytest.mark.parametrize(
    "text",
    [
        f"token: {SECRET}: x\n",  # mapping values are not allowed here
        f"key: '{SECRET}\n",  # an unclosed quote
        f'key: "{SECRET}\\q"\n',  # an unknown escape
        f"{SECRET}: [1, 2\n",  # an unclosed list
        f"{SECRET}: 1\n{SECRET}: 2\n",  # a duplicate key that is not a key name
        "seed: !hunter2tag 1\n",  # an unknown tag
        "seed: *hunter2alias\n",  # an undefined alias
        "seed: !!int hunter2\n",  # a value that is not what its tag says
        "seed: !!float hunter2\n",
        "a: !<tag:hunter2.example,2024:x> 1\n",
        "a: &hunter2 1\nb: &hunter2 2\n",  # a duplicate anchor
        "a: !!binary hunter2é\n",  # base64 that is not ASCII
        f"- {SECRET}\n{SECRET}: 1\n",  # a list, then a mapping
        f"a: [{SECRET}}}\n",
        f"a: |\n{SECRET}\n  x\n",
        "%HUNTER2 1\n---\na: 1\n",  # an unknown directive
        "a: \0hunter2\n",  # a character YAML does not accept
    ],
)
def test_errors_never_quote_the_text(text: str):
    with pytest.raises(ConfigError) as info:
        load_yaml(text, "f")
    message = str(info.value)
    assert message.startswith("f: invalid YAML")
    assert "hunter2" not in message.lower() and "Zq9" not in message, message
    assert "\n" not in message and len(message) < 200, message


def test_the_problem_is_one_short_line():
    from gradlab.yamlfile import _yaml_problem

    class Noisy(Exception):
        problem = "a\nvery\tlong " + "word " * 60

    text = _yaml_problem(Noisy())
    assert "\n" not in text and "\t" not in text
    assert len(text) == 120 and text.endswith("...")


# --------------------------------------------------------------------------- key_text


@pytest.mark.parametrize(
    "key",
    ["lr", "_private", "max_norm", "grad-norm", "A1", "x" * 30],
)
def test_key_names_are_shown(key: str):
    assert key_text(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "x" * 31,  # too long for a key name
        "1lr",  # starts with a digit
        "-lr",
        "optim.lr",  # a dotted path is not one key
        "root:$6$salt$",
        "two words",
        "",
        "é",
        1,
        1.5,
        None,
        True,
        ("lr",),
    ],
)
def test_anything_else_is_not_shown(key):
    assert key_text(key) == "<not a key name>"


def test_a_key_with_a_trailing_newline_is_not_a_key_name():
    assert key_text("lr\n") == "<not a key name>"
