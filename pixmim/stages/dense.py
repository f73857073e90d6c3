"""What the two dense stages share: one mmengine Runner per seed, results to MLflow.

:func:`run_dense` loads nothing from OpenMMLab itself: ``task`` is the downstream module
(:mod:`pixmim.downstream.seg` or :mod:`pixmim.downstream.det`), imported by the stage.
Each seed trains in ``<out>/_state/seed<s>`` (mmengine's work dir: config, logs, the last
checkpoint, from which a killed or preempted job resumes); at the end the generated
config of each seed is kept beside ``metrics.json`` and the work dirs are removed.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pixmim.config import JobConfig
from pixmim.engine import distributed
from pixmim.engine.loop import ResumeState
from pixmim.stages.common import complete, load_pretrain_checkpoint, parent_tags, tracked


def import_task(module: str):
    """Import a downstream module; a missing OpenMMLab package is a one-line error."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name and err.name.split(".")[0] in ("mmengine", "mmcv", "mmseg", "mmdet"):
            raise ValueError(f"the dense stages need OpenMMLab, and {err.name!r} is not "
                             "installed: run `make env` (requirements.lock)") from None
        raise


def run_dense(cfg: JobConfig, out: Path, task, seeds: tuple[int, ...],
              summarize: Callable[[list[dict[str, float]]], dict[str, Any]],
              chance: dict[str, float] | None = None) -> dict[str, Any]:
    """Train/validate/test ``task`` once per seed; ``summarize`` turns the per-seed test
    metrics into the stage's metrics (means, per-seed lists); ``chance``: the chance level
    of some of them, written as ``chance_<key>`` for the table's note."""
    if cfg.pretrain_dir is None:
        raise ValueError(f"pretrain_dir: {cfg.stage} needs a pretraining output folder")
    pre_dir = Path(cfg.pretrain_dir)
    load_pretrain_checkpoint(cfg, pre_dir)  # exists, and is of this method and arch
    checkpoint = str((pre_dir / "checkpoint.pth").resolve())
    dist = distributed.setup(cfg.train.device)
    pre_run, tags = parent_tags(pre_dir, "pretrain")
    t0 = time.perf_counter()
    per_seed: list[dict[str, float]] = []
    state = ResumeState(out)
    with tracked(cfg, out, dist, tags) as tracker:
        if tracker is not None:  # a resumed job reopens this run
            state.save({"mlflow_run_id": tracker.run_id})
        for i, seed in enumerate(seeds):
            work = out / "_state" / f"seed{seed}"
            result = task.run_seed(cfg, work, seed, checkpoint)
            per_seed.append(result["metrics"])
            if tracker is not None:
                _log_curve(tracker, task, result["log_dir"], seed)
                tracker.log_metrics({f"{k}_seed{seed}": v for k, v in result["metrics"].items()},
                                    step=i)
            shutil.copy2(result["config"], out / f"mm_config_seed{seed}.py")
        metrics = {"stage": cfg.stage, "experiment": cfg.experiment,
                   "mlflow_run_id": tracker.run_id if tracker else None,
                   "pretrain_run_id": pre_run, "seeds": list(seeds),
                   **summarize(per_seed),
                   **{f"chance_{k}": v for k, v in (chance or {}).items()},
                   "per_seed": per_seed,
                   "recipe": cfg.dense.recipe, "iters": cfg.dense.iters,
                   "seconds": round(time.perf_counter() - t0, 1)}
        if tracker is not None:
            tracker.log_metrics({k: v for k, v in metrics.items() if isinstance(v, float)},
                                step=cfg.dense.iters)
            for f in sorted(out.glob("mm_config_seed*.py")):
                tracker.log_artifact(f)
        return complete(out, metrics, tracker, cfg, dist)


def _log_curve(tracker, task, log_dir: str, seed: int) -> None:
    """Training loss, lr and validation scalars of one seed, per iteration."""
    from pixmim.downstream.common import training_curve

    for row in training_curve(log_dir):
        step = int(row.pop("step", row.get("iter", 0)))
        row.pop("iter", None)
        keep = {f"seed{seed}/{k.replace('.', '_')}": v for k, v in row.items()
                if k.startswith(("loss", "decode", "aux", "lr", "acc"))}
        if keep:
            tracker.log_metrics(keep, step=step)


def mean(rows: list[dict[str, float]], key: str, scale: float = 1.0) -> float:
    vals = [r[key] * scale for r in rows if key in r]
    if not vals:
        raise KeyError(f"the test metrics hold no {key!r} (got {sorted(rows[0]) if rows else []})")
    return sum(vals) / len(vals)
