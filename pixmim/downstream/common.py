"""OpenMMLab glue shared by the segmentation and detection stages (imports mmengine).

* :func:`setup` installs the ``mmcv._ext`` stand-in (unless compiled mmcv is present) and
  scopes mmengine's checkpoint loading: ``weights_only=True`` except for the resume
  checkpoints inside a job's own work dir (:func:`trust`).
* :func:`register` adds ``PixMIMLayerDecay``: AdamW parameter
  groups with layer-wise lr decay (BEiT, Bao et al. 2021; PixMIM Tables 12-15) for any of
  our backbones (they expose ``num_layers`` and ``layer_id(name)``); no weight decay on
  norms, biases, position embeddings, cls token and relative position tables.
* :func:`write_config` writes the job's mmengine config as a Python file that inherits the
  toolbox's own base configs (``_base_``) and imports our modules (``custom_imports``), so a
  user can re-run it with the toolbox's ``tools/train.py``.
* :func:`run` trains and tests through mmengine's Runner with two hooks of ours added at
  run time (not in the written config): :func:`tracking_hook` sends the training curve to
  the job's MLflow run while it trains, :func:`preempt_hook` saves mmengine's state and
  raises :class:`~pixmim.engine.loop.Preempted` once a stop signal arrived.

Data-parallel under ``torchrun`` (``WORLD_SIZE`` > 1): the Runner gets ``launcher="pytorch"``
(the process group is already up: :func:`pixmim.engine.distributed.setup`), each process
reads ``dense.batch_size / (world x dense.accum_steps)`` images per micro-batch from
mmengine's samplers (which shard by rank), the optimizer wrapper accumulates
``dense.accum_steps`` micro-batches per step, and the lr is the config's, for the effective
batch (no auto-scaling). ``dense.iters`` and every interval count optimizer steps; mmengine's
iterations are micro-batches (``iters x accum_steps``), the lr schedule steps once per
optimizer step (:func:`register`'s ``PixMIMStepScheduler``). SyncBN (the UperNet recipe's)
stays torch's on CUDA; torch's needs CUDA, so CPU processes (gloo, the tests) get
:class:`GlooSyncBatchNorm`, the same statistics over all processes through gloo.
"""

from __future__ import annotations

import json
import os
import pprint
import re
from collections.abc import Callable
from numbers import Real
from pathlib import Path
from typing import Any

import torch.nn as nn

from pixmim import families, registry
from pixmim.downstream import mmcv_ext

# torch's SyncBatchNorm on CUDA only; this one on gloo too (one implementation, the engine's)
from pixmim.engine.distributed import GlobalBatchNorm as GlooSyncBatchNorm
from pixmim.engine.loop import Preempted
from pixmim.io import write_text

_TRUSTED: set[Path] = set()
_READY = False


def trust(work_dir: Path) -> None:
    """Let mmengine resume from checkpoints inside ``work_dir`` (written by this job)."""
    _TRUSTED.add(Path(work_dir).resolve())


def _load_local(filename: str, map_location=None):
    """mmengine's local checkpoint loader, scoped: ``weights_only=True`` everywhere except
    under a work dir this process registered with :func:`trust`. mmengine's own resume
    checkpoints pickle its message hub (HistoryBuffer, numpy arrays through ``getattr``),
    which ``weights_only`` rejects; allowing ``getattr`` globally would defeat it."""
    import torch

    path = Path(filename).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{filename} can not be found.")
    trusted = any(path.is_relative_to(d) for d in _TRUSTED)
    return torch.load(path, map_location=map_location, weights_only=not trusted)


def setup() -> None:
    """Make OpenMMLab importable without compiled mmcv; scope mmengine's checkpoint loads."""
    global _READY
    mmcv_ext.install()
    if _READY:
        return
    from mmengine.runner.checkpoint import CheckpointLoader

    CheckpointLoader.register_scheme(prefixes="", force=True)(_load_local)
    _READY = True


_NO_DECAY = ("pos_embed", "cls_token", "relative_position_bias_table", "rel_pos_h",
             "rel_pos_w", "q_bias", "v_bias")


def register_family(models, family: str) -> None:
    """Register the dense classes of an encoder family (``MODULES`` of its ``nets``) in an
    OpenMMLab model registry (mmseg's or mmdet's ``MODELS``), once."""
    for name, cls in families.nets(family).MODULES.items():
        if name not in models.module_dict:
            models.register_module(name=name, module=cls)


def register_families(models) -> None:
    """:func:`register_family` for every family the registered methods declare (the
    built-in ones and this process's plugins')."""
    for family in registry.families():
        register_family(models, family)


def register() -> None:
    """Register ``PixMIMLayerDecay`` and ``PixMIMStepScheduler`` in mmengine's registries
    (idempotent)."""
    from mmengine.hooks import ParamSchedulerHook
    from mmengine.optim import DefaultOptimWrapperConstructor
    from mmengine.registry import HOOKS, OPTIM_WRAPPER_CONSTRUCTORS

    if "PixMIMLayerDecay" in OPTIM_WRAPPER_CONSTRUCTORS.module_dict:
        return

    class PixMIMStepScheduler(ParamSchedulerHook):
        """mmengine's ParamSchedulerHook, stepping the iteration-based schedules once per
        optimizer step: under gradient accumulation an mmengine iteration is a micro-batch,
        and the schedule counts optimizer steps (the paper's iterations)."""

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            if runner.optim_wrapper.should_update():  # this iteration stepped the optimizer
                super().after_train_iter(runner, batch_idx, data_batch, outputs)

    HOOKS.register_module(name="PixMIMStepScheduler", module=PixMIMStepScheduler)

    class PixMIMLayerDecay(DefaultOptimWrapperConstructor):
        """AdamW groups with lr x decay^(num_layers + 1 - layer_id): the backbone gives
        ``num_layers`` and ``layer_id(name)``; neck and heads get the full lr."""

        def add_params(self, params: list[dict], module: nn.Module, **kwargs) -> None:
            decay_rate = float(self.paramwise_cfg.get("layer_decay_rate", 1.0))
            backbone = module.backbone
            num_layers = backbone.num_layers
            groups: dict[tuple[int, bool], dict] = {}
            for name, param in module.named_parameters():
                if not param.requires_grad:
                    continue
                if name.startswith("backbone."):
                    layer = backbone.layer_id(name.removeprefix("backbone."))
                else:
                    layer = num_layers + 1
                no_decay = param.ndim == 1 or name.endswith(_NO_DECAY)
                g = groups.setdefault((layer, no_decay), {
                    "params": [], "lr": self.base_lr * decay_rate ** (num_layers + 1 - layer),
                    "weight_decay": 0.0 if no_decay else self.base_wd,
                    "layer_id": layer})
                g["params"].append(param)
            params.extend(groups[k] for k in sorted(groups))

    OPTIM_WRAPPER_CONSTRUCTORS.register_module(name="PixMIMLayerDecay", module=PixMIMLayerDecay)


def world_size() -> int:
    """Processes training together: the process group's size, else torchrun's
    ``WORLD_SIZE`` (1 without torchrun)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def accum_steps(d) -> int:
    """``dense.accum_steps``: micro-batches per optimizer step."""
    return int(d.accum_steps)


def per_process_batch(d, world: int) -> int:
    """Images one process reads per micro-batch: ``dense.batch_size`` (the effective batch,
    the paper's) / (processes x ``dense.accum_steps``); one line if it does not divide."""
    accum = accum_steps(d)
    if d.batch_size % (world * accum):
        raise ValueError(f"dense.batch_size {d.batch_size} does not divide into {world} "
                         f"process(es) (WORLD_SIZE) x dense.accum_steps {accum}")
    return d.batch_size // (world * accum)


def schedule_body(d, seed: int, work_dir: Path) -> dict[str, Any]:
    """The config keys both tasks share: AdamW with layer decay, the lr schedule, the
    iteration loop with validation and checkpoints every ``val_interval``, logging, seed.
    Iteration counts of the config are optimizer steps; mmengine's loop, validation,
    checkpoint and log intervals count micro-batches (x ``dense.accum_steps``)."""
    accum = accum_steps(d)
    # a dress rehearsal's cap (dense.max_iters) stops the loop early, the schedule kept
    stop = min(d.iters, d.max_iters) if d.max_iters else d.iters
    every = min(d.val_interval, stop)
    interval = min(log_interval(d.iters), stop)
    # Validate every `val_interval` iterations; a run of at most one interval skips the
    # validation at its end, which would repeat the test that follows on the same split.
    begin = stop * accum + 1 if every == stop else 1
    body = {
        # the lr is for the effective batch (dense.batch_size): no auto-scaling by the
        # per-process batch (mmengine scales only when `auto_scale_lr.enable`)
        "optim_wrapper": dict(
            type="OptimWrapper", constructor="PixMIMLayerDecay", accumulative_counts=accum,
            optimizer=dict(type={"adamw": "AdamW"}[d.optimizer], lr=d.lr, betas=tuple(d.betas),
                           weight_decay=d.weight_decay),
            paramwise_cfg=dict(layer_decay_rate=d.layer_decay)),
        "auto_scale_lr": dict(enable=False, base_batch_size=d.batch_size),
        "param_scheduler": lr_schedule(d.schedule, d.iters, d.warmup_iters),
        "train_cfg": dict(type="IterBasedTrainLoop", max_iters=stop * accum,
                          val_interval=every * accum, val_begin=begin),
        "val_cfg": dict(type="ValLoop"),
        "test_cfg": dict(type="TestLoop"),
        "default_hooks": dict(
            logger=dict(type="LoggerHook", interval=interval * accum,
                        log_metric_by_epoch=False),
            checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=every * accum,
                            max_keep_ckpts=1, save_last=True)),
        "log_processor": dict(by_epoch=False),
        "randomness": dict(seed=seed),
        "work_dir": str(work_dir),
        # INFO: the job log shows loss, lr, time per iteration and ETA every `interval`
        "log_level": "INFO",
    }
    if accum > 1:  # the schedule steps once per optimizer step, not per micro-batch
        body["default_hooks"]["param_scheduler"] = dict(type="PixMIMStepScheduler")
    return body


def eval_indices(d) -> dict[str, int]:
    """An evaluation dataset's ``indices`` (mmengine: its first N images) under a dress
    rehearsal's cap ``dense.max_eval_images``; none otherwise."""
    return {"indices": d.max_eval_images} if d.max_eval_images else {}


def log_interval(iters: int) -> int:
    """Iterations between log lines and MLflow points: mmseg's / mmdet's 50, or ~10 lines
    in a shorter run."""
    return max(1, min(50, iters // 10))


def write_config(path: Path, base: list[str], imports: list[str], body: dict[str, Any]) -> Path:
    """Write an mmengine config file: ``_base_``, ``custom_imports``, then ``body`` keys."""
    lines = ["# Generated by PixMIM Bench; re-run with the toolbox's tools/train.py.",
             f"_base_ = {base!r}",
             f"custom_imports = dict(imports={imports!r}, allow_failed_imports=False)"]
    for key, value in body.items():
        lines.append(f"{key} = {pprint.pformat(value, sort_dicts=False, width=100)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.py")  # every process of a job writes it
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def lr_schedule(schedule: str, iters: int, warmup: int) -> list[dict[str, Any]]:
    """mmengine param schedulers: linear warm-up, then cosine (paper) | poly (released) |
    step (ViTDet's released detection: x0.1 at 8/9 and 17/18 of the run)."""
    warmup = min(warmup, max(iters - 1, 0))
    if warmup == 1:  # mmengine's LinearLR over one iteration never restores the lr
        warmup = 0
    out: list[dict[str, Any]] = []
    if warmup:
        out.append(dict(type="LinearLR", start_factor=1e-3, by_epoch=False, begin=0, end=warmup))
    if schedule == "cosine":
        out.append(dict(type="CosineAnnealingLR", T_max=iters - warmup, eta_min=0.0,
                        by_epoch=False, begin=warmup, end=iters))
    elif schedule == "poly":
        out.append(dict(type="PolyLR", eta_min=0.0, power=1.0, by_epoch=False, begin=warmup,
                        end=iters))
    elif schedule == "step":
        out.append(dict(type="MultiStepLR", milestones=[iters * 8 // 9, iters * 17 // 18],
                        gamma=0.1, by_epoch=False, begin=0, end=iters))
    else:
        raise ValueError(f"unknown lr schedule {schedule!r} (cosine | poly | step)")
    return out


def run(config: Path, work_dir: Path, name: str = "run",
        log: Callable[[dict[str, float], int], None] | None = None,
        stop: Callable[[], str | None] | None = None) -> dict[str, Any]:
    """Train, validate and test through mmengine's Runner; resume from ``work_dir`` when it
    holds a checkpoint of this config (a killed job loses at most one checkpoint interval,
    a preempted one nothing). ``log``: where the live training curve goes
    (:func:`tracking_hook`, names prefixed ``<name>/``); ``stop``: the stop-signal check of
    :func:`preempt_hook`. Under torchrun every process calls it; mmengine saves checkpoints
    and logs on rank 0 and gathers the evaluation over all ranks. Returns the test metrics
    and the folder of the run's logs."""
    fresh_state()
    trust(work_dir)
    mm_cfg = load_config(config)
    mm_cfg.resume = (Path(work_dir) / "last_checkpoint").is_file()
    mm_cfg.launcher = "pytorch" if world_size() > 1 else "none"
    runner = runner_class().from_cfg(mm_cfg)
    accum = mm_cfg.optim_wrapper.get("accumulative_counts", 1)
    preempt = preempt_hook(stop, name, accum) if stop is not None else None
    runner.register_hook(rng_hook(), priority="LOWEST")
    if log is not None:
        interval = mm_cfg.default_hooks.logger.interval
        runner.register_hook(tracking_hook(log, f"{name}/", interval, accum), priority="LOW")
    if preempt is not None:  # after the logger and the CheckpointHook
        runner.register_hook(preempt, priority="LOWEST")
    runner.train()
    if preempt is not None:  # a signal during the last validation: stop before the test
        preempt.check(runner, saved=True)
    metrics = runner.test()
    return {"metrics": {k: float(v) for k, v in metrics.items() if isinstance(v, Real)},
            "log_dir": runner.log_dir, "config": str(config)}


def fresh_state() -> None:
    """mmengine's process-global objects as a fresh process has them, before each Runner.

    mmengine keeps one instance per name of each of its global classes (default scope,
    logger, message hub, visualizer; each subclass has its own table) and the registry
    hands back an existing one: the second seed of a job would write its training scalars
    into the first seed's ``vis_data`` (the visualizer is named ``visualizer`` in every
    config), and a scope left at ``mmseg`` makes mmdet's registry look its layers up in
    mmseg's."""
    from mmengine.utils import ManagerMixin

    todo = [ManagerMixin]
    while todo:
        cls = todo.pop()
        cls._instance_dict.clear()
        todo.extend(cls.__subclasses__())


def load_config(path: Path):
    """The mmengine config at ``path``, with yapf's formatting off, its package bases found
    directly.

    mmengine re-formats the whole config with yapf each time it dumps or logs it (7 times a
    run: the checkpoints' meta, the log, the visualizer; about 2 s of CPU each, measured:
    half of a tiny segmentation job's 60 s); the text is the same, unformatted. mmengine
    0.10's ``Config.fromfile`` drops its ``format_python_code`` argument for a plain
    (non-lazy) config file, hence the rebuild from the parsed file.

    For each ``mmseg::_base_/...`` base, mmengine first parses every model metafile of the
    package (mmseg: ~100 YAML files, 0.6 CPU-s; mmdet more) looking for an experiment of that
    name, fails, and then takes ``<package>/.mim/configs/_base_/...``: a base config is never
    in a metafile (mmengine's own comment), so during this load a ``_base_/`` name goes
    straight to that path; the config is the same (tests/downstream/test_openmmlab.py)."""
    from unittest import mock

    from mmengine.config import Config
    from mmengine.config import config as mm_config

    lookup = mm_config._get_external_cfg_path

    def bases_directly(package_path: str, cfg_file: str) -> str:
        if cfg_file.startswith("_base_/"):
            raise ValueError(cfg_file)  # mmengine then takes .mim/configs/<cfg_file>
        return lookup(package_path, cfg_file)

    with mock.patch.object(mm_config, "_get_external_cfg_path", bases_directly):
        cfg = Config.fromfile(str(path))
    return Config(cfg.to_dict(), cfg_text=cfg.text, filename=cfg.filename,
                  env_variables=cfg.env_variables, format_python_code=False)


def dataset_keys(d) -> dict:
    """Keys of every dense dataset. mmengine serialises a dataset's annotation list into one
    buffer so that dataloader workers share its pages instead of copying them; without workers
    (``num_workers`` 0, the CPU default) it shares nothing and costs a full ``gc.collect()``
    per dataset built (train, val, test: 0.6 CPU-s each in a process holding torch)."""
    return {"serialize_data": d.num_workers > 0}


def runner_class():
    """mmengine's Runner; on CPU processes under torchrun, one that wraps the model in
    DDP without device ids (mmengine passes ``LOCAL_RANK`` as a CUDA id) and replaces
    torch's SyncBatchNorm (CUDA only) with :class:`GlooSyncBatchNorm`."""
    import torch
    from mmengine.model import MMDistributedDataParallel
    from mmengine.runner import Runner

    class PixMIMRunner(Runner):
        def wrap_model(self, model_wrapper_cfg, model):
            if not self.distributed or torch.cuda.is_available():
                return super().wrap_model(model_wrapper_cfg, model)
            model = gloo_sync_batchnorm(model)
            self.logger.info("CPU processes: SyncBN layers synchronise their statistics "
                             "over gloo (GlooSyncBatchNorm)")
            return MMDistributedDataParallel(
                module=model, broadcast_buffers=False,
                find_unused_parameters=self.cfg.get("find_unused_parameters", False))

    return PixMIMRunner


def gloo_sync_batchnorm(module):
    """``module`` with each torch SyncBatchNorm replaced by a :class:`GlooSyncBatchNorm`
    holding the same parameters and buffers."""
    if isinstance(module, nn.SyncBatchNorm):
        new = GlooSyncBatchNorm(module.num_features, module.eps, module.momentum,
                                module.affine, module.track_running_stats)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        if module.track_running_stats:
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for child_name, child in module.named_children():
        module.add_module(child_name, gloo_sync_batchnorm(child))
    return module


def rng_hook():
    """A Runner hook that keeps torch's RNG state in every checkpoint and restores it on
    resume, which mmengine does not: dropout and drop path then draw what an uninterrupted
    run draws. (The data pipeline's numpy and Python draws replay as mmengine advances the
    data loader past the iterations done.)"""
    import torch
    from mmengine.hooks import Hook

    class RngHook(Hook):
        def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
            checkpoint["pixmim_rng"] = {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}

        def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
            if (rng := checkpoint.get("pixmim_rng")) is None:
                return
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])

    return RngHook()


# What of mmengine's training scalars goes to MLflow (the rest: time, data_time, memory).
_CURVE = re.compile(r"^(lr|.*loss.*|.*acc.*)$")


def tracking_hook(log: Callable[[dict[str, float], int], None], prefix: str, interval: int,
                  accum: int = 1):
    """A Runner hook that calls ``log(scalars, step)`` while the Runner trains: every
    ``interval`` iterations the training losses, accuracies and lr (smoothed as mmengine's
    log line smooths them) at step = optimizer steps done (iterations / ``accum``), and each
    validation's metrics (``val_<name>``) at the step they were measured. Names get
    ``prefix``."""
    from mmengine.hooks import Hook

    class TrackingHook(Hook):
        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            if not self.every_n_train_iters(runner, interval):
                return
            lp = runner.log_processor
            window = lp.window_size if isinstance(lp.window_size, int) else interval
            out = {}
            for key, buf in runner.message_hub.log_scalars.items():
                name = key.removeprefix("train/")
                if name != key and _CURVE.match(name):
                    smooth = re.search(lp.mean_pattern, name) is not None
                    out[prefix + name.replace(".", "_")] = float(
                        buf.mean(window) if smooth else buf.current())
            if out:
                log(out, (runner.iter + 1) // accum)

        def after_val_epoch(self, runner, metrics=None) -> None:
            scalars = {f"{prefix}val_{k.replace('/', '_')}": float(v)
                       for k, v in (metrics or {}).items() if isinstance(v, Real)}
            if scalars:
                log(scalars, runner.iter // accum)

    return TrackingHook()


def preempt_hook(stop: Callable[[], str | None], label: str, accum: int = 1):
    """A Runner hook that, once ``stop()`` names a signal, saves mmengine's full state (model,
    optimizer, schedulers, message hub) after the iteration in progress, points
    ``last_checkpoint`` at it and raises :class:`~pixmim.engine.loop.Preempted`; the next
    :func:`run` on the work dir resumes there. The save is atomic; an older save of this
    hook is removed (the CheckpointHook keeps its own). Under gradient accumulation it
    stops at the end of an optimizer step (``accum`` micro-batches; the accumulated
    gradients are not saved). Under torchrun the processes agree after each iteration
    (a stop on any one stops all at the same iteration); rank 0 saves, every rank raises."""
    import torch
    import torch.distributed as dist
    from mmengine.dist import is_main_process
    from mmengine.hooks import Hook

    def stopped() -> str | None:
        sig = stop()
        if world_size() == 1:
            return sig
        flag = torch.tensor([0.0 if sig is None else 1.0])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return (sig or "a stop signal (another process)") if flag.item() else None

    class PreemptHook(Hook):
        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            if (runner.iter + 1) % accum == 0:
                self.check(runner, saved=False)

        def check(self, runner, saved: bool) -> None:
            if (sig := stopped()) is None:
                return
            work = Path(runner.work_dir)
            if saved:  # training ended: its last checkpoint is there already
                path = Path((work / "last_checkpoint").read_text().strip())
            else:
                path = work / f"preempt_iter_{runner.iter + 1}.pth"
                tmp = f".{path.name}.tmp"
                runner.save_checkpoint(str(work), tmp, by_epoch=False)  # rank 0 only
                if is_main_process():
                    os.replace(work / tmp, path)
                    write_text(work / "last_checkpoint", str(path))
                    for old in work.glob("preempt_iter_*.pth"):
                        if old != path:
                            old.unlink()
                if world_size() > 1:
                    dist.barrier()  # saved before any process leaves
            raise Preempted(f"{sig} at iteration {runner.iter + 1 - saved} of {label}: state "
                            f"saved to {path}; exit {Preempted.exit_code} so the job is "
                            "requeued and resumes there")

    return PreemptHook()


def training_curve(log_dir: str | Path) -> list[dict[str, float]]:
    """The per-interval training scalars mmengine wrote (``vis_data/scalars.json``)."""
    path = Path(log_dir) / "vis_data" / "scalars.json"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if "loss" in row and "iter" in row:
            rows.append({k: float(v) for k, v in row.items() if isinstance(v, (int, float))})
    return rows
