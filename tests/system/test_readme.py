"""The README stays true: every config key, default, column and file it documents exists."""

import json
import re
import typing
from pathlib import Path

import pytest

from gradlab.config import Config
from gradlab.editing import EditParams, param_docs, strategies

README = (Path(__file__).parents[2] / "README.md").read_text()


def documented_rows() -> dict[str, str]:
    """`| `key` | `default` | ...` rows of the README's tables: key -> default text."""
    return dict(re.findall(r"^\| `([\w.<>]+)` \| `([^`]*)` \|", README, flags=re.MULTILINE))


def test_every_config_key_is_documented_with_its_default():
    rows = documented_rows()
    expected = {}
    for name, field in Config.model_fields.items():
        section = field.annotation
        optional = [a for a in typing.get_args(section) if hasattr(a, "model_fields")]
        if optional:  # a section that is off by default (privacy: null)
            expected[name] = field.default
            section = optional[0]
        if isinstance(section, type) and hasattr(section, "model_fields"):
            for key, sub in section.model_fields.items():
                expected[f"{name}.{key}"] = sub.default
        else:
            expected[name] = field.default
    for key, default in expected.items():
        assert key in rows, f"{key} is not documented in the README"
        assert json.loads(rows[key]) == default, f"README default of {key}"
    config_rows = {k for k in rows if "." in k and k.split(".")[0] in Config.model_fields}
    assert config_rows <= set(expected), "README documents keys that do not exist"


@pytest.mark.parametrize("name", list(strategies()))
def test_every_strategy_and_its_parameters_are_documented(name):
    assert f"**`{name}`**" in README
    for key, _default, _ in param_docs(strategies()[name].Params):
        assert f"`{key}`" in README, key
    for key, default, _ in param_docs(EditParams, common=True):
        assert f"| `{key}` | `{json.dumps(default)}` |" in README, key


@pytest.mark.parametrize("privacy", [None, {"noise_multiplier": 0.0}], ids=["plain", "private"])
def test_step_columns_and_summary_keys_are_documented(tmp_path, tiny_config, privacy):
    from gradlab.train import train

    result = train(tiny_config(edit=[{"type": "clip_norm"}], privacy=privacy), tmp_path)
    header = (result.path / "steps.csv").read_text().splitlines()[0].split(",")
    for column in header:
        generic = re.sub(r"^edit\d+\.\w+\.\w+$", "edit<i>.<type>.<stat>", column)
        generic = re.sub(r"^grad_norm\.fc\d\.\w+$", "grad_norm.<param>", generic)
        assert f"| `{generic}` |" in README, column
        assert f"`{column}`" in README or generic != column
    for key in json.loads((result.path / "summary.json").read_text()):
        assert f"`{key}`" in README, key
    for key in json.loads((result.path / "meta.json").read_text()):
        assert f"`{key}`" in README, key
    for name in ("evals.csv", "grads.csv", "alerts.csv"):
        for column in (result.path / name).read_text().splitlines()[0].split(","):
            assert f"`{column}`" in README, (name, column)
        assert f"`{name}`" in README
    for command in (
        "gradlab train",
        "gradlab validate",
        "gradlab --version",
        "make run",
        "make test",
    ):
        assert command in README


def test_comparison_columns_are_documented():
    from gradlab.study.reading import IDENTITY, METRICS, STATUS

    for column in [*IDENTITY, *METRICS, STATUS, "n"]:
        assert f"`{column}`" in README, column


def test_every_command_and_option_is_documented():
    import typer.main

    from gradlab.cli import app

    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        assert f"gradlab {name}" in README, name
        for param in command.params:
            for flag in [*param.opts, *param.secondary_opts]:
                if flag.startswith("--") and flag != "--help":
                    assert f"{flag}" in README, (name, flag)


def test_every_local_image_and_link_exists():
    root = Path(__file__).parents[2]
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if not target.startswith(("http://", "https://")):
            assert (root / target).exists(), target


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)


def test_python_examples_use_only_the_public_api():
    import ast

    import gradlab

    assert len(python_blocks()) >= 4
    for block in python_blocks():
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gradlab"):
                assert node.module == "gradlab", node.module
                assert all(a.name in gradlab.__all__ for a in node.names), ast.unparse(node)
            if isinstance(node, ast.Import):
                assert all(
                    a.name == "gradlab" or not a.name.startswith("gradlab.") for a in node.names
                )
            if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "gradlab":
                assert node.attr in gradlab.__all__, node.attr


def test_the_python_api_example_of_an_edit_of_ones_own_runs(tmp_path):
    """The README's own-edit example, as written, in a fresh process (its registration
    stays there): it trains, logs its columns and labels the run as the README says."""
    import subprocess
    import sys

    (block,) = [b for b in python_blocks() if "register_edit" in b]
    root = Path(__file__).parents[2]
    code = block.replace(
        '"configs/quickstart.yaml"', repr(str(root / "configs" / "quickstart.yaml"))
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["completed", "1.0"]
    (run,) = (tmp_path / "runs").iterdir()
    header = (run / "steps.csv").read_text().splitlines()[0].split(",")
    assert "edit0.my_sign.norm" in header and "edit0.my_sign.changed" in header
    assert json.loads((run / "meta.json").read_text())["edits"] == "my_sign(0.01 @fc1.*)"
    for text in ("edit0.my_sign.norm", "my_sign(0.01 @fc1.*)"):
        assert f"`{text}`" in README


def test_the_readmes_own_edit_file_trains_from_its_config(tmp_path):
    """ "Your own edit", as written: the file and the config entry train through the CLI,
    and the file's edit is the one in examples/edits/."""
    import subprocess
    import sys

    import yaml

    (block,) = [b for b in python_blocks() if b.startswith("# my_edits.py")]
    (tmp_path / "my_edits.py").write_text(block)
    entry = re.search(r"```yaml\nedit:\n  - (\{type: my_edits.py:[^\n]*\})", README)
    assert entry is not None
    config = {
        "name": "mine",
        "data": {"name": "mnist-sample"},
        "model": {"hidden": 16},
        "optim": {"max_steps": 5, "batch_size": 50},
        "train": {"device": "cpu"},
        "edit": [yaml.safe_load(entry.group(1).split("#")[0])],
    }
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(config))
    out = subprocess.run(
        [sys.executable, "-m", "gradlab.cli", "train", "exp.yaml", "-q"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    (run,) = (tmp_path / "runs").iterdir()
    assert json.loads((run / "meta.json").read_text())["edits"] == "coord_clip(2.0)"
    example = (Path(__file__).parents[2] / "examples/edits/coordinate_clip.py").read_text()
    body = block[block.index("class CoordinateClipParams") :]
    strip = lambda text: [line.split("  #")[0].rstrip() for line in text.splitlines()]  # noqa: E731
    assert strip(body) == strip(example[example.index("class CoordinateClipParams") :])
