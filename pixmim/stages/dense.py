"""What the two dense stages share: one mmengine Runner per seed, results to MLflow.

:func:`run_dense` loads nothing from OpenMMLab itself: ``task`` is the downstream module
(:mod:`pixmim.downstream.seg` or :mod:`pixmim.downstream.det`), imported by the stage.
Each seed trains in ``<out>/_state/seed<s>`` (mmengine's work dir: config, logs, the last
checkpoint, from which a killed or preempted job resumes); at the end the generated
config of each seed is kept beside ``metrics.json`` and the work dirs are removed.

The training curve (``seed<s>/loss``, ``seed<s>/lr``, ..., ``seed<s>/val_<metric>``) goes to
MLflow while mmengine trains, at step = iteration; the test metrics of each seed
(``<metric>_seed<s>``) and the job's summary at step 0. SIGTERM / SIGINT save mmengine's
state after the iteration in progress and exit 75 (requeue), like the other stages.

Under torchrun every process runs :func:`run_dense` (mmengine's Runner with
``launcher="pytorch"``: :func:`pixmim.downstream.common.run`); rank 0 alone writes
``metrics.json``, the MLflow run and the kept configs.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pixmim import registry
from pixmim.config import JobConfig
from pixmim.engine import distributed
from pixmim.engine.loop import Preempted, ResumeState
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
    # torchrun's world against the layout of the stage's section (segmentation, detection)
    dist = distributed.setup(cfg.train.device, cfg.dense.gpus, cfg.dense.nodes,
                             registry.stage(cfg.stage).section or "dense")
    pre_run, tags = parent_tags(pre_dir, "pretrain")
    t0 = time.perf_counter()
    per_seed: list[dict[str, float]] = []
    state = ResumeState(out)
    with tracked(cfg, out, dist, tags) as tracker, stop_signals() as stop:
        if tracker is not None:  # a resumed job reopens this run
            state.save({"mlflow_run_id": tracker.run_id})
        for seed in seeds:
            if (sig := stop()) is not None:  # arrived during the previous seed's test
                raise Preempted(f"{sig} before seed {seed}: the seeds before it are saved; "
                                f"exit {Preempted.exit_code} so the job is requeued")
            work = out / "_state" / f"seed{seed}"
            result = task.run_seed(cfg, work, seed, checkpoint, name=f"seed{seed}", stop=stop,
                                   log=tracker.log_metrics if tracker is not None else None)
            per_seed.append(result["metrics"])
            if tracker is not None:
                tracker.log_metrics({f"{k}_seed{seed}": v for k, v in result["metrics"].items()},
                                    step=0)
            if dist.is_main:
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
                                step=0)
            for f in sorted(out.glob("mm_config_seed*.py")):
                tracker.log_artifact(f)
        return complete(out, metrics, tracker, cfg, dist)


@contextmanager
def stop_signals() -> Iterator[Callable[[], str | None]]:
    """While open, SIGTERM and SIGINT only record their name; yields the check that returns
    it (None until one arrived), which the Runner's preempt hook reads after each
    iteration. The previous handlers come back on exit."""
    got: list[str] = []
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(
                sig, lambda signum, frame: got.append(signal.Signals(signum).name))
    try:
        yield lambda: got[0] if got else None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def mean(rows: list[dict[str, float]], key: str, scale: float = 1.0) -> float:
    vals = [r[key] * scale for r in rows if key in r]
    if not vals:
        raise KeyError(f"the test metrics hold no {key!r} (got {sorted(rows[0]) if rows else []})")
    return sum(vals) / len(vals)
