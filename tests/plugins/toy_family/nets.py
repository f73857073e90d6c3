"""The toy hierarchical family's torch side: encoder, classifier, key map, dense pyramid."""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from timm.models.vision_transformer import Block

from pixmim import families
from pixmim.downstream.backbones import DenseBackbone

_LN = partial(nn.LayerNorm, eps=1e-6)


class HierEncoder:
    """Patch embed (4 px) -> stage 1 -> 2x2 patch merging -> stage 2 -> norm.

    ``tokens(imgs, replace)``: [N, 3, H, W] -> stage-1 map and the final tokens
    [N, (H/8)^2, d2]; ``replace`` ([N, H/4, W/4], 1 = masked) swaps masked stage-1 inputs
    for ``mask_token`` (the pretraining model's; None downstream)."""

    def build_encoder(self, *, img_size: int, embed_dims: tuple[int, int],
                      depths: tuple[int, int], num_heads: int, mlp_ratio: float = 4.0,
                      drop_path_rate: float = 0.0) -> None:
        d1, d2 = embed_dims
        self.embed_dim, self.grid = d2, img_size // 8
        self.patch_embed = nn.Conv2d(3, d1, 4, stride=4)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.blocks1 = nn.ModuleList([Block(d1, num_heads, mlp_ratio, qkv_bias=True,
                                            drop_path=r, norm_layer=_LN)
                                      for r in rates[:depths[0]]])
        self.merge_norm = nn.LayerNorm(4 * d1)
        self.merge = nn.Linear(4 * d1, d2, bias=False)
        self.blocks2 = nn.ModuleList([Block(d2, num_heads, mlp_ratio, qkv_bias=True,
                                            drop_path=r, norm_layer=_LN)
                                      for r in rates[depths[0]:]])
        self.norm = nn.LayerNorm(d2, eps=1e-6)

    def stages(self, imgs: torch.Tensor, mask_token: torch.Tensor | None = None,
               masked: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(stage-1 map [N, d1, H/4, W/4], stage-2 map [N, d2, H/8, W/8]) before the norm."""
        x = self.patch_embed(imgs)
        n, d1, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        if masked is not None:
            m = masked.flatten(1).unsqueeze(-1).to(x.dtype)
            x = x * (1 - m) + mask_token.to(x.dtype) * m
        for blk in self.blocks1:
            x = blk(x)
        s1 = x.transpose(1, 2).reshape(n, d1, h, w)
        merged = F.pixel_unshuffle(s1, 2).flatten(2).transpose(1, 2)  # [N, L/4, 4 d1]
        x = self.merge(self.merge_norm(merged))
        for blk in self.blocks2:
            x = blk(x)
        return s1, x.transpose(1, 2).reshape(n, -1, h // 2, w // 2)

    def forward_features(self, imgs: torch.Tensor) -> torch.Tensor:
        """imgs: [N, 3, H, W] -> tokens [N, (H/8)^2, d2] after the norm."""
        return self.norm(self.stages(imgs)[1].flatten(2).transpose(1, 2))


class HierClassifier(nn.Module, HierEncoder):
    """The encoder, average pool, a linear head."""

    def __init__(self, num_classes: int = 1000, drop_path_rate: float = 0.0,
                 **arch: Any) -> None:
        super().__init__()
        self.build_encoder(drop_path_rate=drop_path_rate, **arch)
        self.head = nn.Linear(self.embed_dim, num_classes)

    def group_matcher(self, coarse: bool = False):
        """Layer ids for layer-wise lr decay: embedding 0, blocks in order, the rest last."""
        n1 = len(self.blocks1)

        def layer_id(name: str) -> float:
            head, _, rest = name.partition(".")
            if head == "patch_embed":
                return 0
            if head == "blocks1":
                return 1 + int(rest.split(".")[0])
            if head in ("merge", "merge_norm"):
                return 1 + n1
            if head == "blocks2":
                return 2 + n1 + int(rest.split(".")[0])
            return float("inf")

        return layer_id

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(imgs).mean(dim=1))


def _arch(method: str, arch: str) -> dict[str, Any]:
    if families.module_name(families.of(method)) != __package__:
        raise ValueError(f"method {method} is not of the toy hierarchical family")
    return families.arch(method, arch)


def classifier(arch: dict[str, Any], num_classes: int = 1000, drop_path_rate: float = 0.0,
               global_pool: str = "avg", img_size: int | None = None) -> nn.Module:
    kw = {k: v for k, v in arch.items() if k in ("embed_dims", "depths", "num_heads",
                                                  "mlp_ratio")}
    return HierClassifier(num_classes=num_classes, drop_path_rate=drop_path_rate,
                          img_size=img_size or arch["img_size"], **kw)


def load_pretrained(model: nn.Module, state_dict: dict, drop: tuple[str, ...],
                    who: str) -> dict[str, Any]:
    state = {k: v for k, v in state_dict.items() if not k.startswith(drop)}
    result = model.load_state_dict(state, strict=False)
    if set(result.missing_keys) != {"head.weight", "head.bias"} or result.unexpected_keys:
        raise KeyError(f"{who} -> toy classifier: missing {result.missing_keys}, unexpected "
                       f"{result.unexpected_keys}")
    return {"missing": sorted(result.missing_keys), "unexpected": []}


class HierPyramid(DenseBackbone, HierEncoder):
    """The two stage maps (1/4, 1/8) plus a pooled 1/16 and 1/32, each LayerNorm2d'd, with
    the channels the dense heads read."""

    family_drop = ("norm.",)

    def __init__(self, method: str, arch: str, drop_path_rate: float = 0.0,
                 pretrained: str | None = None) -> None:
        super().__init__()
        a = _arch(method, arch)
        self.method, self.arch, self.pretrained = method, arch, pretrained
        self.build_encoder(img_size=a["img_size"], embed_dims=a["embed_dims"],
                           depths=a["depths"], num_heads=a["num_heads"],
                           mlp_ratio=a.get("mlp_ratio", 4.0), drop_path_rate=drop_path_rate)
        d1, d2 = a["embed_dims"]
        self.out_channels = (d1, d2, d2, d2)
        self.out_norms = nn.ModuleList([LayerNorm2d(c) for c in self.out_channels])
        self.num_layers = sum(a["depths"]) + 1
        del self.norm  # the pyramid reads the stage maps

    def layer_id(self, name: str) -> int:
        head, _, rest = name.removeprefix("backbone.").partition(".")
        n1 = len(self.blocks1)
        ids = {"patch_embed": 0, "merge": 1 + n1, "merge_norm": 1 + n1}
        if head == "blocks1":
            return 1 + int(rest.split(".")[0])
        if head == "blocks2":
            return 2 + n1 + int(rest.split(".")[0])
        return ids.get(head, self.num_layers + 1)

    def added_keys(self) -> set[str]:
        return {k for k in self.state_dict() if k.startswith("out_norms.")}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        s1, s2 = self.stages(x)
        s3 = F.max_pool2d(s2, 2, ceil_mode=True)
        outs = (s1, s2, s3, F.max_pool2d(s3, 2, ceil_mode=True))
        return tuple(norm(o) for norm, o in zip(self.out_norms, outs, strict=True))


def _channels(method: str, arch: str) -> list[int]:
    d1, d2 = _arch(method, arch)["embed_dims"]
    return [d1, d2, d2, d2]


def segmentation(cfg, arch: str, pretrained: str | None) -> tuple[dict, dict | None, list[int]]:
    bb = dict(type="ToyHierPyramid", method=cfg.method, arch=arch,
              drop_path_rate=cfg.dense.drop_path, pretrained=pretrained)
    return bb, None, _channels(cfg.method, arch)


def detection(cfg, arch: str, pretrained: str | None, channels: int) -> tuple[dict, dict]:
    bb = dict(type="ToyHierPyramid", method=cfg.method, arch=arch,
              drop_path_rate=cfg.dense.drop_path, pretrained=pretrained)
    neck = dict(_delete_=True, type="FPN", in_channels=_channels(cfg.method, arch),
                out_channels=channels, num_outs=5)
    return bb, neck


MODULES = {"ToyHierPyramid": HierPyramid}
