"""The shape of the package, checked from its source: no import cycles, leaves that stay
leaves, plugins that never need the config, no private names across modules, one public face."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import gradlab

PACKAGE = Path(gradlab.__file__).parent
LEAVES = {
    "gradlab.errors",
    "gradlab.registry",
    "gradlab.schema",
    "gradlab.yamlfile",
    "gradlab.identity",
    "gradlab.text",
}
PLUGINS = ("gradlab.editing", "gradlab.engines", "gradlab.optimizers")
STUDY = ("gradlab.study", "gradlab.report")
SHIMS = {"gradlab.exports", "gradlab.latex", "gradlab.layout", "gradlab.plots"}
"""Old module paths kept for one release (they warn and re-export their new module)."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def imports(name: str, module_level: bool = True) -> list[tuple[str, str | None, int]]:
    """``(module, imported name or None, line)`` for each gradlab import in module ``name``:
    those that run when it loads (``module_level``: not inside functions, not under
    ``TYPE_CHECKING``), or every one."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    package = name if is_package(name) else name.rpartition(".")[0]
    found: list[tuple[str, str | None, int]] = []

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and module_level:
                continue
            if isinstance(node, ast.Import):
                found.extend((a.name, None, node.lineno) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(
                        package.split(".")[: len(package.split(".")) - node.level + 1] + [base]
                    )
                found.extend((base.strip("."), a.name, node.lineno) for a in node.names)
            for field in ("body", "orelse", "finalbody", "handlers"):
                visit([n for n in getattr(node, field, []) if isinstance(n, ast.AST)])

    visit(tree.body)
    return [(m, n, line) for m, n, line in found if m == "gradlab" or m.startswith("gradlab.")]


def targets(name: str, module_level: bool = True) -> set[str]:
    """The gradlab modules that module ``name`` imports (``from a import b`` counts as the
    module ``a.b`` when that is a module)."""
    out = set()
    for module, imported, _ in imports(name, module_level):
        full = f"{module}.{imported}"
        out.add(full if full in MODULES else module)
    return out - {name}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in graph:
        if name not in index:
            visit(name)
    return cycles


def import_graph() -> dict[str, set[str]]:
    return {name: targets(name) & set(MODULES) for name in MODULES}


def test_no_import_cycle_when_the_package_loads():
    assert find_cycles(import_graph()) == []


def test_the_detector_finds_a_cycle(tmp_path, monkeypatch):
    """The walk sees module-level imports, in both spellings, and skips TYPE_CHECKING."""
    (tmp_path / "gradlab").mkdir()
    for name, text in {
        "__init__.py": "",
        "a.py": "from gradlab import b\n",
        "b.py": "import gradlab.a\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from gradlab import c\n",
        "c.py": "def f():\n    from gradlab import a\n",
    }.items():
        (tmp_path / "gradlab" / name).write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / "gradlab")
    modules = {module_name(p): p for p in sorted((tmp_path / "gradlab").rglob("*.py"))}
    monkeypatch.setattr(sys.modules[__name__], "MODULES", modules)
    assert targets("gradlab.a") == {"gradlab.b"} and targets("gradlab.b") == {"gradlab.a"}
    assert targets("gradlab.c") == set() and targets("gradlab.c", module_level=False) == {
        "gradlab.a"
    }
    assert find_cycles(import_graph()) == [["gradlab.a", "gradlab.b"]]


def test_leaves_import_only_leaves():
    for leaf in LEAVES:
        assert targets(leaf) <= LEAVES, leaf


def test_plugins_never_import_the_config():
    """Edits, engines and optimizers build on gradlab.schema; the config parses them."""
    for name in MODULES:
        if name.startswith(PLUGINS):
            assert "gradlab.config" not in targets(name), name


def test_the_study_side_loads_no_torch():
    """The study and report modules, and everything they import when they load, are free of
    torch (the run-time check in tests/study confirms it for a whole `compare`)."""
    seen, todo = set(), [n for n in MODULES if n.startswith(STUDY)]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        outside = {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
        outside |= {
            n.module.split(".")[0] for n in top if isinstance(n, ast.ImportFrom) and n.module
        }
        assert "torch" not in outside and "opacus" not in outside, name
        todo += [t for t in targets(name) if t in MODULES]


def test_no_private_name_crosses_a_module():
    for name in MODULES:
        for module, imported, line in imports(name, module_level=False):
            if imported and imported.startswith("_") and imported != "__version__":
                pytest.fail(f"{MODULES[name]}:{line} imports {imported} from {module}")


def defined_names(name: str) -> set[str]:
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
    return names


def test_names_are_imported_from_where_they_live():
    """No module re-exports another module's names: an import names the module that defines
    the name (a package's __init__ may gather its family's names; shims are the exception)."""
    for name in MODULES:
        for module, imported, line in imports(name, module_level=False):
            if imported is None or module not in MODULES or is_package(module):
                continue
            if name in SHIMS or f"{module}.{imported}" in MODULES:
                continue
            assert imported in defined_names(module), (
                f"{MODULES[name]}:{line} imports {imported} from {module}, which does not define it"
            )


def test_the_public_api_is_all_of_gradlab_and_loads_lazily():
    assert gradlab.__all__[0] == "__version__" and len(set(gradlab.__all__)) == len(gradlab.__all__)
    for name in gradlab.__all__:
        assert getattr(gradlab, name) is not None, name
    code = "import sys, gradlab; print(sorted({'torch', 'pandas'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_functions_named_like_their_modules_stay_functions():
    """gradlab.train and gradlab.gradcheck are functions, also once their modules load."""
    code = (
        "import gradlab.train, gradlab.gradcheck, gradlab\n"
        "from gradlab.train import train\n"
        "print(gradlab.train is train, callable(gradlab.gradcheck), type(gradlab.train).__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "function"]


def test_the_public_edit_interface_is_the_registered_one():
    from gradlab.editing import base, registry

    assert gradlab.Edit is base.Edit and gradlab.EditParams is base.EditParams
    assert gradlab.register_edit == registry.register
    assert "clip_norm" in gradlab.edit_strategies()  # the built-ins come with the interface


@pytest.mark.parametrize("old", sorted(SHIMS))
def test_old_module_paths_warn_and_still_work(old):
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert any(issubclass(w.category, FutureWarning) and old in str(w.message) for w in caught)
    new = importlib.import_module(old.replace("gradlab.", "gradlab.study."))
    assert set(defined_names(new.__name__)) - {n for n in dir(new) if n.startswith("_")} <= set(
        dir(module)
    )


def test_old_config_names_warn_and_still_work():
    import gradlab.config
    import gradlab.yamlfile

    with pytest.warns(FutureWarning, match="gradlab.yamlfile.MAX_YAML_VALUES"):
        assert gradlab.config.MAX_YAML_VALUES == gradlab.yamlfile.MAX_YAML_VALUES
    with pytest.raises(AttributeError):
        gradlab.config.NO_SUCH_NAME  # noqa: B018
