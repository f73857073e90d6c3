"""Stage ``finetune``: end-to-end fine-tuning of a pretrained encoder (and few-shot).

Global pool, layer-wise lr decay, RandAugment, Mixup/CutMix, label smoothing, drop path,
random erasing, warm-up + cosine (PixMIM Table 9 / MAE Table 11), all from timm. With
``finetune.fraction < 1`` it trains on a deterministic class-balanced subset (few-shot,
PixMIM Table 19). Writes ``model.pth`` (for the robustness and shape-bias stages) and
``metrics.json`` (best and last top-1).

Any layout of the batch (processes x per-process batch x accumulation) trains what one
process trains on the whole batch, but for Mixup/CutMix, which pair the images of each
(micro-)batch: RandAugment and random erasing draw from each sample's seed, and so does
drop path (:mod:`pixmim.models.drop_path`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from timm.data import Mixup, create_transform
from timm.layers import trunc_normal_
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2

from pixmim import registry
from pixmim.config import JobConfig
from pixmim.data.datasets import Subset, build_dataset, class_balanced_subset
from pixmim.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_eval_transform,
    use_zero_safe_posterize,
)
from pixmim.engine import distributed
from pixmim.engine.loop import capped, fit, make_loader, scaled_lr, seed_everything
from pixmim.evaluation import metrics as M
from pixmim.models.classifier import build_classifier, save_classifier
from pixmim.models.drop_path import seed_drop_path
from pixmim.models.export import fit_pos_embeds, load_pretrained
from pixmim.stages.common import (
    binomial_se,
    chance_top1,
    complete,
    load_pretrain_checkpoint,
    parent_tags,
    released_state,
    run_main,
    tracked,
)


def train_transform(cfg: JobConfig):
    """timm's training transform: RRC (bicubic), flip, RandAugment, random erasing."""
    use_zero_safe_posterize()
    f = cfg.finetune
    return create_transform(cfg.data.img_size, is_training=True, auto_augment=f.auto_augment,
                            interpolation="bicubic", re_prob=f.reprob, re_mode="pixel",
                            re_count=1, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def build_model(cfg: JobConfig, pretrain_dir: Path) -> nn.Module:
    """The classifier with the pretrained encoder loaded (exact keys asserted)."""
    ckpt = load_pretrain_checkpoint(cfg, pretrain_dir)
    f = cfg.finetune
    model = build_classifier(cfg.method, cfg.arch, cfg.data.num_classes, f.drop_path,
                             f.global_pool, img_size=cfg.data.img_size)
    load_pretrained(model, ckpt["model"], cfg.method)
    trunc_normal_(model.head.weight, std=2e-5)  # MAE main_finetune.py: head init std 2e-5
    return model


def training_set(cfg: JobConfig):
    ds = build_dataset(cfg.data.root, "train", train_transform(cfg), cfg.data.synth_index_map,
                       bad_images=cfg.data.bad_images)
    if cfg.finetune.fraction >= 1:
        return ds
    targets = [t for _, t in ds.samples]
    return Subset(ds, class_balanced_subset(targets, cfg.finetune.fraction,
                                            cfg.finetune.subset_seed))


@torch.no_grad()
def evaluate(model: nn.Module, loader, dist, limit: int = 0) -> dict[str, float]:
    """Top-1 and top-5 (%) over the first ``limit`` batches of ``loader`` (0: all)."""
    model.eval()
    top1 = top5 = total = 0
    for x, y in capped(loader, limit):
        hits = M.topk_hits(model(x.to(dist.device)), y, (1, 5))
        top1, top5, total = top1 + hits[0], top5 + hits[1], total + len(y)
    top1, top5, total = distributed.all_reduce_sum([top1, top5, total], dist)
    return {"top1": 100.0 * top1 / max(total, 1), "top5": 100.0 * top5 / max(total, 1)}


def build_optimizer(model: nn.Module, cfg: JobConfig) -> torch.optim.Optimizer:
    """AdamW (``train.betas``: 0.9, 0.999 in PixMIM Table 9) with layer-wise lr decay (BEiT;
    timm's groups: embeddings, each block, then norms and head) and no weight decay on
    biases, norms and tokens (MAE fine-tuning)."""
    t = cfg.train
    if t.optimizer != "adamw":
        raise ValueError(f"train.optimizer: fine-tuning uses adamw, not {t.optimizer!r}")
    return create_optimizer_v2(model, t.optimizer, lr=scaled_lr(t), weight_decay=t.weight_decay,
                               layer_decay=cfg.finetune.layer_decay, betas=t.betas)


def classifier_meta(cfg: JobConfig, global_pool: str, **extra: Any) -> dict[str, Any]:
    """The meta of ``model.pth`` (trained here or imported), from which the robustness and
    shape-bias stages rebuild the classifier."""
    return {"method": cfg.method, "arch": cfg.arch, "num_classes": cfg.data.num_classes,
            "global_pool": global_pool, "img_size": cfg.data.img_size,
            "experiment": cfg.experiment, **extra}


def val_set(cfg: JobConfig):
    return build_dataset(cfg.data.root, "val", build_eval_transform(cfg.data.img_size),
                         cfg.data.synth_index_map, bad_images=cfg.data.bad_images)


def top1_metrics(cfg: JobConfig, val_ds, evals: list[dict[str, Any]]) -> dict[str, Any]:
    """What the ``ft`` column and the report read of a fine-tune's validations."""
    best = max(evals, key=lambda h: h["top1"])
    return {"stage": cfg.stage, "experiment": cfg.experiment,
            "top1_best": best["top1"], "top1_last": evals[-1]["top1"],
            "chance_top1": chance_top1(val_ds), "val_images": len(val_ds),
            "sampling_se_top1": binomial_se(best["top1"], len(val_ds)),
            "top5_last": evals[-1]["top5"], "best_epoch": best["epoch"],
            "top1_curve": [h["top1"] for h in evals]}


def import_released(cfg: JobConfig, out: Path) -> dict[str, Any]:
    """A released fine-tuned classifier as this run's fine-tune (``cfg.released``): the
    fetched file converted by the method's family (its head of the job's class count:
    another is one line naming the keys, never a random head), evaluated once on the
    validation set, saved as a trained one (``model.pth``, the same meta plus
    ``released``) for the robustness and shape-bias stages; nothing is trained."""
    r, dist = cfg.released, distributed.setup(cfg.train.device)
    state, _ = released_state(cfg, "finetuned", cfg.data.num_classes)
    # global average pool with fc_norm: what the family's finetuned kind holds
    model = build_classifier(cfg.method, cfg.arch, cfg.data.num_classes, 0.0, "avg",
                             img_size=cfg.data.img_size)
    model.load_state_dict(fit_pos_embeds(state, model), strict=True)
    model = model.to(dist.device)
    val_ds = val_set(cfg)
    t0 = time.perf_counter()
    top = evaluate(model, make_loader(val_ds, cfg.train, train=False, dist=dist), dist,
                   cfg.train.max_eval_batches)
    released = {"name": r.name, "source": r.source, "checksum": r.checksum,
                "format": r.format, "published": dict(r.published)}
    with tracked(cfg, out, dist, tags={"released": r.name}) as tracker:
        metrics = {**top1_metrics(cfg, val_ds, [{**top, "epoch": 0}]),
                   "mlflow_run_id": tracker.run_id if tracker else None,
                   "released": released, "epochs": 0, "train_images": 0,
                   "fraction": cfg.finetune.fraction, "wall_s": time.perf_counter() - t0}
        if tracker:
            tracker.log_metrics({"top1_best": metrics["top1_best"]}, step=0)
    if dist.is_main:
        save_classifier(out / "model.pth", model,
                        classifier_meta(cfg, "avg", released=released))
    return complete(out, metrics, tracker, cfg, dist)


def run(cfg: JobConfig, out: Path) -> dict[str, Any]:
    if cfg.released.name:
        return import_released(cfg, out)
    if cfg.pretrain_dir is None:
        raise ValueError("pretrain_dir: fine-tuning needs a pretraining output folder")
    pre_dir, f, t = Path(cfg.pretrain_dir), cfg.finetune, cfg.train
    dist = distributed.setup(cfg.train.device, cfg.train.gpus, cfg.train.nodes,
                             registry.stage(cfg.stage).section or "train")
    seed_everything(t.seed)
    model = build_model(cfg, pre_dir).to(dist.device)
    # stochastic depth from the samples' seeds: the same whatever the process layout
    drop_draws = seed_drop_path(model)
    train_ds = training_set(cfg)
    val_ds = val_set(cfg)
    loader = make_loader(train_ds, t, train=True, dist=dist)
    val_loader = make_loader(val_ds, t, train=False, dist=dist)
    optimizer = build_optimizer(model, cfg)
    mixup = Mixup(mixup_alpha=f.mixup, cutmix_alpha=f.cutmix, label_smoothing=f.smoothing,
                  num_classes=cfg.data.num_classes) if f.mixup > 0 or f.cutmix > 0 else None
    criterion = SoftTargetCrossEntropy() if mixup else (
        LabelSmoothingCrossEntropy(f.smoothing) if f.smoothing > 0 else nn.CrossEntropyLoss())
    forward = distributed.wrap(torch.compile(model) if t.compile else model, dist)

    def loss_fn(batch):
        x, y, seeds = batch[0].to(dist.device), batch[1].to(dist.device), batch[2]
        if drop_draws is not None:
            drop_draws.fill(seeds, dist.device)
        if mixup is not None:
            # timm Mixup draws from numpy, one lambda per batch, and pairs each image with
            # its mirror in the batch (x.flip(0)): it depends on the per-process batch,
            # the one part of the fine-tune that is not the same under any layout
            np.random.seed(int(seeds[0]) % 2**32)
            x, y = mixup(x, y)
        return criterion(forward(x), y)

    pre_run, tags = parent_tags(pre_dir, "pretrain")
    t0 = time.perf_counter()
    with tracked(cfg, out, dist, tags) as tracker:
        history = fit(model, loss_fn, optimizer, loader, t, out, tracker,
                      evaluate=lambda: evaluate(model, val_loader, dist, t.max_eval_batches),
                      desc=cfg.stage,
                      dist=dist, extra_state={"mlflow_run_id": tracker.run_id if tracker else ""})
    metrics = {
        **top1_metrics(cfg, val_ds, [h for h in history if "top1" in h]),
        "mlflow_run_id": tracker.run_id if tracker else None, "pretrain_run_id": pre_run,
        "train_images": len(train_ds), "fraction": f.fraction,
        "wall_s": time.perf_counter() - t0,
    }
    if dist.is_main:
        save_classifier(out / "model.pth", model, classifier_meta(cfg, f.global_pool))
    return complete(out, metrics, tracker, cfg, dist)


def main(argv: list[str] | None = None) -> int:
    return run_main("finetune", run, argv)
