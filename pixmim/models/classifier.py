"""Downstream classifiers of pretrained encoders: build, save, load (fine-tune outputs).

The classifier is the method's encoder family's (``pixmim.families``: ``classifier`` of its
``nets`` module), never chosen by the method's name. A saved classifier is
``{"model": state_dict, "meta": {...}}`` and loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from pixmim import families
from pixmim.io import atomic_write


def build_classifier(method: str, arch: str, num_classes: int = 1000,
                     drop_path_rate: float = 0.0, global_pool: str = "avg",
                     img_size: int | None = None) -> nn.Module:
    """The classifier that fine-tunes the encoder of ``method``/``arch`` at ``img_size`` px
    (None: the arch's own): its encoder family's (``pixmim.families``)."""
    return families.nets_of(method).classifier(
        families.arch(method, arch), num_classes=num_classes, drop_path_rate=drop_path_rate,
        global_pool=global_pool, img_size=img_size)


def save_classifier(path: Path, model: nn.Module, meta: dict[str, Any]) -> None:
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
