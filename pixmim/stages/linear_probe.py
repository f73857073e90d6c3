"""Stage ``linear_probe``: a linear classifier on frozen pretrained features.

Head: BatchNorm1d(affine=False) + Linear (init std 0.01), LARS, cls token or global pool
as the method requires (MAE Sec. A.2 / PixMIM Table 10). Reports best and last top-1.

The encoder is frozen and in eval mode, so the feature of (image, augmentation seed) is
fixed: with ``train.feature_views: K`` the features of K augmented views of every training
image (view k drawn with epoch k's sample seeds) and of the validation set are computed
once, and epoch e trains on view e mod K. K >= epochs is exactly the per-epoch protocol;
smaller K repeats augmentations (the embedded default: the probe then costs K encoder
passes over the data instead of one per epoch).

Several processes train the probe one process trains on the whole batch (the head's
BatchNorm statistics are the whole batch's: :class:`GlobalBatchNorm1d`); accumulation
(``train.accum_steps > 1``) does not: each micro-batch is normalised by its own statistics.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from timm.layers import trunc_normal_
from timm.optim import Lars

from pixmim import registry
from pixmim.config import JobConfig
from pixmim.data.datasets import build_dataset, sample_seed
from pixmim.data.transforms import build_eval_transform, build_probe_transform
from pixmim.engine import distributed
from pixmim.engine.loop import capped, fit, make_loader, scaled_lr, seed_everything
from pixmim.evaluation import metrics as M
from pixmim.models import create_model
from pixmim.stages.common import (
    binomial_se,
    chance_top1,
    complete,
    load_encoder,
    load_weights,
    parent_tags,
    released_state,
    run_main,
    tracked,
)


class GlobalBatchNorm1d(distributed.GlobalBatchNorm):
    """BatchNorm1d whose training statistics are those of the whole batch across processes.

    MAE's probe (main_linprobe.py) and mmselfsup/mmpretrain's (ClsBatchNormNeck, configs
    ``8xb2048``) put a plain BatchNorm1d under DistributedDataParallel: each GPU normalises
    by its own shard (512 of MAE's 16384 images, 2048 of mmpretrain's), so their probe
    depends on the GPU count. Here the sums behind the mean and the variance are summed
    over the processes (SyncBatchNorm's semantics; torch.nn.SyncBatchNorm runs on GPUs
    only, this on gloo too), so any number of processes trains the probe that the
    single-process protocol trains on the whole batch. Gradient accumulation cannot do
    the same: each micro-batch is normalised by its own statistics (``train.accum_steps
    > 1`` changes the probe). One process: exactly nn.BatchNorm1d."""

    def _check_input_dim(self, x: torch.Tensor) -> None:  # as nn.BatchNorm1d
        if x.dim() not in (2, 3):
            raise ValueError(f"expected 2D or 3D input (got {x.dim()}D)")


def build_head(dim: int, num_classes: int) -> nn.Sequential:
    head = nn.Sequential(GlobalBatchNorm1d(dim, affine=False, eps=1e-6),
                         nn.Linear(dim, num_classes))
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
def accuracy(features, head: nn.Module, batches, dist, limit: int = 0) -> float:
    """Top-1 (%) over this rank's shard of ``batches`` ((input, label) pairs whose input
    ``features`` maps to frozen features; the first ``limit``, 0: all), summed over ranks."""
    head.eval()
    hits = total = 0
    for x, y in capped(batches, limit):
        logits = head(features(x.to(dist.device)).float())
        hits += M.top1_hits(logits, y)
        total += len(y)
    hits, total = distributed.all_reduce_sum([hits, total], dist)
    return 100.0 * hits / max(total, 1)


@torch.no_grad()
def extract(encoder: nn.Module, loader, dist) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen features (on CPU, fp32) and labels of everything ``loader`` yields."""
    feats, labels = [], []
    for batch in loader:
        feats.append(encoder.forward_probe_features(batch[0].to(dist.device)).float().cpu())
        labels.append(batch[1])
    return torch.cat(feats), torch.cat(labels)


class CachedViews(torch.utils.data.Dataset):
    """Features of K augmented views of a training set; key ``(index, seed)`` of the
    training sampler reads view ``sampler.epoch mod K`` (num_workers 0: in memory)."""

    def __init__(self, views: torch.Tensor, labels: torch.Tensor) -> None:
        self.views, self.labels, self.sampler = views, labels, None

    def __len__(self) -> int:
        return self.views.shape[1]

    def __getitem__(self, key):
        index = key[0] if isinstance(key, tuple) else key
        return self.views[self.sampler.epoch % len(self.views), index], self.labels[index]


def cache_views(encoder: nn.Module, dataset, cfg: JobConfig, dist) -> CachedViews:
    """Features of ``train.feature_views`` views of every image of ``dataset``, view k
    augmented with the sample seeds the training sampler uses in epoch k."""
    t = cfg.train
    views, labels = [], None
    for k in range(t.feature_views):
        keys = [(i, sample_seed(t.seed, k, i)) for i in range(len(dataset))]
        # the per-process batch: the effective one (16384 in the paper) is not one forward
        per_process = max(1, t.batch_size // t.accum_steps // dist.world)
        loader = torch.utils.data.DataLoader(dataset, batch_size=per_process, sampler=keys,
                                             num_workers=t.num_workers)
        feats, labels = extract(encoder, loader, dist)
        views.append(feats)
    return CachedViews(torch.stack(views), labels)


def import_released(cfg: JobConfig, out: Path) -> dict[str, Any]:
    """A released linear probe as this run's probe (``cfg.released``): the fetched file
    (frozen encoder, BatchNorm1d without affine, Linear) converted by the method's family
    (a head of another class count, a file of another kind: one line naming the keys,
    never a random head), its top-1 on the validation set; nothing is trained."""
    r, dist = cfg.released, distributed.setup(cfg.train.device)
    state, _ = released_state(cfg, "linear_probe", cfg.data.num_classes)
    head_state = {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
    encoder = create_model(cfg.method, cfg.arch, img_size=cfg.data.img_size)
    # the encoder's keys only: the pretraining-only ones (decoder) are not in a probe
    load_weights(encoder, {k: v for k, v in state.items() if not k.startswith("head.")},
                 cfg.method, True, r.file)
    encoder = encoder.requires_grad_(False).eval().to(dist.device)
    head = build_head(encoder.embed_dim, cfg.data.num_classes)
    head.load_state_dict(head_state, strict=True)
    head = head.to(dist.device)
    d = cfg.data
    val_ds = build_dataset(d.root, "val", build_eval_transform(d.img_size), d.synth_index_map,
                           bad_images=d.bad_images)
    t0 = time.perf_counter()
    top1 = accuracy(encoder.forward_probe_features, head,
                    make_loader(val_ds, cfg.train, train=False, dist=dist), dist,
                    cfg.train.max_eval_batches)
    released = {"name": r.name, "source": r.source, "checksum": r.checksum,
                "format": r.format, "published": dict(r.published)}
    with tracked(cfg, out, dist, tags={"released": r.name}) as tracker:
        metrics = {
            "stage": "linear_probe", "experiment": cfg.experiment,
            "mlflow_run_id": tracker.run_id if tracker else None, "released": released,
            "top1_best": top1, "top1_last": top1, "chance_top1": chance_top1(val_ds),
            "val_images": len(val_ds), "sampling_se_top1": binomial_se(top1, len(val_ds)),
            "best_epoch": 0, "top1_curve": [top1], "epochs": 0,
            "wall_s": time.perf_counter() - t0,
        }
        if tracker:
            tracker.log_metrics({"top1_best": top1}, step=0)
    return complete(out, metrics, tracker, cfg, dist)


def run(cfg: JobConfig, out: Path) -> dict[str, Any]:
    if cfg.released.name:
        return import_released(cfg, out)
    if cfg.pretrain_dir is None:
        raise ValueError("pretrain_dir: the linear probe needs a pretraining output folder")
    dist = distributed.setup(cfg.train.device, cfg.train.gpus, cfg.train.nodes,
                             registry.stage(cfg.stage).section or "train")
    seed_everything(cfg.train.seed)
    pre_dir = Path(cfg.pretrain_dir)
    encoder = load_encoder(cfg, pre_dir).to(dist.device)
    head = build_head(encoder.embed_dim, cfg.data.num_classes).to(dist.device)
    d = cfg.data
    train_ds = build_dataset(d.root, "train", build_probe_transform(d.img_size),
                             d.synth_index_map, bad_images=d.bad_images)
    val_ds = build_dataset(d.root, "val", build_eval_transform(d.img_size),
                           d.synth_index_map, bad_images=d.bad_images)
    val_loader = make_loader(val_ds, cfg.train, train=False, dist=dist)
    features = encoder.forward_probe_features
    t0 = time.perf_counter()
    if cfg.train.feature_views:
        cached = cache_views(encoder, train_ds, cfg, dist)
        loader = make_loader(cached, replace(cfg.train, num_workers=0), train=True, dist=dist)
        cached.sampler = loader.sampler
        val_feats, val_labels = extract(encoder, capped(val_loader,
                                                        cfg.train.max_eval_batches), dist)
        val_batches = list(zip(val_feats.split(loader.batch_size),
                               val_labels.split(loader.batch_size), strict=True))
        features = nn.Identity()
        print(f"[linear_probe] cached {cfg.train.feature_views} view(s) of {len(train_ds)} "
              f"images and {len(val_ds)} val images in {time.perf_counter() - t0:.1f} s",
              flush=True)
    else:
        loader = make_loader(train_ds, cfg.train, train=True, dist=dist)
        val_batches = val_loader
    criterion = nn.CrossEntropyLoss()
    forward_head = distributed.wrap(head, dist)

    def loss_fn(batch):
        x, y = batch[0].to(dist.device), batch[1].to(dist.device)
        with torch.no_grad():
            feats = features(x)
        return criterion(forward_head(feats.float()), y)

    pre_run, tags = parent_tags(pre_dir, "pretrain")
    with tracked(cfg, out, dist, tags) as tracker:
        history = fit(head, loss_fn, lars(head, cfg), loader, cfg.train, out, tracker,
                      evaluate=lambda: {"top1": accuracy(features, head, val_batches, dist,
                                                         cfg.train.max_eval_batches)},
                      desc="linear_probe", dist=dist,
                      extra_state={"mlflow_run_id": tracker.run_id if tracker else ""})
    evals = [h for h in history if "top1" in h]
    best = max(evals, key=lambda h: h["top1"])
    metrics = {
        "stage": "linear_probe", "experiment": cfg.experiment,
        "mlflow_run_id": tracker.run_id if tracker else None,
        "pretrain_run_id": pre_run, "top1_best": best["top1"], "top1_last": evals[-1]["top1"],
        "chance_top1": chance_top1(val_ds), "val_images": len(val_ds),
        "sampling_se_top1": binomial_se(best["top1"], len(val_ds)),
        "best_epoch": best["epoch"], "top1_curve": [h["top1"] for h in evals],
        "loss_curve": [h["train_loss"] for h in history],
        "wall_s": time.perf_counter() - t0,
    }
    if tracker:
        tracker.log_metrics({"top1_best": metrics["top1_best"]}, step=0)  # a summary
    return complete(out, metrics, tracker, cfg, dist)


def main(argv: list[str] | None = None) -> int:
    return run_main("linear_probe", run, argv)
