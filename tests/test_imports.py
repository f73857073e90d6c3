"""The package's import layers: the contracts of pyproject.toml [tool.importlinter], run with
import-linter (as `make lint` does), each shown to fail when its layer is crossed; and no
import of the package's own modules inside a function (a hidden loop, or a slow start-up
nobody sees), but for the deferrals listed here with their reason.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import pixmim
from tests.conftest import ROOT

CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
    "contracts"]
CONTRACT = {c["id"]: c["name"] for c in CONTRACTS}
needs_linter = pytest.mark.skipif(
    importlib.util.find_spec("importlinter") is None,
    reason="import-linter is not installed (requirements.lock pins it: run `make env`)")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """import-linter's CLI on the package and pyproject.toml under ``root`` (no cache)."""
    cli = "import sys; from importlinter.cli import lint_imports_command; lint_imports_command()"
    env = {**os.environ, "PYTHONPATH": str(root), "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-c", cli, "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root, env=env, capture_output=True, text=True, timeout=120)


@needs_linter
def test_every_contract_is_kept():
    res = lint_imports(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    for contract in CONTRACTS:
        assert re.search(rf"^{re.escape(contract['name'])} KEPT", res.stdout, re.M), (
            contract["name"], res.stdout)
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in res.stdout


# contract id -> (file, the import that crosses its layer, the chain's
# first link as import-linter prints it). An import inside a function counts as well.
BREACHES = {
    "torch-free": ("pixmim/workflow/launch.py", "def _crossing():\n    import torch\n",
                   "pixmim.workflow.launch -> torch"),
    "openmmlab": ("pixmim/stages/finetune.py", "import mmengine\n",
                  "pixmim.stages.finetune -> mmengine"),
    "layers": ("pixmim/engine/loop.py", "import pixmim.stages.common\n",
               "pixmim.engine.loop -> pixmim.stages.common"),
    "workflow": ("pixmim/workflow/budget.py", "from pixmim.models import create_model\n",
                 "pixmim.workflow.budget -> pixmim.models"),
    "analysis-report": ("pixmim/analysis/frequency.py",
                        "from pixmim.report.stats import estimate\n",
                        "pixmim.analysis.frequency -> pixmim.report.stats"),
}


def test_each_contract_has_a_breach():
    assert set(BREACHES) == set(CONTRACT)


@needs_linter
@pytest.mark.parametrize("contract", sorted(BREACHES))
def test_a_crossed_layer_breaks_its_contract(contract, tmp_path):
    """A copy of the package with one import that crosses the contract's layer: lint-imports
    fails and names that contract (broken) and the crossing import."""
    shutil.copytree(ROOT / "pixmim", tmp_path / "pixmim",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    rel, line, link = BREACHES[contract]
    with (tmp_path / rel).open("a") as f:
        f.write("\n\n" + line)
    res = lint_imports(tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert re.search(rf"^{re.escape(CONTRACT[contract])} BROKEN", res.stdout, re.M), res.stdout
    assert link in res.stdout


def test_the_openmmlab_contract_names_every_subpackage_but_downstream():
    """The OpenMMLab contract lists its sources; a new module of the package joins it."""
    (contract,) = [c for c in CONTRACTS if c["id"] == "openmmlab"]
    modules = {f"pixmim.{m.name}" for m in pkgutil.iter_modules(pixmim.__path__)}
    assert set(contract["source_modules"]) == modules - {"pixmim.downstream"}


# ------------------------------------------------------ imports inside functions
# Deferred on purpose: (file, imported module) -> why. The CLI and the data and dense
# stages find a command's module by name (importlib.import_module), which is no import
# statement, so that `--help` and the torch-free tools never load torch.
_NUMPY = ("numpy, deferred: imported only where a real dataset root is checked, so the DAG "
          "build and `budget` start without it")
DEFERRED: dict[tuple[str, str], str] = {
    ("pixmim/workflow/roots.py", "pixmim.evaluation.metrics"): _NUMPY,
    ("pixmim/workflow/roots.py", "pixmim.evaluation.shape_bias"): _NUMPY,
}
# Not yet moved to the module top: this many per file. The number may only fall (and must
# be lowered).
PENDING: dict[str, int] = {}


def own_imports_in_functions(path: Path) -> list[tuple[int, str]]:
    """(line, module) of each import of a ``pixmim`` module inside a function of ``path``."""
    found = []
    for fn in ast.walk(ast.parse(path.read_text())):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = ["pixmim.(relative)" if node.level else node.module or ""]
            else:
                continue
            found += [(node.lineno, n) for n in names if n.split(".")[0] == "pixmim"]
    return sorted(set(found))  # a nested function's import is seen from each enclosing one


def test_no_import_of_the_package_inside_a_function():
    extra, stale = [], []
    for path in sorted((ROOT / "pixmim").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        found = [(n, m) for n, m in own_imports_in_functions(path) if (rel, m) not in DEFERRED]
        if len(found) > PENDING.get(rel, 0):
            extra += [f"{rel}:{n}: {m}" for n, m in found]
        elif len(found) < PENDING.get(rel, 0):
            stale.append(f"{rel}: {len(found)}, not {PENDING[rel]}")
    assert not extra, ("imports of the package inside a function: move them to the module top "
                       "(or list a deliberate deferral in DEFERRED):\n" + "\n".join(extra))
    assert not stale, "fewer imports inside functions than PENDING says: lower it to\n" + \
        "\n".join(stale)
