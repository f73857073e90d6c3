"""The dress rehearsal (``rehearsal: true``, config/rehearsal.yaml): one job per job kind.

A paper configuration's targets need a few hundred jobs, but far fewer kinds of job: the
code a job runs is set by its stage and model, not by its radius or epochs. A pretraining
job's kind is (method, arch, target, crop, dataset, filter mode); a downstream job's is
(stage, method, arch), with two folds where the resolved job configs show the same code:

- a stage that differs from another only in its schedule's length (Table 18's 2x
  detection: ``stage_overrides`` of :data:`SCHEDULE_KEYS` alone) runs that stage's code,
  so its kind is that stage's (:func:`code_stage`);
- a dense job (UperNet, Mask R-CNN) builds its backbone from the method's encoder family
  and arch, the method only naming the checkpoint it loads: its kind is (stage, family,
  arch), so MFF's ViT-B dense jobs are MAE's. Loading each method's checkpoint into each
  dense backbone is checked apart (tests/paper/test_paper_models.py).

tests/workflow/test_rehearsal.py checks both against the job configs: the jobs of one kind
differ only in their identity, schedule counts and (dense) method. :func:`representatives`
picks one job per kind from the jobs of every buildable table and figure, a downstream
representative always on a pretraining that is itself a representative (so the rehearsal
runs no job that is not one); under ``rehearsal: true`` the table and figure specs read each
cell from its kind's representative (:func:`rehearsed`), so the ordinary table and figure
rules run on every paper spec with a DAG of the representatives alone. Torch-free.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from pixmim import registry
from pixmim.workflow.catalogue import buildable, experiments, plugins, read_jobs
from pixmim.workflow.jobs import upstream

# what a pretraining job's code path depends on (the radius and the epochs do not)
PRETRAIN_KEY = ("method", "arch", "target", "crop", "dataset", "lowpass_mode")
# stage override keys that set only how long a job runs (the rehearsal caps the steps)
SCHEDULE_KEYS = frozenset({"epochs", "iters", "val_interval", "warmup_epochs", "warmup_iters"})
# the marking of a rehearsal's tables and figures
NOTE = ("DRESS REHEARSAL: every cell comes from its job kind's representative, trained for "
        "one or two optimizer steps on fixture data; these are not results.")


def enabled(config: dict[str, Any]) -> bool:
    return bool(config.get("rehearsal"))


def _code(config: dict[str, Any], stage: str) -> str:
    """A stage's declaration but its name, help and outputs to tables, with its
    ``stage_overrides`` but the schedule's length."""
    spec = registry.stage(stage, plugins(config))
    decl = {k: v for k, v in vars(spec).items() if k not in ("name", "help", "columns",
                                                               "cost")}
    over = {sec: {k: v for k, v in body.items() if k not in SCHEDULE_KEYS}
            for sec, body in ((config.get("stage_overrides") or {}).get(stage) or {}).items()}
    return json.dumps([decl, {k: v for k, v in over.items() if v}], sort_keys=True,
                      default=str)


def code_stage(config: dict[str, Any], stage: str) -> str:
    """The stage whose code ``stage`` runs: the first (by name) of the stages with its
    declaration and overrides, the schedule's length aside (detect_coco_2x -> detect_coco)."""
    code = _code(config, stage)
    return min(s for s in registry.stages(plugins(config)) if _code(config, s) == code)


def job_kind(config: dict[str, Any], exp: str, stage: str,
             exps: dict[str, dict[str, Any]] | None = None) -> tuple:
    """The kind of job ``(exp, stage)``: what decides the code it runs (its first item is
    the stage that runs it)."""
    knobs = (experiments(config) if exps is None else exps)[exp]
    spec = registry.stage(stage, plugins(config))
    if spec.consumes is None:
        return (stage, *(knobs.get(k) for k in PRETRAIN_KEY))
    if spec.rule == "dense" and config.get("rehearsal_dense_once"):
        return (code_stage(config, stage), "*", "*")
    if spec.rule == "dense":
        family = registry.method(knobs["method"], plugins(config)).family
        return (code_stage(config, stage), family, knobs["arch"])
    return (code_stage(config, stage), knobs["method"], knobs["arch"])


def paper_jobs(config: dict[str, Any]) -> set[tuple[str, str]]:
    """(experiment, stage) of every job the buildable tables and figures need, upstream
    stages included, as the config without the rehearsal would run them."""
    real = {**config, "rehearsal": False}
    jobs: set[tuple[str, str]] = set()
    for kind in ("tables", "figures"):
        for name in buildable(real, kind):
            jobs |= {(e, s) for e, stage in read_jobs(real, name)
                     for s in (stage, *upstream(real, stage, e))}
    return jobs


def _depth(config: dict[str, Any], stage: str) -> int:
    n, spec = 0, registry.stage(stage, plugins(config))
    while spec.consumes is not None:
        n, spec = n + 1, registry.stage(spec.consumes, plugins(config))
    return n


def _representatives(config: dict[str, Any]) -> dict[tuple, str]:
    exps = experiments(config)
    jobs = paper_jobs(config)
    by_kind: dict[tuple, list[str]] = {}
    for exp, stage in sorted(jobs):
        by_kind.setdefault(job_kind(config, exp, stage, exps), []).append(exp)
    reps: dict[tuple, str] = {}
    for kind in sorted(k for k in by_kind if _depth(config, k[0]) == 0):
        reps[kind] = by_kind[kind][0]

    def pretrain_rep(exp: str, stage: str) -> str:
        pre = registry.stage(stage, plugins(config))
        while pre.consumes is not None:
            pre = registry.stage(pre.consumes, plugins(config))
        return reps[job_kind(config, exp, pre.name, exps)]

    # a downstream kind's candidates: the pretraining representatives of its jobs' own
    # pretrainings; the one serving most stages of the same (method, arch) is chosen, so
    # that a chain (fine-tune -> robustness) shares one experiment and runs no extra job
    cands = {k: sorted({pretrain_rep(e, k[0]) for e in m}) for k, m in by_kind.items()
             if _depth(config, k[0]) > 0}
    serves: dict[tuple[str, str, str], int] = {}
    for kind, exps_ in cands.items():
        for e in exps_:
            serves[(kind[1], kind[2], e)] = serves.get((kind[1], kind[2], e), 0) + 1
    for kind in sorted(cands, key=lambda k: (_depth(config, k[0]), k)):
        consumes = registry.stage(kind[0], plugins(config)).consumes
        up = reps.get((consumes, kind[1], kind[2]))
        reps[kind] = up if up in cands[kind] else min(
            cands[kind], key=lambda e: (-serves[(kind[1], kind[2], e)], e))
    return reps


@lru_cache(maxsize=8)
def _cached(text: str) -> dict[tuple, str]:
    return _representatives(json.loads(text))


def representatives(config: dict[str, Any]) -> dict[tuple, str]:
    """Job kind -> the experiment that represents it (the first of its kind in id order
    whose pretraining is a representative, preferring the representative of the stage it
    consumes)."""
    return _cached(json.dumps(config, sort_keys=True, default=str))


def rehearsed(config: dict[str, Any], exp: str, stage: str) -> tuple[str, str]:
    """The job (experiment, stage) that stands for ``(exp, stage)``: itself unless
    ``rehearsal`` is on."""
    if not enabled(config):
        return exp, stage
    kind = job_kind(config, exp, stage)
    return representatives(config)[kind], kind[0]


def rehearsal_jobs(config: dict[str, Any]) -> set[tuple[str, str]]:
    """The (experiment, stage) jobs of the rehearsal: one per kind."""
    return {(exp, kind[0]) for kind, exp in representatives(config).items()}
