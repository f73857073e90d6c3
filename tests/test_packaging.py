"""The package as pip installs it: declared dependencies, package data, the wheel.

The fast tests read pyproject.toml: every third-party import of the package is declared
(the core dependencies outside ``pixmim/downstream``), test-only tools are not run-time
requirements, and requirements.lock satisfies every declared range. The slow ones build a
wheel from the tracked files, install it (without dependencies: the test environment has
them) into a throw-away folder and run the CLI and a table build from there, in a folder
that is not the repository, so nothing is found through the checkout.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SELF = canonicalize_name(PYPROJECT["project"]["name"])
# The one package installed with --no-deps that the core imports (its dependencies are the
# core's instead: see the comment above `dependencies` in pyproject.toml).
CORE_NODEPS = {"imagecorruptions-imaug"}


def _requirements(reqs: list[str]) -> dict[str, Requirement]:
    out = {}
    for line in reqs:
        req = Requirement(line)
        if canonicalize_name(req.name) != SELF:  # an extra naming other extras
            out[canonicalize_name(req.name)] = req
    return out


CORE = _requirements(PYPROJECT["project"]["dependencies"])
EXTRAS = {k: _requirements(v) for k, v in PYPROJECT["project"]["optional-dependencies"].items()}


def _pins(path: Path) -> dict[str, str]:
    """``name==version`` lines of a requirements file (comments and blank lines skipped)."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            pins[canonicalize_name(req.name)] = str(req.specifier).removeprefix("==")
    return pins


def _third_party_imports(path: Path) -> set[str]:
    """Top-level modules a file imports (lazy imports inside functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {
        n for n in names if n not in sys.stdlib_module_names and n not in ("__future__", "pixmim")
    }


def test_every_import_of_the_package_is_declared():
    """An import outside pixmim/downstream needs a core dependency (`pip install .`); the
    dense stages may also use the `dense` extra and the --no-deps packages."""
    dists = packages_distributions()
    nodeps = set(_pins(ROOT / "requirements-nodeps.txt"))
    assert CORE_NODEPS <= nodeps
    undeclared = []
    for path in sorted((ROOT / "pixmim").rglob("*.py")):
        dense = "downstream" in path.relative_to(ROOT / "pixmim").parts
        allowed = set(CORE) | CORE_NODEPS | (set(EXTRAS["dense"]) | nodeps if dense else set())
        for module in sorted(_third_party_imports(path)):
            provided_by = {canonicalize_name(d) for d in dists.get(module, [module])}
            if not provided_by & allowed:
                undeclared.append(f"{path.relative_to(ROOT)}: {module} ({sorted(provided_by)})")
    assert not undeclared, "imports not declared in pyproject.toml:\n" + "\n".join(undeclared)


def test_test_tools_are_not_runtime_requirements():
    assert {"pytest", "hypothesis"} <= set(EXTRAS["test"])
    assert not set(EXTRAS["test"]) & set(CORE)


def test_the_lock_satisfies_every_declared_range():
    """What `make env` installs (requirements.lock) is within what pyproject declares, and
    torch / torchvision are pinned exactly as there."""
    lock = _pins(ROOT / "requirements.lock")
    declared = [*CORE.values(), *(r for extra in EXTRAS.values() for r in extra.values())]
    outside = [
        f"{r} (lock: {lock.get(canonicalize_name(r.name), 'absent')})"
        for r in declared
        if not r.specifier.contains(lock.get(canonicalize_name(r.name), "0"), prereleases=True)
    ]
    assert not outside, "declared ranges the lock does not satisfy: " + ", ".join(outside)
    for name in ("torch", "torchvision"):
        assert str(CORE[name].specifier) == f"=={lock[name]}"


# ---------------------------------------------------------------- the wheel
def _tracked(*paths: str) -> list[Path]:
    """The files git tracks under ``paths`` (what a clone has), relative to ROOT."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--", *paths],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [Path(p) for p in out.split("\0") if p and (ROOT / p).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built (pip, no isolation: the lock's setuptools) from a copy of the tracked
    files pyproject.toml needs, so the build writes nothing into the checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    for rel in _tracked("pyproject.toml", "README.md", "LICENSE", "pixmim"):
        (tmp / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, tmp / "src" / rel)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(tmp / "dist"),
            str(tmp / "src"),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (found,) = (tmp / "dist").glob("pixmim_bench-*.whl")
    return found


@pytest.mark.slow
def test_wheel_ships_package_data_entry_point_and_license(wheel):
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        meta = whl.read(f"{info}/METADATA").decode()
        entry_points = whl.read(f"{info}/entry_points.txt").decode()
    data = {p.as_posix() for p in _tracked("pixmim") if p.suffix != ".py"}
    assert {"pixmim/workflow/config.schema.yaml", "pixmim/report/paper_values.yaml"} <= data
    assert data - names == set(), "package data missing from the wheel"
    assert "[console_scripts]\npixmim = pixmim.__main__:main" in entry_points
    assert "License-Expression: Apache-2.0" in meta and f"{info}/licenses/LICENSE" in names
    runtime = [
        line
        for line in meta.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    assert any(" torch==" in line for line in runtime)
    assert not [line for line in runtime if "pytest" in line or "hypothesis" in line]


def _table_fixture(work: Path) -> Path:
    """A table2 spec over two one-seed runs' metrics.json (the workflow writes such specs)."""
    rows = []
    for i, (label, top1) in enumerate({"MAE": 40.0, "PixMIM MAE": 41.5}.items()):
        metrics = work / "runs" / f"exp{i}" / "metrics.json"
        metrics.parent.mkdir(parents=True)
        metrics.write_text(json.dumps({"top1_best": top1}))
        rows.append(
            {
                "label": label,
                "experiment": f"exp{i}",
                "baseline": "MAE" if i else None,
                "cells": {"lin": {"files": [str(metrics)], "key": "top1_best"}},
            }
        )
    spec = work / "table2.spec.yaml"
    spec.write_text(yaml.safe_dump({"table": "table2", "title": "Table 2", "rows": rows}))
    return spec


@pytest.mark.slow
def test_installed_wheel_runs_the_cli_and_builds_a_table(wheel, tmp_path):
    site, work = tmp_path / "site", tmp_path / "work"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    work.mkdir()
    shutil.copytree(ROOT / "config", work / "config")  # the workflow's, read from the cwd
    # -P and a PYTHONPATH of the install alone: neither the checkout nor the cwd is on the
    # path (the environment's editable install of the checkout comes after the target)
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=300)

    probe = run(
        sys.executable,
        "-P",
        "-c",
        "import pixmim, pixmim.workflow as W; print(pixmim.__file__); "
        "print(W.SCHEMA); W.check_config(W.load_config()); print('valid')",
    )
    assert probe.returncode == 0, probe.stderr
    module, schema, ok = probe.stdout.split()
    assert Path(module).is_relative_to(site) and Path(schema).is_relative_to(site)
    assert ok == "valid"  # the schema (package data) and config/ of the cwd

    help_ = run(sys.executable, "-P", "-m", "pixmim", "--help")
    assert help_.returncode == 0 and "table" in help_.stdout, help_.stderr
    version = PYPROJECT["project"].get("version") or wheel.name.split("-")[1]
    for cmd in ([sys.executable, "-P", "-m", "pixmim"], [str(site / "bin" / "pixmim")]):
        res = run(*cmd, "--version")
        assert res.returncode == 0 and res.stdout.strip() == f"pixmim {version}", res.stderr

    spec = _table_fixture(work)
    res = run(
        sys.executable,
        "-P",
        "-m",
        "pixmim",
        "table",
        "--spec",
        str(spec),
        "--out",
        str(work / "tables" / "table2"),
    )
    assert res.returncode == 0, res.stderr
    md = (work / "tables" / "table2.md").read_text()
    assert "41.5 (67.2)" in md and "+1.5 (+1.6)" in md  # the paper's values: package data


def test_make_envs_two_pip_halves_write_no_folder_in_common():
    """`make env` installs the lock as two concurrent pip processes (Makefile ``LOCK_A``):
    together they are the lock, and no top-level folder of site-packages is written by a
    distribution of each half (two processes would race on its files)."""
    import re
    from importlib.metadata import distribution

    pattern = re.search(r"^LOCK_A := (.+)$", (ROOT / "Makefile").read_text(), re.M)[1]
    lines = (ROOT / "requirements.lock").read_text().splitlines()
    half_a = [line for line in lines if re.search(pattern, line)]
    half_b = [line for line in lines if not re.search(pattern, line)]
    assert sorted(half_a + half_b) == sorted(lines)
    assert any(line.startswith("torch==") for line in half_a) and len(half_b) > len(half_a)

    def folders(half: list[str]) -> set[str]:
        out = set()
        for line in half:
            if line.startswith("#") or "==" not in line:
                continue
            files = distribution(line.split("==")[0]).files or []
            out |= {f.parts[0] for f in files if len(f.parts) > 1
                    and not f.parts[0].endswith((".dist-info", ".data")) and f.parts[0] != ".."}
        return out

    common = folders(half_a) & folders(half_b)
    assert not common, f"folders written by both halves of the lock: {sorted(common)}"
