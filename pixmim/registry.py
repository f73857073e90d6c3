"""The method and stage registries, read without importing torch.

A pretraining method is one module holding its model class and a top-level ``METHOD``
declaration; an evaluation stage is one module holding ``run(cfg, out)``, ``main(argv)`` and
a top-level ``STAGES`` declaration (a list: one module may declare several stages, e.g.
``finetune`` and its few-shot subsets). Everything else (the CLI, the Snakemake rules, the
job configs, the schema's enums, the table columns, the budget) is derived from these
declarations.

The declarations are plain data (literals, ``dict(...)``, names bound to such data earlier
in the same module or imported from another declaring module), so this module reads them
from the source with :mod:`ast` instead of importing the module: the Snakefile builds its
DAG without torch. Built-in declarations are found by scanning ``pixmim/models/*.py`` and
``pixmim/stages/*.py``; user modules are named in the config key ``plugins`` (module paths,
importable from the working directory), e.g. ``plugins: [mylab.methods.mymae]``.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).resolve().parent
_BUILTIN_DIRS = {"METHOD": ("pixmim.models", PACKAGE / "models"),
                 "STAGES": ("pixmim.stages", PACKAGE / "stages")}
# Plugins of this process (set once by a job from its config, see use_plugins).
_PLUGINS: tuple[str, ...] = ()


class RegistryError(ValueError):
    """A declaration is missing, malformed, or names something unknown."""


@dataclass(frozen=True)
class MethodSpec:
    """One pretraining method.

    Attributes:
        name: the method's key in configs and job ids (``mae``).
        module: the module holding the class (``pixmim.models.mae``).
        model: the class name in that module (``MAE``).
        family: the encoder family: a package of :mod:`pixmim.families` (or a plugin's
            dotted path) holding everything the family means; the classifier, the key
            maps, the dense backbones and recipes and the budget choose by it.
        archs: architecture name -> model kwargs.
        pretrain_only: key prefixes of the parameters only pretraining uses (decoder, mask
            token, ...): every downstream model drops them (``pixmim.families``).
    """

    name: str
    module: str
    model: str
    family: str
    archs: dict[str, dict[str, Any]]
    pretrain_only: tuple[str, ...] = ()


@dataclass(frozen=True)
class Column:
    """A table column fed by a stage: ``key`` of its ``metrics.json``, shown as ``header``."""

    name: str
    stage: str
    key: str
    header: str


@dataclass(frozen=True)
class StageSpec:
    """One per-experiment stage of the workflow.

    Attributes:
        name: the stage's key (the folder ``results/runs/<exp>/<name>`` and the CLI command).
        module: the module exposing ``run(cfg, out)`` and ``main(argv)``.
        help: one line for ``python -m pixmim --help``.
        rule: the Snakemake rule family that runs it (also its ``threads`` key).
        consumes: ``pretrain`` (the pretraining checkpoint), ``finetune`` (the fine-tuned
            model) or None (the pretraining itself).
        outputs: files the stage writes into its folder (``metrics.json`` last).
        job: how its job config is resolved: ``train`` (the shared loop's keys from the
            config section ``section``), ``finetune`` (the fine-tune section and recipe),
            ``evaluate`` (the evaluation sets), ``dense`` (a dense task section), ``none``,
            or ``options`` (the section copied as the job's ``options``: plugin stages).
        section: its config section (None: none).
        params: job-resolution parameters (``fraction``, ``task``;
            ``eval_sets``: the ``data.eval_roots`` an evaluation stage reads).
        data: the generated data it reads on the embedded default: ``images``, ``views``,
            ``scenes`` or None.
        columns: table column -> (metrics key, header).
        cost: budget model: ``{"kind": "pretrain" | "epochs" | "iters" | "images",
            "passes": "forward" | "train", "images": n (kind images), "heads": x (the dense
            heads' FLOPs share, an assumption)}``: FLOPs per image from the encoder family.
    """

    name: str
    module: str
    help: str
    rule: str
    consumes: str | None = "pretrain"
    outputs: tuple[str, ...] = ("metrics.json",)
    job: str = "none"
    section: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    data: str | None = None
    columns: dict[str, tuple[str, str]] = field(default_factory=dict)
    cost: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------ reading declarations
_SAFE_CALLS = {"dict": dict, "tuple": tuple, "list": list}


class _Reader:
    """Evaluate top-level data assignments of one module's source, without running it.

    A name is what the module binds it to at that point: the last top-level assignment or
    ``from X import Y`` before the statement that reads it (the end of the module for a
    declaration), so ``ARCHS = {**ARCHS, ...}`` after ``from ... import ARCHS`` reads the
    imported table."""

    def __init__(self, module: str, path: Path) -> None:
        self.module, self.path = module, path
        try:
            self.tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except SyntaxError as err:
            raise RegistryError(f"{path}:{err.lineno}: {err.msg}") from None
        # name -> [(statement index, value node | (module, attr) of an import)], in order
        self.bindings: dict[str, list[tuple[int, Any]]] = {}
        for i, node in enumerate(self.tree.body):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for a in node.names:
                    self.bindings.setdefault(a.asname or a.name, []).append(
                        (i, (node.module, a.name)))
            elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    if isinstance(t, ast.Name):
                        self.bindings.setdefault(t.id, []).append((i, node.value))
        self.values: dict[tuple[str, int], Any] = {}

    def get(self, name: str, before: int | None = None) -> Any:
        """The value of ``name`` just before top-level statement ``before`` (None: at the end
        of the module)."""
        bound = [b for b in self.bindings.get(name, ()) if before is None or b[0] < before]
        if not bound:
            raise RegistryError(f"{self.path}: no top-level data named {name!r}")
        i, what = bound[-1]
        if (name, i) not in self.values:
            self.values[(name, i)] = (_reader(what[0]).get(what[1]) if isinstance(what, tuple)
                                      else self.eval(what, i))
        return self.values[(name, i)]

    def eval(self, node: ast.AST, at: int) -> Any:  # noqa: C901 - one branch per node kind
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return self.get(node.id, at)
        if isinstance(node, ast.Tuple | ast.List):
            items = [x for e in node.elts for x in (
                self.eval(e.value, at) if isinstance(e, ast.Starred) else [self.eval(e, at)])]
            return tuple(items) if isinstance(node, ast.Tuple) else items
        if isinstance(node, ast.Dict):
            out: dict[Any, Any] = {}
            for k, v in zip(node.keys, node.values, strict=True):
                if k is None:
                    out.update(self.eval(v, at))
                else:
                    out[self.eval(k, at)] = self.eval(v, at)
            return out
        if isinstance(node, ast.Subscript):
            return self.eval(node.value, at)[self.eval(node.slice, at)]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -self.eval(node.operand, at)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in _SAFE_CALLS:
            args = [self.eval(a, at) for a in node.args]
            kwargs: dict[str, Any] = {}
            for kw in node.keywords:
                if kw.arg is None:
                    kwargs.update(self.eval(kw.value, at))
                else:
                    kwargs[kw.arg] = self.eval(kw.value, at)
            return _SAFE_CALLS[node.func.id](*args, **kwargs)
        raise RegistryError(f"{self.path}:{getattr(node, 'lineno', '?')}: a declaration holds "
                            f"only data (literals, dict(...), names); got {ast.dump(node)[:60]}")


@cache
def _reader(module: str) -> _Reader:
    try:  # a dotted name imports its parent packages, which may be missing
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise RegistryError(f"plugin module {module!r} not found (importable from the "
                            "working directory, e.g. mylab.methods.mymae)")
    return _Reader(module, Path(spec.origin))


def _declares(path: Path, name: str) -> bool:
    """Whether the source binds ``name`` at top level (``NAME = ...``, ``NAME: T = ...``)."""
    return re.search(rf"^{name}\s*(:[^=\n]*)?=(?!=)", path.read_text(encoding="utf-8"),
                     re.MULTILINE) is not None


@cache
def _builtin_modules(name: str) -> tuple[str, ...]:
    package, folder = _BUILTIN_DIRS[name]
    return tuple(f"{package}.{p.stem}" for p in sorted(folder.glob("*.py"))
                 if _declares(p, name))


def _modules(name: str, plugins: tuple[str, ...]) -> list[str]:
    out = list(_builtin_modules(name))
    for module in plugins:
        path = _reader(module).path
        if _declares(path, name):
            out.append(module)
        elif not any(_declares(path, other) for other in _BUILTIN_DIRS):
            raise RegistryError(f"plugin module {module!r} ({path}) declares neither METHOD "
                                "nor STAGES")
    return out


# ------------------------------------------------------------------ the registries
def use_plugins(plugins: list[str] | tuple[str, ...] | None) -> None:
    """Make ``plugins`` (module paths) part of this process's registries (a job calls this
    with its config's ``plugins``)."""
    global _PLUGINS
    _PLUGINS = tuple(plugins or ())


def _plugins(plugins: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    return _PLUGINS if plugins is None else tuple(plugins)


@cache
def _methods(plugins: tuple[str, ...]) -> dict[str, MethodSpec]:
    out: dict[str, MethodSpec] = {}
    for module in _modules("METHOD", plugins):
        d = dict(_reader(module).get("METHOD"))
        d["pretrain_only"] = tuple(d.get("pretrain_only", ()))
        try:
            spec = MethodSpec(module=module, **d)
        except TypeError as err:
            raise RegistryError(f"{module}.METHOD: {err}") from None
        if spec.name in out:
            raise RegistryError(f"method {spec.name!r} declared twice ({out[spec.name].module}, "
                                f"{module})")
        out[spec.name] = spec
    return out


@cache
def _stages(plugins: tuple[str, ...]) -> dict[str, StageSpec]:
    out: dict[str, StageSpec] = {}
    for module in _modules("STAGES", plugins):
        for d in _reader(module).get("STAGES"):
            d = dict(d)
            d["outputs"] = tuple(d.get("outputs", ("metrics.json",)))
            d["columns"] = {k: tuple(v) for k, v in d.get("columns", {}).items()}
            try:
                spec = StageSpec(module=d.pop("module", module), **d)
            except TypeError as err:
                raise RegistryError(f"{module}.STAGES: {err}") from None
            if spec.name in out:
                raise RegistryError(f"stage {spec.name!r} declared twice")
            out[spec.name] = spec
    # pretraining first, then its consumers, then what consumes those (a stable order)
    return dict(sorted(out.items(), key=lambda kv: _depth(out, kv[1])))


def _depth(table: dict[str, StageSpec], spec: StageSpec) -> int:
    return 0 if spec.consumes is None or spec.consumes not in table \
        else 1 + _depth(table, table[spec.consumes])


def methods(plugins: list[str] | tuple[str, ...] | None = None) -> dict[str, MethodSpec]:
    """Every registered method (built-in, then plugins), by name."""
    return _methods(_plugins(plugins))


def method(name: str, plugins: list[str] | tuple[str, ...] | None = None) -> MethodSpec:
    table = methods(plugins)
    if name not in table:
        raise KeyError(f"unknown method {name!r}; registered: {sorted(table)}")
    return table[name]


def stages(plugins: list[str] | tuple[str, ...] | None = None) -> dict[str, StageSpec]:
    """Every per-experiment stage (pretrain first), by name."""
    return _stages(_plugins(plugins))


def stage(name: str, plugins: list[str] | tuple[str, ...] | None = None) -> StageSpec:
    table = stages(plugins)
    if name not in table:
        raise KeyError(f"unknown stage {name!r}; registered: {sorted(table)}")
    return table[name]


def columns(plugins: list[str] | tuple[str, ...] | None = None) -> dict[str, Column]:
    """Table column -> the stage and metrics key that fill it."""
    out: dict[str, Column] = {}
    for s in stages(plugins).values():
        for col, (key, header) in s.columns.items():
            if col in out:
                raise RegistryError(f"column {col!r} declared by {out[col].stage} and {s.name}")
            out[col] = Column(col, s.name, key, header)
    return out


def families(plugins: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """The encoder families the registered methods declare."""
    return sorted({m.family for m in methods(plugins).values()})


def model_class(name: str) -> type:
    """The model class of a method (imports its module, and so torch)."""
    spec = method(name)
    return getattr(importlib.import_module(spec.module), spec.model)


def stage_module(name: str):
    """The module of a stage (imports it)."""
    return importlib.import_module(stage(name).module)
