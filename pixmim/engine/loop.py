"""One training loop for every stage (pretrain, linear probe, later fine-tune).

A stage supplies the trainable module, a ``loss_fn(batch) -> loss``, an optional
``evaluate() -> metrics`` and an optional ``monitor(epoch, last) -> metrics`` (called at
every epoch's end; it leaves the training as it found it); the loop owns the optimizer
steps, gradient accumulation, the per-iteration warm-up + cosine schedule, autocast (bf16,
or fp16 with a scaler), the finite-loss guard, progress bars, MLflow metrics and resumable
state.

Resume state lives in ``<out>/_state/last.pth``, outside the workflow's declared outputs,
written atomically every ``ckpt_every_steps`` optimizer steps and/or
``ckpt_every_minutes`` of wall time, and at each epoch end. A restarted job resumes from it
mid-epoch: the sampler skips the samples already seen, and since every sample's
augmentation and mask noise derive from (seed, epoch, index), the resumed run reproduces
the uninterrupted one exactly (CPU, deterministic kernels).
"""

from __future__ import annotations

import itertools
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from timm.scheduler import CosineLRScheduler

from pixmim.config import TrainConfig
from pixmim.data.datasets import EpochSampler
from pixmim.engine.distributed import DistInfo, all_reduce_sum, barrier
from pixmim.io import atomic_write
from pixmim.progress import progress


class Preempted(Exception):
    """SIGTERM (or SIGINT) arrived: the state was saved at the next optimizer step.

    The CLI exits with :attr:`exit_code` (75, EX_TEMPFAIL: "try again"); re-running the job
    (SLURM requeue, snakemake's restart) resumes from the saved state."""

    exit_code = 75


def scaled_lr(cfg: TrainConfig) -> float:
    """Absolute lr from the base lr: lr = base_lr * batch / 256 (Goyal et al. 2017; MAE A.1)."""
    return cfg.base_lr * cfg.batch_size / 256


def build_scheduler(optimizer, cfg: TrainConfig, steps_per_epoch: int) -> CosineLRScheduler:
    """Per-iteration linear warm-up from 0, then half-cosine to ``min_lr`` (``schedule``:
    cosine, the only one)."""
    if cfg.schedule != "cosine":
        raise ValueError(f"train.schedule: {cfg.schedule!r} is not implemented (cosine)")
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total - 1)
    return CosineLRScheduler(
        optimizer, t_initial=max(1, total - warmup), lr_min=cfg.min_lr, warmup_t=warmup,
        warmup_lr_init=0.0, warmup_prefix=True, t_in_epochs=False,
    )


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_loader(dataset, cfg: TrainConfig, train: bool, dist: DistInfo | None = None):
    """Training: an :class:`EpochSampler` over ranks; evaluation: this rank's shard, in order."""
    dist = dist or DistInfo()
    per_step = cfg.batch_size // cfg.accum_steps // dist.world
    if per_step < 1:
        raise ValueError(f"train.batch_size {cfg.batch_size} is smaller than "
                         f"accum_steps x processes ({cfg.accum_steps} x {dist.world})")
    if train:
        sampler = EpochSampler(len(dataset), cfg.seed, dist.rank, dist.world)
    else:
        sampler = list(range(dist.rank, len(dataset), dist.world))
    # A private generator: creating an iterator then draws its worker base seed without
    # advancing the global RNG (which dropout and drop path use), so resume stays exact.
    return torch.utils.data.DataLoader(
        dataset, batch_size=per_step, sampler=sampler, drop_last=train,
        num_workers=cfg.num_workers, pin_memory=cfg.device.startswith("cuda"),
        persistent_workers=cfg.num_workers > 0, generator=torch.Generator().manual_seed(cfg.seed),
    )


def autocast_for(cfg: TrainConfig, device: torch.device):
    if cfg.precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class ResumeState:
    """The resumable training state file ``<out>/_state/last.pth`` (tensors and plain data)."""

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / "_state" / "last.pth"

    def load(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        return torch.load(self.path, map_location="cpu", weights_only=True)

    def save(self, state: dict[str, Any]) -> None:
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            stale.unlink(missing_ok=True)  # left by a process killed mid-write
        atomic_write(self.path, lambda tmp: torch.save(state, tmp))


class Trainer:
    """Runs ``loss_fn`` over ``loader`` for ``cfg.epochs`` epochs; see the module docstring."""

    def __init__(self, module: nn.Module, loss_fn: Callable[[Any], torch.Tensor], optimizer,
                 loader, cfg: TrainConfig, out: Path, tracker=None,
                 evaluate: Callable[[], dict[str, float]] | None = None, desc: str = "train",
                 dist: DistInfo | None = None, extra_state: dict[str, Any] | None = None,
                 monitor: Callable[[int, bool], dict[str, float]] | None = None):
        self.module, self.loss_fn, self.optimizer, self.loader = module, loss_fn, optimizer, loader
        self.cfg, self.tracker, self.evaluate, self.desc = cfg, tracker, evaluate, desc
        self.monitor = monitor
        self.dist, self.extra_state = dist or DistInfo(), extra_state or {}
        if len(loader.sampler) // loader.batch_size < cfg.accum_steps:
            raise ValueError(f"train.batch_size: {cfg.batch_size} leaves no full step per epoch")
        self.steps_per_epoch = len(loader.sampler) // loader.batch_size // cfg.accum_steps
        self.scheduler = build_scheduler(optimizer, cfg, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(self.dist.device.type) if cfg.precision == "fp16" \
            else None
        self.resume = ResumeState(out)
        self.epoch = self.batches_done = self.step = 0
        self.history: list[dict[str, float]] = []
        self.partial = {"loss_sum": 0.0, "count": 0.0, "time": 0.0}
        self.last_save = time.monotonic()
        # The epoch's running loss sum stays on the device (float64, summed in the order a
        # Python float would be: the same number) and is read only at sync points, so a
        # training step makes no host sync (see _sync).
        self._loss_sum: torch.Tensor | None = None
        self._synced_at = 0  # the step of the last sync

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        return {"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else {},
                "rng": torch.get_rng_state(), "epoch": self.epoch,
                "batches_done": self.batches_done, "step": self.step, "history": self.history,
                "partial": dict(self.partial), **self.extra_state,
                # metrics not yet in the store (pixmim.engine.tracking: sent in batches)
                "tracking_pending": self.tracker.pending() if self.tracker is not None else []}

    def load(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        self.epoch, self.batches_done, self.step = state["epoch"], state["batches_done"], \
            state["step"]
        self.history, self.partial = state["history"], state["partial"]
        self._loss_sum, self._synced_at = None, self.step
        if self.tracker is not None:
            self.tracker.requeue(state.get("tracking_pending", []))

    def save(self) -> None:
        self._sync()  # the state saved is checked finite and holds the loss sum so far
        if self.dist.is_main:
            self.resume.save(self.state())
        self.last_save = time.monotonic()
        barrier(self.dist)

    def _after_step(self) -> tuple[bool, bool]:
        """(stop, save) after an optimizer step. One process decides every step from its
        own flags (no device work); several agree by one all-reduce every
        ``train.log_every`` steps, where every rank is at the same step: a stop signal or a
        time-based checkpoint due on any rank is acted on by all together."""
        c = self.cfg
        stop = self._signal is not None
        by_time = c.ckpt_every_minutes > 0 and \
            time.monotonic() - self.last_save >= 60 * c.ckpt_every_minutes
        if self.dist.world > 1:
            if self.step % c.log_every:
                stop = by_time = False
            else:
                flags = all_reduce_sum([float(stop), float(by_time)], self.dist)
                stop, by_time = flags[0] > 0, flags[1] > 0
        by_steps = c.ckpt_every_steps > 0 and self.step % c.ckpt_every_steps == 0
        return stop, by_steps or by_time

    # ------------------------------------------------------------------ train
    def fit(self) -> list[dict[str, float]]:
        """Train (resuming if a state file exists); return one record per epoch.

        SIGTERM / SIGINT save the state at the next optimizer step and raise
        :class:`Preempted` (handlers installed for the duration of the call)."""
        self._signal: str | None = None
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, self._on_signal)
        try:
            return self._fit()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @property
    def capped(self) -> bool:
        """The step cap (``train.max_steps``, a dress rehearsal's) is reached."""
        return 0 < self.cfg.max_steps <= self.step

    def _on_signal(self, signum: int, frame) -> None:
        self._signal = signal.Signals(signum).name

    def _fit(self) -> list[dict[str, float]]:
        if (state := self.resume.load()) is not None:
            self.load(state)
            print(f"[{self.desc}] resumed from {self.resume.path}: epoch {self.epoch + 1}, "
                  f"step {self.step}", file=sys.stderr)
        while self.epoch < self.cfg.epochs and not self.capped:
            self._train_epoch()
            record = self._finish_epoch()
            self.history.append(record)
            self.epoch, self.batches_done = self.epoch + 1, 0
            self.partial = {"loss_sum": 0.0, "count": 0.0, "time": 0.0}
            self._loss_sum = None
            self.save()
            if self.tracker is not None:
                self.tracker.log_metrics({k: v for k, v in record.items() if k != "epoch"},
                                         step=record["epoch"])
            if self.dist.is_main:
                print(f"[{self.desc}] " + " ".join(f"{k}={v:.4g}" for k, v in record.items()),
                      file=sys.stderr)
        return self.history

    def _train_epoch(self) -> None:
        cfg, dev = self.cfg, self.dist.device
        self.module.train()
        self.loader.sampler.set_epoch(self.epoch, skip=self.batches_done * self.loader.batch_size)
        bar = progress(self.loader, f"{self.desc} {self.epoch + 1}/{cfg.epochs}", leave=False,
                       disable=not self.dist.is_main, initial=self.batches_done,
                       total=self.batches_done + len(self.loader), unit="it")
        t0 = time.perf_counter()
        for batch in bar:
            self.scheduler.step_update(self.step)
            with autocast_for(cfg, dev):
                loss = self.loss_fn(batch)
            scaled = loss / cfg.accum_steps
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            self.batches_done += 1
            n = len(batch[0])
            if self._loss_sum is None:
                self._loss_sum = torch.tensor(self.partial["loss_sum"], dtype=torch.float64,
                                              device=loss.device)
            self._loss_sum.add_(loss.detach().double() * n)
            self.partial["count"] += n
            if self.batches_done % cfg.accum_steps == 0:
                self._optimizer_step()
                self.partial["time"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                if self.step % cfg.log_every == 0:
                    self._sync()
                    rate = self.partial["count"] * self.dist.world / max(self.partial["time"],
                                                                         1e-9)
                    avg = self.partial["loss_sum"] / max(self.partial["count"], 1)
                    bar.set_postfix(loss=f"{avg:.4f}", img_s=f"{rate:.0f}", refresh=False,
                                    lr=f"{self.optimizer.param_groups[0]['lr']:.2e}")
                    if self.tracker is not None:
                        self.tracker.log_metrics({"train_loss_step": avg}, step=self.step)
                stop, save = self._after_step()
                if stop:
                    self.save()
                    raise Preempted(
                        f"{self._signal or 'stop signal'} at epoch {self.epoch + 1}, step "
                        f"{self.step}: state saved to {self.resume.path}; exit "
                        f"{Preempted.exit_code} so the job is requeued and resumes there")
                if save:
                    self.save()
                if self.capped:  # a dress rehearsal's step cap: this epoch is the last
                    break
        bar.close()
        self._sync()

    def _sync(self) -> None:
        """Read the loss sum off the device (the step's only host sync, every
        ``train.log_every`` optimizer steps, before a save and at the epoch's end) and stop
        on a non-finite loss before anything is saved."""
        if self._loss_sum is None:
            return
        total = self._loss_sum.item()
        if not math.isfinite(total):
            raise FloatingPointError(
                f"non-finite loss at epoch {self.epoch + 1}, between steps {self._synced_at} "
                f"and {self.step}; the last good state is kept in {self.resume.path}")
        self.partial["loss_sum"], self._synced_at = total, self.step

    def _optimizer_step(self) -> None:
        cfg = self.cfg
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if cfg.clip_grad:
            nn.utils.clip_grad_norm_(self.module.parameters(), cfg.clip_grad)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1

    def _finish_epoch(self) -> dict[str, float]:
        loss_sum, count = all_reduce_sum([self.partial["loss_sum"], self.partial["count"]],
                                         self.dist)
        record = {"epoch": self.epoch + 1, "train_loss": loss_sum / max(count, 1),
                  "lr": self.optimizer.param_groups[0]["lr"],
                  "images_per_s": count / max(self.partial["time"], 1e-9),
                  "epoch_time_s": self.partial["time"]}
        last = self.epoch + 1 == self.cfg.epochs or self.capped
        if self.evaluate is not None and ((self.epoch + 1) % self.cfg.eval_every == 0 or last):
            record.update(self.evaluate())
        if self.monitor is not None:  # it decides itself what is due at (epoch, last)
            record.update(self.monitor(self.epoch + 1, last))
        return record


def capped(batches: Iterable, limit: int) -> Iterable:
    """At most ``limit`` items of ``batches`` (0: all): an evaluation's batch cap
    (``train.max_eval_batches`` / ``eval.max_batches``, a dress rehearsal's)."""
    return itertools.islice(batches, limit) if limit > 0 else batches


def fit(module: nn.Module, loss_fn, optimizer, loader, cfg: TrainConfig, out: Path,
        tracker=None, evaluate=None, desc: str = "train", extra_state=None,
        dist: DistInfo | None = None, monitor=None) -> list[dict[str, float]]:
    """Train ``module``; see :class:`Trainer`. Returns one record per epoch."""
    return Trainer(module, loss_fn, optimizer, loader, cfg, out, tracker, evaluate, desc,
                   dist, extra_state, monitor).fit()
