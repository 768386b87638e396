"""Edits from the user's own code: ``type: path/to/my_edits.py:AdaClip`` (a file, relative to
the config file that names it) or ``type: my_package.edits:AdaClip`` (an importable module).

A config that names a file **runs that file's code**, as a Python script would. The class
must subclass :class:`gradlab.Edit`; its ``name`` (the class name lowercased when it sets
none) names its columns and labels and may not be a built-in edit's. Each loaded plugin
is a :class:`Plugin`: its class, where it came from and the sha256 of its source, which
goes into the run folder (``plugins/``, ``meta.json``) and into the experiment's identity
(:func:`gradlab.identity.experiment_identity`): editing the file makes a new experiment.

The module itself imports no torch (the loaded plugins do).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import sys
import traceback
import types
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradlab.errors import ConfigError

if TYPE_CHECKING:
    pass

MAX_PLUGIN_BYTES = 1_000_000
"""The largest plugin file gradlab reads (a source file, not data)."""
PLUGIN_FOLDER = "plugins"
"""The run folder's copy of each plugin's source: ``plugins/<file>-<sha256[:12]>.py``."""
_SPEC = re.compile(r"^(?P<target>[^:]+):(?P<name>[A-Za-z_][A-Za-z0-9_]*)$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


@dataclass(frozen=True)
class Plugin:
    """A user's edit class and its provenance."""

    spec: str
    """As the config holds it: ``/abs/path/file.py:Class`` or ``package.module:Class``."""
    cls: Any
    """A subclass of :class:`~gradlab.Edit`, or of :class:`~gradlab.ClipRule`."""
    origin: str
    """``file`` or ``module``."""
    sha256: str
    """Of the source file's bytes: the code that ran."""
    source: str
    """The source file's text."""
    path: str
    """The source file (for a module: the file it was imported from)."""
    module: str | None = None
    version: str | None = None
    """The installed version of the module's distribution, when it comes from one."""

    def record(self) -> dict[str, Any]:
        """What ``meta.json`` says of it (``plugins`` entry)."""
        return {
            "kind": self.kind,
            "origin": self.origin,
            "class": self.cls.__name__,
            "name": self.cls.name,
            "path": self.path,
            "module": self.module,
            "version": self.version,
            "sha256": self.sha256,
            "copy": f"{PLUGIN_FOLDER}/{self.copy_name()}",
        }

    @property
    def kind(self) -> str:
        """``edit``, ``probe`` (a measurement: outside the experiment's identity) or
        ``rule`` (DP-SGD's clipping)."""
        from gradlab.privacy import ClipRule
        from gradlab.probes import Probe

        if issubclass(self.cls, Probe):
            return "probe"
        return "rule" if issubclass(self.cls, ClipRule) else "edit"

    def copy_name(self) -> str:
        return f"{Path(self.path).stem}-{self.sha256[:12]}.py"


def is_plugin_spec(kind: Any) -> bool:
    """Whether an edit's ``type`` names a user's class (``...:Class``), not a built-in."""
    return isinstance(kind, str) and ":" in kind


ENTRY_POINT_GROUPS = {"edit": "gradlab.edits", "probe": "gradlab.probes"}
"""The entry point groups in which installed packages give their edits and probes short
names: ``[project.entry-points."gradlab.edits"] adaclip = "my_package.edits:AdaClip"``."""


def entry_point_spec(name: str, kind: str) -> str | None:
    """The ``module:Class`` spec an installed package registers as ``name`` in the entry
    point group of ``kind`` (``edit`` or ``probe``), or None."""
    from importlib import metadata

    for point in metadata.entry_points(group=ENTRY_POINT_GROUPS[kind]):
        if point.name == name:
            return str(point.value).replace(" ", "")
    return None


def entry_point_names(kind: str) -> list[str]:
    """The short names installed packages register for ``kind`` (``edit`` or ``probe``)."""
    from importlib import metadata

    return sorted({p.name for p in metadata.entry_points(group=ENTRY_POINT_GROUPS[kind])})


def is_file_spec(kind: str) -> bool:
    target = kind.rpartition(":")[0]
    return target.endswith(".py") or "/" in target or os.sep in target


def anchor_plugin_paths(raw: dict[str, Any], directory: str | Path) -> None:
    """In place: make each relative file spec of the config ``raw``'s ``edit`` list (and its
    privacy rule, its probes and ``model.init_from``'s run folder) absolute, relative to
    ``directory`` (the config file's folder), so the resolved config (and every run folder's
    ``config.yaml``) names the file wherever it is read from."""
    edits = raw.get("edit")
    entries: list[tuple[Any, Any]] = (
        [(e, "type") for e in edits if isinstance(e, dict)] if isinstance(edits, list) else []
    )
    if isinstance(raw.get("privacy"), dict):
        entries.append((raw["privacy"], "clipping"))
    diagnostics = raw.get("diagnostics")
    probes = diagnostics.get("probes") if isinstance(diagnostics, dict) else None
    if isinstance(probes, list):
        for i, probe in enumerate(probes):
            if isinstance(probe, str):
                entries.append((probes, i))
            elif isinstance(probe, dict):
                entries.append((probe, "type"))
    for entry, key in entries:
        kind = entry[key] if isinstance(entry, list) else entry.get(key)
        if isinstance(kind, str) and is_plugin_spec(kind) and is_file_spec(kind):
            target, _, name = kind.rpartition(":")
            path = Path(os.path.expanduser(target))
            if not path.is_absolute():
                entry[key] = f"{os.path.abspath(Path(directory) / path)}:{name}"
    model = raw.get("model")  # a warm start's run folder, likewise
    source = model.get("init_from") if isinstance(model, dict) else None
    if isinstance(model, dict) and isinstance(source, str) and source and "\0" not in source:
        path = Path(os.path.expanduser(source))
        model["init_from"] = os.path.abspath(Path(directory) / path)  # absolute stays


_LOADED: dict[str, Plugin] = {}  # by spec: the latest loaded
_PINNED: dict[str, Plugin] = {}  # by spec: loaded from the source a sweep's task brought
_MODULES: dict[tuple[str, str], types.ModuleType] = {}  # by (path, sha256)


def loaded_plugins() -> dict[str, Plugin]:
    """Every plugin loaded in this process, by spec."""
    return dict(_LOADED)


def load_plugin(spec: str) -> Plugin:
    """The plugin ``spec`` names, loaded (a file is read again each time: an edited file is
    loaded anew; an unchanged one is not executed twice).

    Raises:
        ConfigError: one line: the spec's form, a missing or unreadable file, a syntax error
            or an exception while importing it (the file and line), no such class, a class
            that is not an :class:`~gradlab.Edit` subclass, or a name that shadows a built-in.
    """
    match = _SPEC.match(spec)
    if not match:
        raise ConfigError(
            f"{spec!r} is not a plugin spec; write path/to/file.py:ClassName or "
            "package.module:ClassName"
        )
    if spec in _PINNED:  # a sweep's task: the code the sweep was planned with
        return _PINNED[spec]
    target, name = match["target"], match["name"]
    if is_file_spec(spec):
        module, origin = _load_file(target), "file"
    else:
        module, origin = _load_module(target), "module"
    cls = getattr(module, name, None)
    plugin = _check_class(spec, name, cls, module, origin)
    _LOADED[spec] = plugin
    return plugin


def _load_file(target: str) -> types.ModuleType:
    path = Path(os.path.expanduser(target))
    if not path.is_absolute():
        path = Path(os.path.abspath(path))
    try:
        if not path.is_file():
            raise ConfigError(
                f"plugin file {path} not found (a path in a config file is relative to that file; "
                "one given with --set, to the working directory)"
            )
        if path.stat().st_size > MAX_PLUGIN_BYTES:
            raise ConfigError(f"plugin file {path}: larger than {MAX_PLUGIN_BYTES:,} bytes")
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"plugin file {path}: cannot read it ({exc.strerror or exc})") from None
    return _module_from_source(path, data)


def _module_from_source(path: Path, data: bytes) -> types.ModuleType:
    """The module of a plugin file's bytes ``data`` (executed once per path and content),
    its code compiled with the file's name so that tracebacks point into it."""
    sha = hashlib.sha256(data).hexdigest()
    key = (str(path), sha)
    if key in _MODULES:
        return _MODULES[key]
    try:
        text = data.decode("utf-8")
        code = compile(text, str(path), "exec")
    except UnicodeDecodeError:
        raise ConfigError(f"plugin file {path}: not UTF-8 text") from None
    except SyntaxError as exc:
        raise ConfigError(
            f"plugin file {path}, line {exc.lineno}: syntax error: {exc.msg}"
        ) from None
    # a module of its own, importable by name (pickling, dataclasses, typing need that)
    module_name = f"gradlab_plugins.{_identifier(path.stem)}_{sha[:12]}"
    module = types.ModuleType(module_name)
    module.__file__ = str(path)
    sys.modules.setdefault("gradlab_plugins", types.ModuleType("gradlab_plugins"))
    sys.modules[module_name] = module
    try:
        exec(code, module.__dict__)  # noqa: S102 - the user's own code, as documented
    except Exception as exc:  # noqa: BLE001 - the user's code: say where it broke
        del sys.modules[module_name]
        raise ConfigError(
            f"plugin file {path}: importing it raised {plugin_error(exc, (str(path),))}"
        ) from None
    module.__dict__["__gradlab_source__"] = (text, sha)
    _MODULES[key] = module
    return module


def _load_module(target: str) -> types.ModuleType:
    if not _MODULE.match(target):
        raise ConfigError(f"{target!r} is not a module name (package.module:ClassName)")
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"plugin module {target}: cannot import it ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - the user's code: say where it broke
        spec = importlib.util.find_spec(target.partition(".")[0])
        top = [os.path.dirname(spec.origin)] if spec is not None and spec.origin else []
        raise ConfigError(
            f"plugin module {target}: importing it raised {plugin_error(exc, folders=tuple(top))}"
        ) from None


def _check_class(spec: str, name: str, cls: Any, module: types.ModuleType, origin: str) -> Plugin:
    from gradlab.editing.base import Edit, EditParams
    from gradlab.editing.registry import strategy_names

    where = module.__file__ if origin == "file" else module.__name__
    if cls is None:
        from gradlab.privacy import ClipRule
        from gradlab.probes import Probe

        bases = (Edit, Probe, ClipRule)
        found = sorted(
            n for n, v in vars(module).items() if isinstance(v, type) and issubclass(v, bases)
            and v not in bases
        )  # fmt: skip
        hint = (
            f"; its edits, probes and rules: {', '.join(found)}"
            if found
            else "; it defines no subclass of gradlab.Edit, gradlab.Probe or gradlab.ClipRule"
        )
        raise ConfigError(f"plugin {where} has no class {name}{hint}")
    from gradlab.privacy import ClipRule
    from gradlab.probes import Probe

    if isinstance(cls, type) and issubclass(cls, Probe) and cls is not Probe:
        return _check_probe(spec, name, cls, module, origin, where)
    if isinstance(cls, type) and issubclass(cls, ClipRule) and cls is not ClipRule:
        if not getattr(cls, "name", ""):
            cls.name = name.lower()
        return _plugin(spec, cls, module, origin)
    if not (isinstance(cls, type) and issubclass(cls, Edit)) or cls is Edit:
        raise ConfigError(
            f"plugin {where}: {name} is not a subclass of gradlab.Edit (class {name}(Edit): "
            "...), nor of gradlab.Probe (diagnostics.probes) or gradlab.ClipRule "
            "(privacy.clipping)"
        )
    if not cls.family:
        cls.family = "plugin"
    _check_shared_rules(cls, name, where, EditParams, "edit", strategy_names())
    if "changed" in cls.stats:
        raise ConfigError(
            f"plugin {where}: {name}.stats: 'changed' is always reported; leave it out"
        )
    return _plugin(spec, cls, module, origin)


def _check_probe(
    spec: str, name: str, cls: Any, module: types.ModuleType, origin: str, where: Any
) -> Plugin:
    """The rules of a user's probe (a :class:`gradlab.Probe`), as :func:`_check_class`'s."""
    from gradlab.probes import ProbeParams, probes

    _check_shared_rules(cls, name, where, ProbeParams, "probe", list(probes()))
    return _plugin(spec, cls, module, origin)


def _check_shared_rules(
    cls: Any, name: str, where: Any, params: type, kind: str, builtins: list[str]
) -> None:
    """What a user's edit and probe class share: its ``Params`` subclasses ``params``; its
    ``name`` (the class name lowercased when it sets none) is a word that no built-in
    ``kind`` has; its ``summary`` (the docstring's first line when it sets none); its
    ``stats``, a tuple of names."""
    if not (isinstance(cls.Params, type) and issubclass(cls.Params, params)):
        raise ConfigError(f"plugin {where}: {name}.Params must subclass gradlab.{params.__name__}")
    if not cls.name:
        cls.name = name.lower()
    if not cls.summary:  # the docstring's first line
        cls.summary = ((cls.__doc__ or "").strip().splitlines() or [""])[0]
    if not isinstance(cls.name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,39}", cls.name):
        raise ConfigError(
            f"plugin {where}: {name}.name {cls.name!r} must be a word of letters, digits and "
            "'_' (at most 40 characters)"
        )
    if cls.name in builtins:
        raise ConfigError(
            f"plugin {where}: {name}.name {cls.name!r} shadows the built-in {kind} of that "
            "name; give it a name of its own"
        )
    stats = getattr(cls, "stats", ())
    if not isinstance(stats, tuple) or not all(isinstance(s, str) and s for s in stats):
        raise ConfigError(f"plugin {where}: {name}.stats must be a tuple of names")


def _plugin(spec: str, cls: Any, module: types.ModuleType, origin: str) -> Plugin:
    path, text, sha = _source_of(module)
    version = _version(module.__name__) if origin == "module" else None
    return Plugin(
        spec=spec, cls=cls, origin=origin, sha256=sha, source=text, path=path,
        module=None if origin == "file" else module.__name__, version=version,
    )  # fmt: skip


def _source_of(module: types.ModuleType) -> tuple[str, str, str]:
    """The file, text and sha256 of a module's source (what ran)."""
    recorded = module.__dict__.get("__gradlab_source__")
    path = str(getattr(module, "__file__", "") or "")
    if recorded is not None:
        return path, recorded[0], recorded[1]
    try:
        data = Path(path).read_bytes()
    except OSError:
        data = b""
    return path, data.decode("utf-8", "replace"), hashlib.sha256(data).hexdigest()


def _version(module: str) -> str | None:
    from importlib import metadata

    top = module.partition(".")[0]
    for dist in metadata.packages_distributions().get(top, []):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _identifier(text: str) -> str:
    return re.sub(r"\W", "_", text) or "plugin"


def plugin_error(
    exc: BaseException, files: tuple[str, ...] = (), folders: tuple[str, ...] = ()
) -> str:
    """``Type: message`` of an exception raised by user code, with the innermost frame in a
    plugin's code (a loaded plugin's file or module package, or ``files`` and ``folders``):
    ``(at FILE, line N, in F)``."""
    ours = {*files, *(str(m.__file__) for m in _MODULES.values())}
    dirs = list(folders)
    for plugin in _LOADED.values():
        ours.add(plugin.path)
        if plugin.origin == "module":
            dirs.append(os.path.dirname(plugin.path))
    frames = traceback.extract_tb(exc.__traceback__)
    where = next(
        (
            f for f in reversed(frames)
            if f.filename in ours or any(f.filename.startswith(d + os.sep) for d in dirs)
        ),
        None,
    )  # fmt: skip
    text = f"{type(exc).__name__}: {exc}".rstrip(": ")
    if where is not None:
        text += f" (at {where.filename}, line {where.lineno}, in {where.name})"
    return text


def plugins_of(edit_types: list[str]) -> dict[str, Plugin]:
    """The plugins among a config's edit ``type``\\ s, by spec (each the class loaded when
    the config was validated; loaded now if it was not)."""
    return {
        kind: _LOADED.get(kind) or load_plugin(kind) for kind in edit_types if is_plugin_spec(kind)
    }


def plugin_hashes(edit_types: list[str]) -> dict[str, str]:
    """sha256 of each plugin's source, by spec: the part of the experiment's identity that
    is code (:func:`gradlab.identity.experiment_identity`)."""
    return {spec: plugin.sha256 for spec, plugin in plugins_of(edit_types).items()}


def write_sources(plugins: dict[str, Plugin], folder: Path) -> None:
    """Copy each plugin's source (what ran) into the run folder's ``plugins/``."""
    if not plugins:
        return
    (folder / PLUGIN_FOLDER).mkdir(exist_ok=True)
    for plugin in plugins.values():
        (folder / PLUGIN_FOLDER / plugin.copy_name()).write_text(plugin.source, encoding="utf-8")


def plugin_sources(edit_types: list[str]) -> dict[str, dict[str, str]]:
    """The source of each plugin file among a config's edit types, by spec, for a sweep's
    task to run (:func:`pin_sources`): the code the sweep planned with travels with the
    task, to a node without the file (Ray without a shared file system) and past an edit
    of the file while the sweep runs. A module plugin is imported on the node instead."""
    return {
        spec: {"path": p.path, "source": p.source, "sha256": p.sha256}
        for spec, p in plugins_of(edit_types).items()
        if p.origin == "file"
    }


def pin_sources(sources: dict[str, dict[str, str]] | None) -> None:
    """Load each plugin of :func:`plugin_sources` from its source, not from its file, for
    the rest of this process (a sweep's worker or task).

    Raises:
        ConfigError: a source that does not give its class (as :func:`load_plugin`).
    """
    for spec, given in (sources or {}).items():
        match = _SPEC.match(spec)
        data = given["source"].encode("utf-8")
        if match is None or hashlib.sha256(data).hexdigest() != given["sha256"]:
            raise ConfigError(f"plugin {spec}: its source arrived damaged")
        module = _module_from_source(Path(given["path"]), data)
        _PINNED[spec] = _check_class(
            spec, match["name"], getattr(module, match["name"], None), module, "file"
        )
        _LOADED[spec] = _PINNED[spec]


def plugins_in(source: str) -> list[Plugin]:
    """The plugin edits a file defines (``my_edits.py``: every :class:`~gradlab.Edit`
    subclass defined in it), a module defines (``my_package.edits``), or a config uses (a
    ``.yaml`` file): what ``gradlab strategies SOURCE`` lists.

    Raises:
        ConfigError: the source cannot be read or loaded, or a class breaks the rules of
            :func:`load_plugin`.
    """
    from gradlab.editing.base import Edit
    from gradlab.probes import Probe

    if source.endswith((".yaml", ".yml")):
        from gradlab.config import load_config

        config = load_config(source)
        return list(plugins_of(plugin_specs(config)).values())
    if is_file_spec(f"{source}:X"):
        path = os.path.abspath(os.path.expanduser(source))
        module, target = _load_file(path), path
    else:
        module, target = _load_module(source), source
    names = [
        n for n, v in vars(module).items()
        if isinstance(v, type) and issubclass(v, (Edit, Probe)) and v.__module__ == module.__name__
    ]  # fmt: skip
    if not names:
        raise ConfigError(f"{source} defines no subclass of gradlab.Edit or gradlab.Probe")
    return [load_plugin(f"{target}:{n}") for n in names]


def load_rule(spec: str) -> Plugin:
    """The per-example clipping rule ``spec`` names (``privacy.clipping``), loaded as
    :func:`load_plugin` loads an edit.

    Raises:
        ConfigError: as :func:`load_plugin`, or the class is not a ClipRule.
    """
    from gradlab.privacy import ClipRule

    plugin = load_plugin(spec)
    if not issubclass(plugin.cls, ClipRule):
        raise ConfigError(
            f"{spec} is {'a probe' if plugin.kind == 'probe' else 'an edit'}, not a clipping "
            "rule: a rule subclasses gradlab.ClipRule (an edit goes in the edit list, a "
            "probe in diagnostics.probes)"
        )
    return plugin


def plugin_specs(config: Any) -> list[str]:
    """The plugin specs a config (a Config, or its plain data) names: its edits' types,
    a ``privacy.clipping`` rule and its ``diagnostics.probes``."""
    data = config if isinstance(config, dict) else config.to_dict()
    edits = data.get("edit") or []
    kinds = [e.get("type") for e in edits if isinstance(e, dict)]
    privacy = data.get("privacy")
    if isinstance(privacy, dict):
        kinds.append(privacy.get("clipping"))
    diagnostics = data.get("diagnostics")
    probes = diagnostics.get("probes") if isinstance(diagnostics, dict) else None
    for probe in probes if isinstance(probes, list) else []:
        kinds.append(probe.get("type") if isinstance(probe, dict) else probe)
    return [k for k in kinds if isinstance(k, str) and is_plugin_spec(k)]
