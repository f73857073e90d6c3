"""Downstream classifiers of pretrained encoders: build, save, load (fine-tune outputs).

ViT methods classify with timm's ``VisionTransformer`` (global average pool + fc_norm, as
MAE fine-tuning); ConvMAE with our ``ConvViT``. A saved classifier is
``{"model": state_dict, "meta": {...}}`` and loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from pixmim.models import archs


def build_classifier(method: str, arch: str, num_classes: int = 1000,
                     drop_path_rate: float = 0.0, global_pool: str = "avg") -> nn.Module:
    """The classifier that fine-tunes the encoder of ``method``/``arch``."""
    if method == "convmae":
        from pixmim.models.convmae import ConvViT, convvit_kwargs

        return ConvViT(**convvit_kwargs(arch), num_classes=num_classes,
                       drop_path_rate=drop_path_rate)
    from pixmim.models.export import vit_for

    return vit_for(method, arch, num_classes, global_pool, drop_path_rate)


def image_size(method: str, arch: str) -> int:
    return archs(method)[arch].get("img_size", 224)


def save_classifier(path: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    from pixmim.engine.io import atomic_write

    state = {"model": model.state_dict(), "meta": meta}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a saved classifier (meta: method, arch, num_classes, global_pool) in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classifier checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    meta = ckpt["meta"]
    model = build_classifier(meta["method"], meta["arch"], meta["num_classes"],
                             global_pool=meta.get("global_pool", "avg"))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval()
