"""What the dense-prediction backbones of every encoder family share (torch + timm only).

The backbones themselves live with their family (``pixmim/families/<family>/nets.py``:
the plain ViT's ``SegViT``/``ViTDet``, ConvViT's pyramid); the OpenMMLab registries see
them through :mod:`pixmim.downstream.seg` and :mod:`pixmim.downstream.det`. Nothing here
imports OpenMMLab, so shapes and checkpoint conversion test without it.

Each backbone loads a pretraining checkpoint through :func:`load_encoder`, which maps our
pretraining keys onto the backbone (its ``convert``) and asserts the exact key sets: every
backbone key is either loaded or one of the parameters the backbone adds (relative
position tables, output norms), and every checkpoint key is either loaded or dropped (the
method's declared pretraining-only parameters, and what the family never takes downstream).
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from pixmim import families

LN = partial(nn.LayerNorm, eps=1e-6)


def square(tokens: int) -> int:
    """The side of a square grid of ``tokens`` tokens, 0 if there is none."""
    side = math.isqrt(max(tokens, 0))
    return side if side * side == tokens and side else 0


def drop_path_rates(rate: float, depth: int) -> list[float]:
    return torch.linspace(0, rate, depth, device="cpu").tolist()  # timm's linear rule


class DenseBackbone(nn.Module):
    """What the dense backbones share: loading the pretraining checkpoint named by
    ``pretrained`` in :meth:`init_weights` (mmengine calls it), and layer ids for
    layer-wise lr decay (BEiT, Bao et al. 2021): embeddings 0, block i i + 1; anything
    else (norms, added layers) num_layers + 1."""

    method: str
    arch: str
    pretrained: str | None
    num_layers: int

    # Checkpoint keys the family's dense backbones never take (beyond the method's own
    # pretraining-only ones), e.g. the plain ViT's final norm.
    family_drop: tuple[str, ...] = ()

    @property
    def drop(self) -> tuple[str, ...]:
        """Key prefixes of a pretraining checkpoint this backbone drops: the method's
        pretraining-only parameters (its declaration) and ``family_drop``."""
        return (*families.pretrain_only(self.method), *self.family_drop)

    def convert(self, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
        """Pretraining keys -> the backbone's: by default the same keys, ``drop`` dropped
        (a family whose keys differ overrides this); returns (mapped, dropped keys)."""
        out = {k: v for k, v in state.items() if not k.startswith(self.drop)}
        return out, sorted(set(state) - set(out))

    def init_weights(self) -> None:
        if self.pretrained:
            load_encoder(self, self.pretrained, self.method, self.arch)

    def layer_id(self, name: str) -> int:
        name = name.removeprefix("backbone.")
        if name.startswith(("cls_token", "pos_embed", "patch_embed")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.num_layers + 1



def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, meta)`` of a pretraining ``checkpoint.pth`` (weights only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"{path}: not a PixMIM Bench pretraining checkpoint (no 'model' entry)")
    state = {k.removeprefix("module."): v for k, v in ckpt["model"].items()}
    return state, ckpt.get("meta", {})


def load_encoder(backbone: nn.Module, source: str | Path | dict[str, torch.Tensor],
                 method: str, arch: str) -> dict[str, list[str]]:
    """Load a pretraining checkpoint (path or state dict) into a dense backbone, exactly.

    Returns:
        ``{"loaded": [...], "added": [...], "dropped": [...]}`` key lists.

    Raises:
        ValueError: the checkpoint is of another method or arch, or a tensor's shape
            differs (another size); KeyError: any key outside the expected sets, named.
    """
    if isinstance(source, dict):
        state, meta = source, {}
        where = "state dict"
    else:
        state, meta = read_checkpoint(source)
        where = str(source)
    got = (meta.get("method", method), meta.get("arch", arch))
    if got != (method, arch):
        raise ValueError(f"{where}: checkpoint is {got[0]}/{got[1]}, the backbone wants "
                         f"{method}/{arch}")
    mapped, dropped = backbone.convert(state)
    own = backbone.state_dict()
    bad = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in mapped.items()
           if k in own and v.shape != own[k].shape]
    if bad:
        raise ValueError(f"{where} does not fit {type(backbone).__name__}({arch}): {bad[:3]}")
    result = backbone.load_state_dict(mapped, strict=False)
    missing, unexpected = set(result.missing_keys), set(result.unexpected_keys)
    added = backbone.added_keys()
    if unexpected or missing != added:
        raise KeyError(
            f"{where} -> {type(backbone).__name__}: unexpected checkpoint keys "
            f"{sorted(unexpected)[:5]}, backbone keys not loaded {sorted(missing - added)[:5]}, "
            f"added keys the checkpoint set {sorted(added - missing)[:5]}")
    return {"loaded": sorted(mapped), "added": sorted(added), "dropped": sorted(dropped)}
