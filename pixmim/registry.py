"""The method and stage registries: the built-in declarations plus the plugins', by name.

The built-ins are plain data in torch-free modules (:mod:`pixmim.methods`,
:mod:`pixmim.pipeline`); a plugin is a module named in the config key ``plugins`` (importable
from the working directory) that declares ``METHODS = [Method(...)]`` and/or
``STAGES = [Stage(...)]`` (:mod:`pixmim.declare`). The registry imports the plugin modules:
keep a plugin's declaring module torch-free (its class or stage code in another module that
the declaration names) and the DAG still builds without torch. Nothing here imports a model
or a stage; :func:`model_class` and :func:`stage_module` do, for the job that runs one.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import sys
import traceback
from functools import cache
from pathlib import Path

from pixmim.declare import Column, Method, RegistryError, Stage
from pixmim.methods import METHODS
from pixmim.pipeline import STAGES

__all__ = ["Column", "Method", "RegistryError", "Stage", "columns", "families", "method",
           "methods", "model_class", "stage", "stage_module", "stages", "use_plugins"]

# Plugins of this process (set once by a job from its config, see use_plugins).
_PLUGINS: tuple[str, ...] = ()
Plugins = list[str] | tuple[str, ...] | None


def use_plugins(plugins: Plugins) -> None:
    """Make ``plugins`` (module paths) part of this process's registries (a job calls this
    with its config's ``plugins``)."""
    global _PLUGINS
    _PLUGINS = tuple(plugins or ())


def _plugins(plugins: Plugins) -> tuple[str, ...]:
    return _PLUGINS if plugins is None else tuple(plugins)


def _import(module: str):
    """Import a plugin module; anything that goes wrong is one line naming it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name and (module == err.name or module.startswith(err.name + ".")):
            raise RegistryError(f"plugin module {module!r} not found (importable from the "
                                "working directory, e.g. mylab.methods.mymae)") from None
        raise RegistryError(f"plugin module {module!r}: {err}") from None
    except SyntaxError as err:
        raise RegistryError(f"{err.filename}:{err.lineno}: {err.msg}") from None
    except Exception as err:  # noqa: BLE001 - a bad declaration: say where, in one line
        where = _where(err, module)
        raise RegistryError(f"{where}{err}") from None


def _where(err: BaseException, module: str) -> str:
    """``file:line: `` of the plugin's own line that raised (the declaration), if any."""
    spec = sys.modules.get(module) or importlib.util.find_spec(module)
    origin = getattr(spec, "__file__", None) or getattr(spec, "origin", None)
    frames = [f for f in traceback.extract_tb(err.__traceback__)
              if origin and Path(f.filename) == Path(origin)]
    return f"{frames[-1].filename}:{frames[-1].lineno}: " if frames else f"{module}: "


def _declared(module: str, kind: type) -> list:
    """The declarations of ``kind`` a plugin module makes (``METHODS`` or ``STAGES``)."""
    mod = _import(module)
    attr = "METHODS" if kind is Method else "STAGES"
    if not hasattr(mod, "METHODS") and not hasattr(mod, "STAGES"):
        raise RegistryError(f"plugin module {module!r} ({mod.__file__}) declares neither "
                            "METHODS nor STAGES")
    items = getattr(mod, attr, [])
    if not isinstance(items, list | tuple) or not all(isinstance(x, kind) for x in items):
        raise RegistryError(f"{module}.{attr} must be a list of {kind.__name__}(...) "
                            f"(pixmim.declare), got {items!r:.80}")
    return list(items)


def _table(kind: type, builtin: tuple[str, list], plugins: tuple[str, ...]) -> dict:
    out: dict = {}
    for source, items in [builtin, *((m, _declared(m, kind)) for m in plugins)]:
        for item in items:
            if item.name in out:
                raise RegistryError(f"{kind.__name__.lower()} {item.name!r} declared twice "
                                    f"({out[item.name].source}, {source})")
            out[item.name] = dataclasses.replace(item, source=source)
    return out


@cache
def _methods(plugins: tuple[str, ...]) -> dict[str, Method]:
    return _table(Method, ("pixmim.methods", METHODS), plugins)


@cache
def _stages(plugins: tuple[str, ...]) -> dict[str, Stage]:
    table = _table(Stage, ("pixmim.pipeline", STAGES), plugins)
    # pretraining first, then its consumers, then what consumes those (a stable order)
    return dict(sorted(table.items(), key=lambda kv: _depth(table, kv[1])))


def _depth(table: dict[str, Stage], spec: Stage) -> int:
    return 0 if spec.consumes is None or spec.consumes not in table \
        else 1 + _depth(table, table[spec.consumes])


def methods(plugins: Plugins = None) -> dict[str, Method]:
    """Every registered method (built-in, then plugins), by name."""
    return _methods(_plugins(plugins))


def method(name: str, plugins: Plugins = None) -> Method:
    table = methods(plugins)
    if name not in table:
        raise KeyError(f"unknown method {name!r}; registered: {sorted(table)}")
    return table[name]


def stages(plugins: Plugins = None) -> dict[str, Stage]:
    """Every per-experiment stage (pretrain first), by name."""
    return _stages(_plugins(plugins))


def stage(name: str, plugins: Plugins = None) -> Stage:
    table = stages(plugins)
    if name not in table:
        raise KeyError(f"unknown stage {name!r}; registered: {sorted(table)}")
    return table[name]


def columns(plugins: Plugins = None) -> dict[str, Column]:
    """Table column -> the stage and metrics key that fill it."""
    out: dict[str, Column] = {}
    for s in stages(plugins).values():
        for col, (key, header) in s.columns.items():
            if col in out:
                raise RegistryError(f"column {col!r} declared by {out[col].stage} and {s.name}")
            out[col] = Column(col, s.name, key, header)
    return out


def families(plugins: Plugins = None) -> list[str]:
    """The encoder families the registered methods declare."""
    return sorted({m.family for m in methods(plugins).values()})


def model_class(name: str) -> type:
    """The model class of a method (imports its module, and so torch)."""
    spec = method(name)
    module = importlib.import_module(spec.module)
    if not hasattr(module, spec.class_name):
        raise RegistryError(f"method {name!r}: {spec.module} has no class "
                            f"{spec.class_name!r} (declared by {spec.source})")
    return getattr(module, spec.class_name)


def stage_module(name: str):
    """The module of a stage (imports it)."""
    return importlib.import_module(stage(name).module)
