"""The conda env files (envs/*.yaml) that `snakemake --sdm conda` builds for the rules.

Proven here, offline: each file parses as a conda env file and each pip line as pip itself
parses requirement files; every pip requirement (and every post-deploy one) is pinned to
exactly the lock's version; each pip part is closed under the dependencies its packages
declare (read from this venv, which is the lock's), so pip installs nothing unlisted; every
rule that runs `python -m pixmim` declares an env, and that env provides every distribution
its command imports (the static import closure of the modules it runs). The slow test has
pip itself resolve each pip part against the package index, without the lock, and checks
that it picks exactly the listed versions. Not proven: that conda-forge serves python 3.11
and pip (the conda part), nor that the envs run on a cluster.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import importlib.util
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

ENVS = ROOT / "envs"
FILES = sorted(ENVS.glob("*.yaml"))
_spec = importlib.util.spec_from_file_location("envs_pin", ENVS / "pin.py")
pin = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pin)

# Declared dependencies a post-deploy package is installed without, and what stands in.
STAND_INS = {"opencv-python": "opencv-python-headless"}  # both provide cv2
# (env, package): post-deploy packages none of whose declared dependencies are needed.
FILES_ONLY = {("data", "timm"): "only its class-list files are read (pixmim.data.imagenet_meta)"}


def name(req: str) -> str:
    return canonicalize_name(Requirement(req).name)


def conda_part(path: Path) -> list[str]:
    return [d for d in yaml.safe_load(path.read_text())["dependencies"] if isinstance(d, str)]


def installs(path: Path) -> dict[str, str]:
    """Every requirement an env installs with pip (pip part + post-deploy), by name."""
    reqs = [*pin.pip_part(path), *pin.post_deploy(path)]
    return {name(r): r for r in reqs}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_env_file_parses(path, tmp_path):
    env = yaml.safe_load(path.read_text())
    assert set(env) == {"name", "channels", "dependencies"}, path
    assert env["name"] == f"pixmim-{path.stem}"
    conda = conda_part(path)
    assert "pip" in conda and pin.pip_part(path), "every env installs its packages with pip"
    python = [d.partition("=")[2] for d in conda if d.partition("=")[0] == "python"]
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert len(python) == 1 and SpecifierSet(requires).contains(f"{python[0]}.0"), python
    # conda-part versions agree with the lock (everything but python and pip goes by pip)
    lock = pin.lock()
    for dep in conda:
        n, _, version = dep.partition("=")
        if n not in ("python", "pip"):
            assert str(lock[canonicalize_name(n)].specifier).lstrip("=").startswith(version), dep
    # pip's own requirement-file parser accepts every line (as conda hands them to pip)
    from pip._internal.network.session import PipSession
    from pip._internal.req.req_file import parse_requirements

    req_file = tmp_path / "requirements.txt"
    req_file.write_text("\n".join(pin.pip_part(path)) + "\n")
    parsed = list(parse_requirements(str(req_file), session=PipSession()))
    assert [p.requirement for p in parsed] == pin.pip_part(path)
    assert all(not p.options for p in parsed), "per-line options are not for conda's pip part"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_pinned_to_the_lock(path):
    lock = pin.lock()
    for n, req in installs(path).items():
        assert n in lock, f"{path.name}: {req} is not in requirements.lock"
        assert Requirement(req).specifier == lock[n].specifier, \
            f"{path.name}: {req}, the lock has {lock[n]}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_pip_part_closed_under_dependencies(path):
    """pip installs nothing the file does not list: each listed package's declared
    dependencies (this venv's metadata, the lock's versions) are listed too."""
    lock, listed = pin.lock(), installs(path)
    post = {name(r) for r in pin.post_deploy(path)}
    marker_env = {**default_environment(), "extra": ""}
    missing = {}
    for n in listed:
        assert md.version(n) == str(lock[n].specifier).lstrip("="), f"venv differs from lock: {n}"
        if (path.stem, n) in FILES_ONLY:
            continue
        for dep in map(Requirement, md.requires(n) or []):
            if dep.marker is not None and not dep.marker.evaluate(marker_env):
                continue
            d = canonicalize_name(dep.name)
            if n in post and d in STAND_INS:
                d = STAND_INS[d]
            if d not in listed:
                missing.setdefault(d, []).append(n)
    assert not missing, f"{path.name}: add (python envs/pin.py) {missing}"


# ----------------------------------------------------------- rules -> envs -> imports
def workflow_rules(results: str):
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    with SnakemakeApi(OutputSettings()) as api:
        wf = api.workflow(resource_settings=ResourceSettings(),
                          config_settings=ConfigSettings(config={"results": results}),
                          snakefile=ROOT / "Snakefile", workdir=ROOT)._workflow
        return [(r.name, r.shellcmd or "", r.conda_env) for r in wf.rules]


def module_file(mod: str) -> Path | None:
    base = ROOT / Path(*mod.split("."))
    for p in (base / "__init__.py", base.with_suffix(".py")):
        if p.is_file():
            return p
    return None


# Modules whose module names in strings are no imports: the CLI's command table (dispatched
# by entry_modules), the registry (imports on request) and the declarations (they name the
# modules of the methods' classes and of the stages; entry_modules adds a job's own), and
# the warm server's preload (pixmim.warm.PRELOAD: the server never runs with --sdm conda,
# where these envs are used, and a preload missing from an env is only skipped).
DISPATCH = {"pixmim.__main__", "pixmim.registry", "pixmim.methods", "pixmim.pipeline",
            "pixmim.warm"}


def direct_imports(mod: str) -> tuple[set[str], set[str]]:
    """(pixmim modules, other top-level names) that ``mod`` imports anywhere in its code:
    import statements, module names in string constants (importlib.import_module targets)
    and find_spec("x") look-ups."""
    path = module_file(mod)
    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.rsplit(".", node.level - 1)[0] if node.level > 1 else pkg
                base = f"{up}.{base}" if base else up
            names.add(base)
            names |= {f"{base}.{a.name}" for a in node.names if module_file(f"{base}.{a.name}")}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and re.fullmatch(r"pixmim(\.\w+)+", node.value) and mod not in DISPATCH:
            names.add(node.value)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "find_spec" \
                and node.args and isinstance(node.args[0], ast.Constant):
            names.add(str(node.args[0].value))
    ours, other = set(), set()
    for n in names:
        if n.split(".")[0] == "pixmim":
            ours.add(n if module_file(n) else n.rpartition(".")[0])
        elif n.split(".")[0] not in sys.stdlib_module_names and n != "__future__":
            other.add(n.split(".")[0])
    return ours, other


def third_party(modules: list[str]) -> dict[str, str]:
    """Top-level import name -> a pixmim module importing it, over the import closure."""
    seen, out, todo = set(), {}, list(modules)
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        parts = mod.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages
        ours, other = direct_imports(mod)
        todo += ours
        for n in other:
            out.setdefault(n, mod)
    return out


def entry_modules(rule: str, shellcmd: str, config: dict) -> list[str]:
    """The modules a rule's ``python -m pixmim <command>`` runs."""
    from pixmim import registry
    from pixmim import workflow as W
    from pixmim.__main__ import TOOLS

    command = re.search(r"-m pixmim ([\w-]+)", shellcmd)[1]
    mods = ["pixmim.__main__", "pixmim.registry"]
    if command != "run":
        return [*mods, TOOLS[command][0]]
    stages = registry.stages(W.plugins(config))
    family = W.rule_families(config)[rule]["stages"]
    methods = [m.module for m in registry.methods(W.plugins(config)).values()]
    return [*mods, *methods, *{stages[s].module for s in family}]


def test_every_pixmim_rule_has_an_env_providing_its_imports(tmp_path):
    from pixmim import workflow as W

    config = W.load_config()
    providers = md.packages_distributions()
    # the training rules: `{params.launch} -m pixmim run` (python, or torchrun / srun + torchrun
    # in the rule's env: pixmim.workflow.launch)
    pixmim_rules = [r for r in workflow_rules(str(tmp_path)) if "python -m pixmim" in r[1]
                    or "{params.launch} -m pixmim" in r[1]]
    assert {r[0] for r in pixmim_rules} >= {"pretrain", "linear_probe", "dense", "make_table",
                                           "generate_data", "init_mlflow"}
    for rule, shellcmd, conda_env in pixmim_rules:
        assert conda_env, f"rule {rule} runs python -m pixmim without a conda env"
        env = (ROOT / "workflow" / "rules" / conda_env).resolve()
        assert env.parent == ENVS and env.is_file(), (rule, conda_env)
        listed = installs(env)
        for top, importer in third_party(entry_modules(rule, shellcmd, config)).items():
            dists = {canonicalize_name(d) for d in providers.get(top, [])}
            assert dists, f"{importer} imports {top}, which no installed distribution provides"
            assert dists & set(listed), \
                f"rule {rule}: {importer} imports {top} ({', '.join(dists)}), not in {env.name}"


def test_the_table_build_imports_no_torch():
    """`python -m pixmim table` imports no torch (it runs in the training env, which has
    the MLflow it logs the table with, but does not load torch)."""
    assert "torch" not in third_party(["pixmim.__main__", "pixmim.report.tables"])


@pytest.mark.slow
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_pip_part_resolves_to_exactly_the_listed_versions(path):
    """pip resolves the pip part against the package index as conda would hand it over (no
    lock as constraints) and installs exactly the listed distributions and versions."""
    resolved = {canonicalize_name(n): v for n, v in
                pin.resolve(pin.pip_part(path), constraints=False).items()}
    listed = {name(r): str(Requirement(r).specifier).lstrip("=") for r in pin.pip_part(path)}
    assert resolved == listed
