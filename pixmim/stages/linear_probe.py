"""Stage ``linear_probe``: a linear classifier on frozen pretrained features.

Head: BatchNorm1d(affine=False) + Linear (init std 0.01), LARS, cls token or global pool
as the method requires (MAE Sec. A.2 / PixMIM Table 10). Reports best and last top-1.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from timm.layers import trunc_normal_
from timm.optim import Lars

from pixmim.config import JobConfig
from pixmim.data.datasets import build_dataset
from pixmim.data.transforms import build_eval_transform, build_probe_transform
from pixmim.engine import distributed
from pixmim.engine.loop import fit, make_loader, scaled_lr, seed_everything
from pixmim.stages.common import (
    complete,
    load_encoder,
    parent_tags,
    run_main,
    tracked,

)

# The registry's declaration. Cost: the frozen encoder forward on all tokens, ~1/3 of a
# pretraining step per image (an assumption, pixmim.workflow.budget).
STAGES = [dict(
    name="linear_probe", help="Linear probe on frozen features", rule="linear_probe",
    job="train", section="linear_probe", data="images",
    columns={"lin": ("top1_best", "lin (%)")}, cost=dict(kind="epochs", relative=1.3),
)]


def build_head(dim: int, num_classes: int) -> nn.Sequential:
    head = nn.Sequential(nn.BatchNorm1d(dim, affine=False, eps=1e-6), nn.Linear(dim, num_classes))
    trunc_normal_(head[1].weight, std=0.01)  # MAE main_linprobe.py: head init std 0.01
    nn.init.zeros_(head[1].bias)
    return head


def lars(head: nn.Module, cfg: JobConfig) -> Lars:
    """LARS with trust-ratio adaptation on weights only; biases plain SGD (MAE util/lars)."""
    t = cfg.train
    decay = [p for p in head.parameters() if p.ndim > 1]
    rest = [p for p in head.parameters() if p.ndim <= 1]
    return Lars([{"params": decay, "always_adapt": True}, {"params": rest}],
                lr=scaled_lr(t), momentum=t.momentum, weight_decay=t.weight_decay)


@torch.no_grad()
def accuracy(encoder: nn.Module, head: nn.Module, loader, dist) -> float:
    """Top-1 (%) over this rank's shard, summed over ranks."""
    head.eval()
    hits = total = 0
    for x, y in loader:
        logits = head(encoder.forward_probe_features(x.to(dist.device)))
        hits += (logits.argmax(1).cpu() == y).sum().item()
        total += len(y)
    hits, total = distributed.all_reduce_sum([hits, total], dist)
    return 100.0 * hits / max(total, 1)


def run(cfg: JobConfig, out: Path) -> dict[str, Any]:
    if cfg.pretrain_dir is None:
        raise ValueError("pretrain_dir: the linear probe needs a pretraining output folder")
    dist = distributed.setup(cfg.train.device)
    seed_everything(cfg.train.seed)
    pre_dir = Path(cfg.pretrain_dir)
    encoder = load_encoder(cfg, pre_dir).to(dist.device)
    head = build_head(encoder.embed_dim, cfg.data.num_classes).to(dist.device)
    if dist.enabled:
        head = nn.SyncBatchNorm.convert_sync_batchnorm(head)
    d = cfg.data
    train_ds = build_dataset(d.root, "train", build_probe_transform(d.img_size),
                             d.synth_index_map, bad_images=d.bad_images)
    val_ds = build_dataset(d.root, "val", build_eval_transform(d.img_size),
                           d.synth_index_map, bad_images=d.bad_images)
    loader = make_loader(train_ds, cfg.train, train=True, dist=dist)
    val_loader = make_loader(val_ds, cfg.train, train=False, dist=dist)
    criterion = nn.CrossEntropyLoss()
    forward_head = distributed.wrap(head, dist)

    def loss_fn(batch):
        x, y = batch[0].to(dist.device), batch[1].to(dist.device)
        with torch.no_grad():
            feats = encoder.forward_probe_features(x)
        return criterion(forward_head(feats.float()), y)

    pre_run, tags = parent_tags(pre_dir, "pretrain")
    t0 = time.perf_counter()
    with tracked(cfg, out, dist, tags) as tracker:
        history = fit(head, loss_fn, lars(head, cfg), loader, cfg.train, out, tracker,
                      evaluate=lambda: {"top1": accuracy(encoder, head, val_loader, dist)},
                      desc="linear_probe", dist=dist,
                      extra_state={"mlflow_run_id": tracker.run_id if tracker else ""})
    evals = [h for h in history if "top1" in h]
    best = max(evals, key=lambda h: h["top1"])
    metrics = {
        "stage": "linear_probe", "experiment": cfg.experiment,
        "mlflow_run_id": tracker.run_id if tracker else None,
        "pretrain_run_id": pre_run, "top1_best": best["top1"], "top1_last": evals[-1]["top1"],
        "best_epoch": best["epoch"], "top1_curve": [h["top1"] for h in evals],
        "wall_s": time.perf_counter() - t0,
    }
    if tracker:
        tracker.log_metrics({"top1_best": metrics["top1_best"]}, step=len(history))
    return complete(out, metrics, tracker, cfg, dist)


def main(argv: list[str] | None = None) -> int:
    return run_main("linear_probe", run, argv)
