"""The arrow between the readers and the generators: generators import readers, never the
reverse, so a reader can see which code touches real data.

Read from the sources' syntax trees, not by grepping: function-level and relative imports
count, and so does a module name held in a string (a dispatch table for
``importlib.import_module``, as ``tests/workflow/test_envs.py`` reads them) or an f-string's
head passed to ``import_module`` / ``__import__``; a docstring naming the generators does not.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "pixmim"
GENERATE = "pixmim.data.generate"
# the modules outside pixmim/data/generate/ allowed to import the generators, and why
DOORS = {"pixmim.stages.data": "the generators' CLI, `python -m pixmim data <generator>`"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(source: str, module: str, is_package: bool = False) -> set[str]:
    """The modules ``source`` (the module ``module``) imports, by absolute name: for
    ``from X import y`` both ``X`` and ``X.y`` (y may be a submodule); a string that is a
    dotted ``pixmim`` name counts as the module it names."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            base = ".".join([*base, *([node.module] if node.module else [])])
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Call) and node.args and (
                getattr(node.func, "attr", None) == "import_module"
                or getattr(node.func, "id", None) in ("import_module", "__import__")):
            arg = node.args[0]
            if isinstance(arg, ast.JoinedStr):  # the literal head of an f-string
                arg = arg.values[0] if arg.values else ast.Constant("")
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names.add(arg.value.rstrip("."))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and re.fullmatch(r"pixmim(\.\w+)+", node.value):
            names.add(node.value)
    return names


def imports_generators(path: Path) -> bool:
    names = imported(path.read_text(), module_name(path), path.name == "__init__.py")
    return any(n == GENERATE or n.startswith(f"{GENERATE}.") for n in names)


def modules(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("source, module, is_package", [
    ("import pixmim.data.generate.synth as s", "pixmim.data.datasets", False),
    ("from pixmim.data import generate", "pixmim.data.datasets", False),
    ("from pixmim.data.generate.views import render", "pixmim.stages.pretrain", False),
    ("from .generate import synth", "pixmim.data.loading", False),
    ("from . import generate", "pixmim.data", True),
    ("from ..data.generate import scenes", "pixmim.stages.dense", False),
    ("def f():\n    from pixmim.data.generate import fixtures", "pixmim.data.layouts", False),
    ("import importlib\nimportlib.import_module('pixmim.data.generate.synth')",
     "pixmim.data.transforms", False),
    ("import importlib\nimportlib.import_module(f'pixmim.data.generate.{name}')",
     "pixmim.stages.robustness", False),
    ("__import__('pixmim.data.generate')", "pixmim.data.datasets", False),
    ("RUN = {'synth': ('pixmim.data.generate.synth', 'the shapes')}", "pixmim.stages.x", False),
])  # fmt: skip
def test_every_way_of_importing_the_generators_is_seen(source, module, is_package) -> None:
    names = imported(source, module, is_package)
    assert any(n == GENERATE or n.startswith(f"{GENERATE}.") for n in names), names


@pytest.mark.parametrize("source, module", [
    ('"""Readers; the generators live in pixmim.data.generate."""', "pixmim.data"),
    ("from pixmim.data.imagenet_meta import imagenet_wnids", "pixmim.data.generate.synth"),
    ("from .. import layouts", "pixmim.data.generate.fixtures"),
    ("from pixmim.data import generator_notes", "pixmim.data.datasets"),
])  # fmt: skip
def test_a_mention_or_a_reader_import_is_no_generator_import(source, module) -> None:
    names = imported(source, module)
    assert not any(n == GENERATE or n.startswith(f"{GENERATE}.") for n in names), names


def test_no_reader_imports_the_generators() -> None:
    readers = [p for p in modules(PACKAGE / "data") if "generate" not in p.parts]
    assert {module_name(p) for p in readers} >= {
        "pixmim.data", "pixmim.data.datasets", "pixmim.data.loading", "pixmim.data.transforms",
        "pixmim.data.imagenet_meta", "pixmim.data.layouts"}
    crossing = [module_name(p) for p in readers if imports_generators(p)]
    assert not crossing, (f"{crossing} import {GENERATE}: readers must not depend on the "
                          "generators (move the shared piece to the reader side)")


def test_only_the_data_stage_reaches_the_generators() -> None:
    """The stages that read real data at paper scale (and every other module of the package
    outside pixmim/data/) reach the generators only through the `data` stage's CLI."""
    others = [p for p in modules(PACKAGE) if not p.is_relative_to(PACKAGE / "data")]
    users = {module_name(p) for p in others if imports_generators(p)}
    assert users <= set(DOORS), (f"{sorted(users - set(DOORS))} import {GENERATE}; only "
                                 f"{sorted(DOORS)} may ({', '.join(DOORS.values())})")
    assert users == set(DOORS), "the CLI's table of its generators is no longer seen"


def test_the_generators_import_the_readers_they_share() -> None:
    """The arrow's other end: the class lists and layouts the generators share with the
    readers are imported from the reader side."""
    gen = PACKAGE / "data" / "generate"
    assert "pixmim.data.imagenet_meta" in imported((gen / "synth.py").read_text(),
                                                   "pixmim.data.generate.synth")
    assert "pixmim.data.layouts" in imported((gen / "fixtures.py").read_text(),
                                             "pixmim.data.generate.fixtures")
