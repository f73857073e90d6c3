"""What a method and a stage declaration is: two frozen dataclasses, torch-free.

A declaration is plain data in a torch-free module that the DAG imports: the built-in methods
in :mod:`pixmim.methods`, the built-in stages in :mod:`pixmim.pipeline`, a user's in a plugin
module named in the config key ``plugins`` (``METHODS = [Method(...)]`` and/or
``STAGES = [Stage(...)]``). The class or stage code a declaration names is imported only by
the job that runs it, so the Snakefile builds its DAG without torch. :mod:`pixmim.registry`
gathers the declarations; everything else (the CLI, the rules, the job configs, the schema's
enums, the table columns, the budget) is derived from them.

A bad declaration fails where it is written, with one line naming the field
(:class:`RegistryError`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# Names become job ids, folders and CLI commands.
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_DOTTED = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")
# How a stage's job config is resolved (pixmim.workflow.jobs.JOB_KINDS).
JOB_KINDS = ("train", "finetune", "evaluate", "frequency", "dense", "options", "none")
# The generated data a stage reads on the embedded default (pixmim.data.generate).
DATA_KINDS = ("images", "views", "scenes")
# The budget's cost models (pixmim.workflow.budget).
COST_KINDS = ("pretrain", "epochs", "iters", "images")


class RegistryError(ValueError):
    """A declaration is missing, malformed, or names something unknown."""


def _check(ok: bool, what: str, message: str) -> None:
    if not ok:
        raise RegistryError(f"{what}: {message}")


@dataclass(frozen=True)
class Method:
    """One pretraining method.

    Attributes:
        name: its key in configs and job ids (``mae``).
        model: its class, ``"module:Class"`` (``"pixmim.models.mae:MAE"``); imported by the
            jobs that build it, never by the DAG.
        family: its encoder family: a package of :mod:`pixmim.families` (or a plugin's
            dotted path) holding everything the family means (classifier, key maps, dense
            backbones and recipes, FLOPs).
        archs: architecture name -> the model's keyword arguments.
        pretrain_only: key prefixes of the parameters only pretraining uses (decoder, mask
            token, ...): every downstream model drops them (:mod:`pixmim.families`).
        source: the module that declared it (set by the registry).
    """

    name: str
    model: str
    family: str
    archs: dict[str, dict[str, Any]]
    pretrain_only: tuple[str, ...] = ()
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        what = f"method {self.name!r}"
        _check(isinstance(self.name, str) and bool(_NAME.fullmatch(self.name)), what,
               "name must be lower-case letters, digits and '_'")
        module, _, cls = self.model.partition(":") if isinstance(self.model, str) else ("", "", "")
        _check(bool(_DOTTED.fullmatch(module)) and cls.isidentifier(), what,
               f"model must be 'module:Class', got {self.model!r}")
        _check(isinstance(self.family, str) and bool(_DOTTED.fullmatch(self.family)), what,
               f"family must be a module path, got {self.family!r}")
        _check(isinstance(self.archs, dict) and bool(self.archs) and all(
            isinstance(k, str) and isinstance(v, dict) for k, v in self.archs.items()), what,
            "archs must map each arch name to a dict of model keyword arguments")
        object.__setattr__(self, "pretrain_only", tuple(self.pretrain_only))
        _check(all(isinstance(p, str) and p for p in self.pretrain_only), what,
               "pretrain_only must be key prefixes (strings)")

    @property
    def module(self) -> str:
        """The module holding the class."""
        return self.model.partition(":")[0]

    @property
    def class_name(self) -> str:
        return self.model.partition(":")[2]


@dataclass(frozen=True)
class Column:
    """A table column fed by a stage: ``key`` of its ``metrics.json``, shown as ``header``."""

    name: str
    stage: str
    key: str
    header: str


@dataclass(frozen=True)
class Stage:
    """One per-experiment stage of the workflow.

    Attributes:
        name: the stage's key (the folder ``results/runs/<exp>/<name>`` and the CLI command).
        module: the module exposing ``run(cfg, out)`` and ``main(argv)``; imported by the
            job that runs the stage, never by the DAG.
        help: one line for ``python -m pixmim --help``.
        rule: the Snakemake rule family that runs it (also its ``threads`` key).
        consumes: ``pretrain`` (the pretraining checkpoint), ``finetune`` (the fine-tuned
            model), another stage, or None (the pretraining itself).
        outputs: files the stage writes into its folder (``metrics.json`` last).
        job: how its job config is resolved (:data:`JOB_KINDS`): ``train`` (the shared
            loop's keys from the config section ``section``), ``finetune`` (the fine-tune
            section and recipe), ``evaluate`` (the evaluation sets), ``frequency``, ``dense``
            (a dense task section), ``options`` (the section copied as the job's
            ``options``: plugin stages) or ``none``.
        section: its config section (None: none).
        params: job-resolution parameters (``fraction``, ``task``; ``eval_sets``: the
            ``data.eval_roots`` an evaluation stage reads; ``schema``: the JSON schema of an
            ``options`` section).
        data: the generated data it reads on the embedded default (:data:`DATA_KINDS`) or
            None.
        columns: table column -> (metrics key, header).
        cost: the budget's model: ``{"kind": "pretrain" | "epochs" | "iters" | "images",
            "passes": "forward" | "train", "images": n (kind images), "heads": x (the dense
            heads' FLOPs share, an assumption)}``: FLOPs per image from the encoder family.
        source: the module that declared it (set by the registry).
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
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        what = f"stage {self.name!r}"
        _check(isinstance(self.name, str) and bool(_NAME.fullmatch(self.name)), what,
               "name must be lower-case letters, digits and '_'")
        _check(isinstance(self.module, str) and bool(_DOTTED.fullmatch(self.module)), what,
               f"module must be a module path, got {self.module!r}")
        _check(isinstance(self.help, str) and bool(self.help), what, "help must be one line")
        _check(isinstance(self.rule, str) and bool(_NAME.fullmatch(self.rule)), what,
               f"rule must be a rule name, got {self.rule!r}")
        object.__setattr__(self, "outputs", tuple(self.outputs))
        _check(bool(self.outputs) and self.outputs[-1] == "metrics.json", what,
               f"outputs must end with metrics.json, got {list(self.outputs)}")
        _check(self.job in JOB_KINDS, what, f"job must be one of {list(JOB_KINDS)}, "
                                            f"got {self.job!r}")
        _check(self.data is None or self.data in DATA_KINDS, what,
               f"data must be one of {list(DATA_KINDS)} or None, got {self.data!r}")
        columns = {k: tuple(v) for k, v in dict(self.columns).items()}
        _check(all(isinstance(k, str) and len(v) == 2 for k, v in columns.items()), what,
               "columns must map each column to (metrics key, header)")
        object.__setattr__(self, "columns", columns)
        _check(not self.cost or self.cost.get("kind") in COST_KINDS, what,
               f"cost kind must be one of {list(COST_KINDS)}, got {self.cost.get('kind')!r}")
