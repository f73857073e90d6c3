"""Downstream classifiers of pretrained encoders: build, save, load (fine-tune outputs).

The classifier is chosen by the method's declared encoder family, never by its name:
family ``vit`` classifies with timm's ``VisionTransformer`` (global average pool + fc_norm,
as MAE fine-tuning); family ``convvit`` with our ``ConvViT``. A saved classifier is
``{"model": state_dict, "meta": {...}}`` and loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from pixmim.models import by_family


def build_classifier(method: str, arch: str, num_classes: int = 1000,
                     drop_path_rate: float = 0.0, global_pool: str = "avg",
                     img_size: int | None = None) -> nn.Module:
    """The classifier that fine-tunes the encoder of ``method``/``arch`` at ``img_size`` px
    (None: the arch's own), by its encoder family (an unknown family is a ValueError naming
    the method and its family)."""
    build = by_family(method, {"vit": _vit_classifier, "convvit": _convvit_classifier},
                      "build_classifier")
    return build(method, arch, num_classes, drop_path_rate, global_pool, img_size)


def _vit_classifier(method: str, arch: str, num_classes: int, drop_path_rate: float,
                    global_pool: str, img_size: int | None) -> nn.Module:
    from pixmim.models.export import vit_for

    return vit_for(method, arch, num_classes, global_pool, drop_path_rate, img_size)


def _convvit_classifier(method: str, arch: str, num_classes: int, drop_path_rate: float,
                        global_pool: str, img_size: int | None) -> nn.Module:
    """The released ConvViT fine-tune model (Alpha-VL/ConvMAE ``models_convvit.py``, which
    PixMIM follows for ConvMAE, Sec. 5.1): no multi-scale fusion, no final norm, stage-3
    tokens averaged, then ``fc_norm`` and the head; ``global_pool`` is not used."""
    from pixmim.models.convmae import ConvViT
    from pixmim.models.export import convvit_arch

    kw = convvit_arch(method, arch)
    if img_size:
        kw["img_size"] = img_size
    return ConvViT(**kw, num_classes=num_classes, drop_path_rate=drop_path_rate,
                   multiscale_fusion=False)


def save_classifier(path: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    from pixmim.io import atomic_write

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
                             global_pool=meta.get("global_pool", "avg"),
                             img_size=meta.get("img_size"))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval()
