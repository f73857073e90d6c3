"""Stage ``pretrain``: masked-image-modeling pretraining of one experiment.

Writes ``<out>/checkpoint.pth`` (model weights + meta) and ``<out>/metrics.json``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from timm.optim import create_optimizer_v2

from pixmim.config import JobConfig, to_dict
from pixmim.data.datasets import build_dataset
from pixmim.data.transforms import build_pretrain_transform
from pixmim.engine.loop import fit, make_loader, scaled_lr, seed_everything
from pixmim.models import create_model
from pixmim.stages.common import finish, run_main, save_model, start_tracker


def build(cfg: JobConfig) -> torch.nn.Module:
    """The pretraining model of a job config (also used to load its checkpoint)."""
    v = cfg.variant
    return create_model(cfg.method, cfg.arch, img_size=cfg.data.img_size,
                        mask_ratio=cfg.mask_ratio, norm_pix_loss=cfg.norm_pix_loss,
                        target=v.target, radius=v.radius, lowpass_mode=v.lowpass_mode)


def run(cfg: JobConfig, out: Path) -> dict[str, Any]:
    seed_everything(cfg.train.seed)
    device = torch.device(cfg.train.device)
    model = build(cfg).to(device)
    dataset = build_dataset(cfg.data.root, "train",
                            build_pretrain_transform(cfg.variant.crop, cfg.data.img_size),
                            imagenet_labels=cfg.data.synth_index_map)
    loader = make_loader(dataset, cfg.train, train=True)
    t = cfg.train
    optimizer = create_optimizer_v2(model, "adamw", lr=scaled_lr(t), weight_decay=t.weight_decay,
                                    betas=t.betas)

    def loss_fn(batch):
        return model(batch[0].to(device, non_blocking=True))[0]

    tracker = start_tracker(cfg, out)
    t0 = time.perf_counter()
    try:
        history = fit(model, loss_fn, optimizer, loader, t, out, tracker, desc="pretrain",
                      extra_state={"mlflow_run_id": tracker.run_id or ""})
    except BaseException:
        tracker.finish("FAILED")
        raise
    meta = {"method": cfg.method, "arch": cfg.arch, "img_size": cfg.data.img_size,
            "experiment": cfg.experiment, "variant": to_dict(cfg.variant),
            "mlflow_run_id": tracker.run_id or ""}
    save_model(out / "checkpoint.pth", model, meta)
    metrics = {
        "stage": "pretrain", "experiment": cfg.experiment, "mlflow_run_id": tracker.run_id,
        "final_loss": history[-1]["train_loss"],
        "loss_curve": [h["train_loss"] for h in history],
        "images_per_s": sum(h["images_per_s"] for h in history) / len(history),
        "epochs": len(history), "wall_s": time.perf_counter() - t0,
    }
    finish(out, metrics, tracker, cfg)
    return metrics


def main(argv: list[str] | None = None) -> int:
    return run_main("pretrain", run, argv)
