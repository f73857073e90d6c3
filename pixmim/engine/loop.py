"""One training loop for every stage (pretrain, linear probe, later fine-tune).

A stage supplies the trainable module, a ``loss_fn(batch) -> loss`` and an optional
``evaluate() -> metrics``; the loop owns the optimizer steps, gradient accumulation,
the per-iteration warm-up + cosine schedule, autocast, the finite-loss guard, progress
bars, MLflow metrics and resumable state. Resume state lives in ``<out>/_state/``,
outside the workflow's declared outputs, so a killed job restarts where it stopped.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from timm.scheduler import CosineLRScheduler
from tqdm import tqdm

from pixmim.config import TrainConfig
from pixmim.engine.io import atomic_write


def scaled_lr(cfg: TrainConfig) -> float:
    """Absolute lr from the base lr: lr = base_lr * batch / 256 (Goyal et al. 2017; MAE A.1)."""
    return cfg.base_lr * cfg.batch_size / 256


def build_scheduler(optimizer, cfg: TrainConfig, steps_per_epoch: int) -> CosineLRScheduler:
    """Per-iteration linear warm-up from 0, then half-cosine to ``min_lr``."""
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


class ResumeState:
    """The resumable training state file ``<out>/_state/last.pth`` (tensors and plain data)."""

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / "_state" / "last.pth"

    def load(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        return torch.load(self.path, map_location="cpu", weights_only=True)

    def save(self, state: dict[str, Any]) -> None:
        atomic_write(self.path, lambda tmp: torch.save(state, tmp))


def make_loader(dataset, cfg: TrainConfig, train: bool) -> torch.utils.data.DataLoader:
    """A loader whose shuffling is reseeded each epoch by ``loader.generator``."""
    per_step = cfg.batch_size // cfg.accum_steps
    gen = torch.Generator()
    gen.manual_seed(cfg.seed)
    sampler = torch.utils.data.RandomSampler(dataset, generator=gen) if train else None
    return torch.utils.data.DataLoader(
        dataset, batch_size=per_step, sampler=sampler, drop_last=train, generator=gen,
        num_workers=cfg.num_workers, pin_memory=cfg.device.startswith("cuda"),
        persistent_workers=cfg.num_workers > 0,
    )


def fit(
    module: nn.Module,
    loss_fn: Callable[[Any], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    loader: torch.utils.data.DataLoader,
    cfg: TrainConfig,
    out: Path,
    tracker=None,
    evaluate: Callable[[], dict[str, float]] | None = None,
    desc: str = "train",
    extra_state: dict[str, Any] | None = None,
) -> list[dict[str, float]]:
    """Train ``module`` for ``cfg.epochs`` epochs, resuming from ``<out>/_state`` if present.

    Returns:
        history: one dict per epoch (``epoch``, ``train_loss``, ``lr``, ``images_per_s``,
        plus whatever ``evaluate`` returned).
    """
    if len(loader) < cfg.accum_steps:
        raise ValueError(f"train.batch_size: {cfg.batch_size} leaves no full step per epoch")
    steps_per_epoch = len(loader) // cfg.accum_steps
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    resume = ResumeState(out)
    history: list[dict[str, float]] = []
    start_epoch, step = 0, 0
    if (state := resume.load()) is not None:
        module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        history, start_epoch, step = state["history"], state["epoch"], state["step"]
        print(f"[{desc}] resumed from {resume.path} at epoch {start_epoch}", file=sys.stderr)
    device = torch.device(cfg.device)
    for epoch in range(start_epoch, cfg.epochs):
        loader.generator.manual_seed(cfg.seed * 10_000 + epoch)
        record, step = _train_epoch(module, loss_fn, optimizer, scheduler, loader, cfg, device,
                                    epoch, step, tracker, desc)
        last = epoch + 1 == cfg.epochs
        if evaluate is not None and ((epoch + 1) % cfg.eval_every == 0 or last):
            record.update(evaluate())
        history.append(record)
        if tracker is not None:
            tracker.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=epoch + 1)
        print(f"[{desc}] " + " ".join(f"{k}={v:.4g}" for k, v in record.items()), file=sys.stderr)
        resume.save({"model": module.state_dict(), "optimizer": optimizer.state_dict(),
                     "rng": torch.get_rng_state(), "history": history, "epoch": epoch + 1,
                     "step": step, **(extra_state or {})})
    return history


def _train_epoch(module, loss_fn, optimizer, scheduler, loader: Iterable, cfg: TrainConfig,
                 device, epoch, step, tracker, desc) -> tuple[dict[str, float], int]:
    module.train()
    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if cfg.precision == "bf16" else nullcontext()
    )
    total, count, t0 = 0.0, 0, time.perf_counter()
    bar = tqdm(loader, desc=f"{desc} {epoch + 1}/{cfg.epochs}", file=sys.stderr, leave=False,
               mininterval=1.0 if sys.stderr.isatty() else 30.0, unit="it")
    for i, batch in enumerate(bar):
        scheduler.step_update(step)
        with autocast:
            loss = loss_fn(batch)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(
                f"non-finite loss {loss.item()} at epoch {epoch + 1}, step {step}; "
                f"the last good state is kept in {Path('_state') / 'last.pth'} of the run folder"
            )
        (loss / cfg.accum_steps).backward()
        if (i + 1) % cfg.accum_steps == 0:
            if cfg.clip_grad:
                nn.utils.clip_grad_norm_(module.parameters(), cfg.clip_grad)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if tracker is not None and step % cfg.log_every == 0:
                tracker.log_metrics({"train_loss_step": loss.item()}, step=step)
        total += loss.item() * len(batch[0])
        count += len(batch[0])
        bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}", refresh=False)
    bar.close()
    dt = time.perf_counter() - t0
    return {"epoch": epoch + 1, "train_loss": total / max(count, 1),
            "lr": optimizer.param_groups[0]["lr"], "images_per_s": count / dt,
            "epoch_time_s": dt}, step
