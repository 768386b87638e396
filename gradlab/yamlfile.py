"""Reading config and sweep files safely: only small regular files, YAML checked for depth,
size (aliases included) and duplicate keys before it is built, and error messages that
never quote a file's contents. Used by :mod:`gradlab.config`, :mod:`gradlab.data` and the sweeps.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from gradlab.errors import ConfigError, GradlabError

MAX_CONFIG_BYTES = 1_000_000
"""Largest config or sweep file, in bytes (a config is a few dozen lines)."""
MAX_YAML_DEPTH = 50
"""Deepest nesting of mappings and lists in a YAML file or ``--set`` value."""
MAX_YAML_VALUES = 100_000
"""Most values (scalars, mappings, lists) a YAML document may expand to, aliases included."""

_KEY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,29}$")


def key_text(key: Any) -> str:
    """A key as it is when it looks like a key name. Anything else is not shown: a file
    that is not a config (a password file, say) can parse as a mapping whose keys are its
    lines."""
    return key if isinstance(key, str) and _KEY_NAME.fullmatch(key) else "<not a key name>"


# --------------------------------------------------------------------------- files and YAML

_FILE_KINDS = {
    stat.S_IFIFO: "a named pipe",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def open_regular_file(
    path: Path, max_bytes: int | None = None, error: type[GradlabError] = ConfigError
) -> BinaryIO:
    """Open ``path`` for reading in binary, only if it is a regular file (of at most
    ``max_bytes``): a FIFO, a device such as ``/dev/zero`` or a folder is refused before
    anything is read, and never blocks the caller.

    Raises:
        ``error``: one line naming the file and what is wrong with it.
    """

    def check(info: os.stat_result) -> None:
        if stat.S_ISDIR(info.st_mode):
            raise error(f"{path}: is a folder, expected a file")
        if not stat.S_ISREG(info.st_mode):
            kind = _FILE_KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
            raise error(f"{path}: is {kind}, not a regular file; save the contents to a file")
        if max_bytes is not None and info.st_size > max_bytes:
            raise error(
                f"{path}: {info.st_size:,} bytes, more than the {max_bytes:,} allowed "
                f"(gradlab.yamlfile.MAX_CONFIG_BYTES); check that this is the right file, "
                "and split a large sweep into several files"
            )

    try:
        check(os.stat(path))  # before opening: opening a FIFO would wait for a writer
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise error(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    file = os.fdopen(fd, "rb")
    try:
        check(os.fstat(fd))  # the path may name another file by now
    except BaseException:
        file.close()
        raise
    return file


def read_small_text_file(
    path: Path, max_bytes: int = MAX_CONFIG_BYTES, error: type[GradlabError] = ConfigError
) -> str:
    """The UTF-8 text of a regular file of at most ``max_bytes`` (see :func:`open_regular_file`)."""
    with open_regular_file(path, max_bytes, error) as file:
        try:
            data = file.read(max_bytes + 1)
        except OSError as exc:
            raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(data) > max_bytes:  # it grew after the check
        raise error(f"{path}: more than the {max_bytes:,} bytes allowed")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(
            f"{path}: not UTF-8 text (invalid byte at offset {exc.start}); is it a YAML file?"
        ) from None


class _DuplicateKeyError(yaml.constructor.ConstructorError):
    """A key given twice in one mapping (YAML would silently keep the last)."""


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when installed
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _ConfigLoader(_YAML_LOADER):  # type: ignore[misc, valid-type]
    """YAML's safe loader with duplicate keys as errors and conversion errors located."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, OverflowError) as exc:  # e.g. `!!int abc`, 5000 digits
            tag = node.tag.rsplit(":", 1)[-1] if node.tag.startswith("tag:yaml.org") else "tagged"
            reason = "too many digits" if "digits" in str(exc) else f"not a valid {tag} value"
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot convert a value ({reason})", node.start_mark
            ) from None

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:  # `<<: *base` then a key: an override on purpose
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    earlier = first_line.get(key)
                except TypeError:  # an unhashable key: the base class says so
                    continue
                if earlier is not None:
                    raise _DuplicateKeyError(
                        None,
                        None,
                        f"duplicate key {key_text(key)} (first at line {earlier})",
                        key_node.start_mark,
                    )
                first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, where: str) -> Any:
    """Parse one YAML document safely and within limits.

    Before anything is built, the events are checked: at most :data:`MAX_YAML_DEPTH`
    levels of nesting, at most :data:`MAX_YAML_VALUES` values once aliases are expanded
    (an alias bomb is refused without expanding it), no alias inside its own anchor.
    Duplicate keys are errors.

    Args:
        text: the YAML text.
        where: what to name in errors (a path, ``--set KEY=VALUE``).

    Raises:
        ConfigError: one line with the line, column and kind of problem; never the text.
    """
    try:
        _check_yaml_shape(text, where)
        return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{where}: invalid YAML{_yaml_position(exc)}: {_yaml_problem(exc)}"
        ) from None


def _check_yaml_shape(text: str, where: str) -> None:
    """Walk the YAML events once, counting values as if aliases were expanded."""
    values = 0  # the expanded document's values so far
    open_nodes: list[tuple[str | None, int]] = []  # (anchor, values before it) per level
    sizes: dict[str, int] = {}  # anchor -> the number of values it expands to
    for event in yaml.parse(text, Loader=_YAML_LOADER):
        if isinstance(event, yaml.CollectionStartEvent):
            if len(open_nodes) >= MAX_YAML_DEPTH:
                raise ConfigError(
                    f"{where}: line {_line(event)}: nested more than "
                    f"{MAX_YAML_DEPTH} levels deep (gradlab.yamlfile.MAX_YAML_DEPTH); "
                    "a config or sweep nests fewer than ten"
                )
            open_nodes.append((event.anchor, values))
            values += 1
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, before = open_nodes.pop()
            if anchor is not None:
                sizes[anchor] = values - before
        elif isinstance(event, yaml.ScalarEvent):
            values += 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            if any(anchor == event.anchor for anchor, _ in open_nodes):
                raise ConfigError(
                    f"{where}: line {_line(event)}: an alias inside the node "
                    "it refers to (a recursive structure); a config cannot hold one"
                )
            values += sizes.get(event.anchor or "", 0)  # an unknown alias: the composer says so
        if values > MAX_YAML_VALUES:
            raise ConfigError(
                f"{where}: line {_line(event)}: more than {MAX_YAML_VALUES:,} "
                "values once aliases are expanded (gradlab.yamlfile.MAX_YAML_VALUES); "
                "a config or sweep holds far fewer"
            )


def _line(event: yaml.Event) -> int:
    """The (1-based) line an event starts on; 0 where the parser gives none."""
    return event.start_mark.line + 1 if event.start_mark is not None else 0


def _yaml_position(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""


# PyYAML quotes what it found ('\t', '<scalar>', a tag, an alias name): keep one character
# or a token name, never more of the file.
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_SAFE_QUOTE = re.compile(r"(['\"])(?:\\?.|\\x[0-9a-f]{2}|\\u[0-9a-f]{4}|<[a-z ]+>)\1")


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """The kind of problem, e.g. ``mapping values are not allowed here``: no file contents."""
    problem = str(getattr(exc, "problem", None) or type(exc).__name__)
    if not isinstance(exc, _DuplicateKeyError):
        problem = _QUOTED.sub(
            lambda m: m.group() if _SAFE_QUOTE.fullmatch(m.group()) else "(...)", problem
        )
    problem = " ".join(problem.split())
    return problem if len(problem) <= 120 else problem[:117] + "..."
