"""Stage ``pretrain``: masked-image-modeling pretraining of one experiment.

Writes ``<out>/checkpoint.pth`` (model weights + meta) and ``<out>/metrics.json``. Runs as
one process or under ``torchrun`` (DistributedDataParallel, NCCL on GPUs, gloo on CPUs).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from timm.optim import create_optimizer_v2

from pixmim import registry
from pixmim.config import JobConfig, to_dict
from pixmim.data.datasets import build_dataset
from pixmim.data.loading import UInt8Crop, to_device
from pixmim.data.transforms import build_pretrain_transform
from pixmim.engine import distributed
from pixmim.engine.loop import fit, make_loader, scaled_lr, seed_everything
from pixmim.models import create_model
from pixmim.stages.common import (
    complete,
    load_model_file,
    load_weights,
    released_state,
    run_main,
    save_model,
    tracked,
)
from pixmim.stages.monitor import Monitor


def model_kwargs(cfg: JobConfig) -> dict[str, Any]:
    """The model keywords of a pretraining job (saved in the checkpoint's meta, from which
    every downstream stage rebuilds the model): the variant scaled to the input size."""
    return {"img_size": cfg.data.img_size, "mask_ratio": cfg.mask_ratio,
            "norm_pix_loss": cfg.norm_pix_loss, **cfg.variant.model_kwargs(cfg.data.img_size)}


def build(cfg: JobConfig) -> torch.nn.Module:
    """The pretraining model of a job config."""
    return create_model(cfg.method, cfg.arch, **model_kwargs(cfg))


def build_optimizer(model: torch.nn.Module, t, device: torch.device):
    """AdamW without weight decay on norms, biases, tokens (``no_weight_decay``); one fused
    kernel on CUDA instead of a loop over parameter tensors."""
    extra = {"fused": True} if device.type == "cuda" else {}
    if t.optimizer != "adamw":
        raise ValueError(f"train.optimizer: pretraining uses adamw, not {t.optimizer!r}")
    return create_optimizer_v2(model, t.optimizer, lr=scaled_lr(t),
                               weight_decay=t.weight_decay, betas=t.betas, **extra)


def mask_noise(seeds: torch.Tensor, units: int) -> torch.Tensor:
    """[N, units] uniform noise, each row drawn from its sample's seed (rank-independent)."""
    rows = [torch.rand(units, generator=torch.Generator().manual_seed(int(s) ^ 0x5EED))
            for s in seeds]
    return torch.stack(rows)


def training_set(cfg: JobConfig):
    """``data.root/train`` under the variant's crop, decoded and cropped as uint8 in the
    workers (converted and normalised on the device). Labels are unused: any class folder
    names (Places365's categories, PixMIM Table 6)."""
    data = cfg.data
    crop = UInt8Crop(build_pretrain_transform(cfg.variant.crop, data.img_size))
    return build_dataset(data.root, "train", crop, imagenet_labels=False,
                         masks_root=data.masks_root, bad_images=data.bad_images)


def checkpoint_meta(cfg: JobConfig, metrics: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The meta a pretraining checkpoint carries (trained here or imported), from which
    every downstream stage rebuilds the model."""
    return {"method": cfg.method, "arch": cfg.arch, "img_size": cfg.data.img_size,
            "experiment": cfg.experiment, "variant": to_dict(cfg.variant),
            "model_kwargs": model_kwargs(cfg), "mlflow_run_id": metrics["mlflow_run_id"] or "",
            **extra}


def import_released(cfg: JobConfig, out: Path) -> dict[str, Any]:
    """A released checkpoint as this run's pretraining (``cfg.released``): the fetched file
    converted into our layout by the method's family (``formats``), checked against the
    model the job describes, saved with the same meta as a trained one; nothing is trained.
    An encoder-only release keeps no decoder (``meta.encoder_only``): a stage that needs
    one (the frequency analysis) refuses it instead of reading a random decoder."""
    r, dist = cfg.released, distributed.setup(cfg.train.device)
    if r.format == "pixmim":  # one of ours: {"model", "meta"} as this stage saves it
        raw = load_model_file(Path(r.file))
        meta = raw.get("meta") if isinstance(raw, dict) else None
        if not isinstance(meta, dict) or (meta.get("method"), meta.get("arch")) != (
                cfg.method, cfg.arch):
            raise ValueError(f"{r.file}: not a pixmim {cfg.method}/{cfg.arch} pretraining "
                             f"checkpoint (checkpoints.{r.name}.format: pixmim)")
        state, encoder_only = raw["model"], bool(meta.get("encoder_only"))
    else:
        state, report = released_state(cfg, "pretrained")
        encoder_only = report["encoder_only"]
    load_weights(build(cfg), state, cfg.method, encoder_only, r.file)  # it fits the job's model
    released = {"name": r.name, "source": r.source, "checksum": r.checksum,
                "format": r.format, "encoder_only": encoder_only,
                "published": dict(r.published)}
    with tracked(cfg, out, dist, tags={"released": r.name}) as tracker:
        metrics = {"stage": "pretrain", "experiment": cfg.experiment,
                   "mlflow_run_id": tracker.run_id if tracker else None,
                   "released": released, "epochs": 0, "world_size": dist.world}
    # what the file holds, no more: an encoder-only release gets no (random) decoder
    save_model(out / "checkpoint.pth", state,
               checkpoint_meta(cfg, metrics, released=released, encoder_only=encoder_only))
    return complete(out, metrics, tracker, cfg, dist)


def run(cfg: JobConfig, out: Path) -> dict[str, Any]:
    if cfg.released.name:
        return import_released(cfg, out)
    dist = distributed.setup(cfg.train.device, cfg.train.gpus, cfg.train.nodes,
                             registry.stage(cfg.stage).section or "train")
    seed_everything(cfg.train.seed)
    model = build(cfg).to(dist.device)
    dataset = training_set(cfg)
    loader = make_loader(dataset, cfg.train, train=True, dist=dist)
    t = cfg.train
    optimizer = build_optimizer(model, t, dist.device)
    forward = distributed.wrap(torch.compile(model) if t.compile else model, dist)

    def loss_fn(batch):
        imgs, _, seeds = batch
        noise = mask_noise(seeds, model.num_mask_units)
        return forward(to_device(imgs, dist.device), noise=noise.to(dist.device))[0]

    t0 = time.perf_counter()
    with tracked(cfg, out, dist) as tracker:
        monitor = Monitor(model, cfg, out, dist, tracker)  # pretrain.monitor: k-NN, images
        history = fit(model, loss_fn, optimizer, loader, t, out, tracker, desc="pretrain",
                      dist=dist, monitor=monitor if monitor.active else None,
                      extra_state={"mlflow_run_id": tracker.run_id if tracker else ""})
    metrics = {
        "stage": "pretrain", "experiment": cfg.experiment,
        "mlflow_run_id": tracker.run_id if tracker else None,
        "final_loss": history[-1]["train_loss"],
        "loss_curve": [h["train_loss"] for h in history],
        "images_per_s": sum(h["images_per_s"] for h in history) / len(history),
        "epochs": len(history), "world_size": dist.world, "wall_s": time.perf_counter() - t0,
        "bad_images_skipped": len(dataset.skipped), **monitor.summary(history),
    }
    if cfg.variant.target == "adaptive":
        metrics["final_radius"] = model.current_radius
    if dist.is_main:
        save_model(out / "checkpoint.pth", model, checkpoint_meta(cfg, metrics))
    return complete(out, metrics, tracker, cfg, dist)


def main(argv: list[str] | None = None) -> int:
    return run_main("pretrain", run, argv)

