"""The ConvViT family (ConvMAE's hybrid encoder): encoder, classifier, key maps, pyramid.

The encoder: two stages of convolution blocks at 1/4 and 1/8 resolution, then
transformer blocks at 1/16 (Alpha-VL/ConvMAE ``models_convmae.py``, ``vision_transformer.py``
and ``models_convvit.py``; module names follow those files: same state-dict keys and
shapes). :class:`ConvEncoderMixin` builds it for the pretraining model
(:class:`pixmim.models.convmae.ConvMAE`) and for this family's downstream models:

* :class:`ConvViT`: the classifier (global pool + LayerNorm + Linear);
* :class:`ConvViTPyramid`: the stages as a pyramid (1/4, 1/8, 1/16 and a pooled 1/32) for
  UperNet's head and mmdet's FPN.

Nothing here imports OpenMMLab: :func:`segmentation` and :func:`detection` return config
dicts naming the classes of ``MODULES``, which the downstream modules register.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from functools import partial
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm2d, Mlp, resample_abs_pos_embed, trunc_normal_
from timm.layers.attention import Attention
from timm.models.vision_transformer import Block

from pixmim import families
from pixmim.downstream.backbones import DenseBackbone
from pixmim.families.convvit import full
from pixmim.models.mae import sincos_pos_embed

Ints = tuple[int, ...]
# The multi-scale fusion convs and the final norm: the pretraining encoder's, dropped by
# the released fine-tuning model (models_convvit.py) and by the pyramid.
FUSION = ("stage1_output_decode.", "stage2_output_decode.", "norm.")


def convvit_arch(method: str, arch: str) -> dict[str, Any]:
    """``ConvViT`` kwargs of ``method``'s ``arch`` (decoder keys removed); a method of
    another family is a ValueError naming it and its family."""
    fam = families.of(method)
    if families.module_name(fam) != __package__:
        raise ValueError(f"method {method} has no ConvViT (encoder family {fam}); arch "
                         f"{arch!r} needs a backbone of its own family")
    return encoder_kwargs(families.arch(method, arch))


def encoder_kwargs(arch: dict[str, Any]) -> dict[str, Any]:
    """An arch entry without its decoder keys."""
    return {k: v for k, v in arch.items() if not k.startswith("decoder_")}


def gather(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """x: [N, L, D], ids: [N, L'] -> [N, L', D]."""
    return torch.gather(x, 1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def vit_blocks(dim: int, heads: int, mlp_ratio: float, dprs: list[float]) -> nn.ModuleList:
    """timm Blocks, qkv bias, LayerNorm eps 1e-6 (models_convmae.py), one per drop-path rate."""
    ln = partial(nn.LayerNorm, eps=1e-6)
    return nn.ModuleList([Block(dim, heads, mlp_ratio, qkv_bias=True, drop_path=p, norm_layer=ln)
                          for p in dprs])


def conv_embed(in_chans: int, dim: int, k: int) -> nn.Sequential:
    """k x k stride-k conv + LayerNorm-2d (eps 1e-5) + GELU, the reference PatchEmbed
    (vision_transformer.py): [N, C, H, W] -> [N, D, H/k, W/k]."""
    return nn.Sequential(OrderedDict(proj=nn.Conv2d(in_chans, dim, k, stride=k),
                                     norm=LayerNorm2d(dim, eps=1e-5), act=nn.GELU()))


class ConvBlock(nn.Module):
    """Reference CBlock, [N, C, H, W] -> same: x + DropPath(1x1, visible-mask, 5x5 depthwise,
    1x1)(LN(x)), then x + DropPath(conv-MLP)(LN(x)). LayerNorm-2d (eps 1e-5) as the reference:
    BatchNorm would mix masked content into visible positions through batch statistics."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(dim, eps=1e-5)
        self.conv1 = nn.Conv2d(dim, dim, 1)
        self.attn = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)  # 5x5 depthwise: reference
        self.conv2 = nn.Conv2d(dim, dim, 1)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = LayerNorm2d(dim, eps=1e-5)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), use_conv=True)

    def forward(self, x: torch.Tensor, visible: torch.Tensor | None = None) -> torch.Tensor:
        """x: [N, C, H, W]; visible: [N, 1, H, W], 1 = kept (None: no masking)."""
        y = self.conv1(self.norm1(x))
        if visible is not None:
            y = y * visible  # masked convolution: zero masked positions before the 5x5
        x = x + self.drop_path(self.conv2(self.attn(y)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ConvEncoderMixin:
    """The ConvViT encoder shared by :class:`ConvMAE` and :class:`ConvViT` (host: nn.Module)."""

    def build_encoder(self, *, img_size: int, in_chans: int, patch_sizes: Ints,
                      embed_dims: Ints, depths: Ints, num_heads: int, mlp_ratio: float,
                      drop_path_rate: float = 0.0, multiscale_fusion: bool = True,
                      learn_pos: bool = False) -> None:
        if not len(patch_sizes) == len(embed_dims) == len(depths) == 3:
            raise ValueError("patch_sizes, embed_dims and depths need one entry per stage (3)")
        stride = math.prod(patch_sizes)
        if img_size % stride:
            raise ValueError(f"img_size {img_size} must be a multiple of {stride}")
        self.grid, d = img_size // stride, embed_dims[2]
        self.embed_dim, self.multiscale_fusion = d, multiscale_fusion
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # timm rule
        c1, c2 = depths[0], depths[0] + depths[1]
        self.patch_embed1 = conv_embed(in_chans, embed_dims[0], patch_sizes[0])
        self.patch_embed2 = conv_embed(embed_dims[0], embed_dims[1], patch_sizes[1])
        self.patch_embed3 = conv_embed(embed_dims[1], d, patch_sizes[2])
        self.patch_embed4 = nn.Linear(d, d)  # the reference's Linear after the stage-3 embed
        self.blocks1 = nn.ModuleList([ConvBlock(embed_dims[0], mlp_ratio, p) for p in dpr[:c1]])
        self.blocks2 = nn.ModuleList([ConvBlock(embed_dims[1], mlp_ratio, p) for p in dpr[c1:c2]])
        self.pos_embed = nn.Parameter(sincos_pos_embed(self.grid, d, cls_token=False),
                                      requires_grad=learn_pos)
        self.blocks3 = vit_blocks(d, num_heads, mlp_ratio, dpr[c2:])
        if multiscale_fusion:  # k = stride convs down to the 1/16 grid: models_convmae.py
            k1, k2 = patch_sizes[1] * patch_sizes[2], patch_sizes[2]
            self.stage1_output_decode = nn.Conv2d(embed_dims[0], d, k1, stride=k1)
            self.stage2_output_decode = nn.Conv2d(embed_dims[1], d, k2, stride=k2)
            self.norm = nn.LayerNorm(d, eps=1e-6)

    @property
    def num_patches(self) -> int:
        return self.grid**2

    def set_fused_attn(self, enable: bool = True) -> None:
        """Use torch SDPA (fused) or the explicit softmax(QK^T)V path in every attention."""
        for m in self.modules():
            if isinstance(m, Attention):
                m.fused_attn = enable

    def encode(self, imgs: torch.Tensor, visible: torch.Tensor | None = None,
               ids_keep: torch.Tensor | None = None) -> torch.Tensor:
        """Stages 1-3, then fusion + final norm (without fusion: the raw stage-3 output).

        Args:
            imgs: [N, 3, H, W]; visible: [N, 1, H/16, W/16], 1 = kept (None: unmasked);
            ids_keep: [N, L_keep], the tokens stage 3 sees (None: all L).

        Returns: [N, L_keep or L, D].
        """
        x, skips = imgs, []
        stages = [(self.patch_embed1, self.blocks1), (self.patch_embed2, self.blocks2)]
        for i, (embed, blocks) in enumerate(stages):
            x = embed(x)
            v = None if visible is None else F.interpolate(visible, x.shape[-2:], mode="nearest")
            for blk in blocks:
                x = blk(x, v)
            if self.multiscale_fusion:
                fuse = self.stage1_output_decode if i == 0 else self.stage2_output_decode
                skips.append(fuse(x).flatten(2).transpose(1, 2))
        x = self.patch_embed4(self.patch_embed3(x).flatten(2).transpose(1, 2)) + self.pos_embed
        if ids_keep is not None:
            x, skips = gather(x, ids_keep), [gather(s, ids_keep) for s in skips]
        for blk in self.blocks3:
            x = blk(x)
        return self.norm(x + sum(skips)) if self.multiscale_fusion else x


class ConvViT(nn.Module, ConvEncoderMixin):
    """ConvViT classifier: the ConvMAE encoder unmasked, global pool + LayerNorm + Linear.

    ``multiscale_fusion=True`` keeps the pretraining encoder (fusion convs and final norm),
    so its tokens equal ``ConvMAE.forward_features``. ``False`` is the released fine-tune /
    linear-probe model (models_convvit.py, global_pool): no fusion, no final norm.
    """

    def __init__(self, *, img_size: int = 224, in_chans: int = 3, num_classes: int = 1000,
                 patch_sizes: Ints = (4, 2, 2), embed_dims: Ints = (256, 384, 768),
                 depths: Ints = (2, 2, 11), num_heads: int = 12, mlp_ratio: float = 4.0,
                 drop_path_rate: float = 0.0, multiscale_fusion: bool = True,
                 fused_attn: bool = True) -> None:
        super().__init__()
        self.build_encoder(img_size=img_size, in_chans=in_chans, patch_sizes=patch_sizes,
                           embed_dims=embed_dims, depths=depths, num_heads=num_heads,
                           mlp_ratio=mlp_ratio, drop_path_rate=drop_path_rate,
                           multiscale_fusion=multiscale_fusion, learn_pos=True)
        self.fc_norm = nn.LayerNorm(self.embed_dim, eps=1e-6)  # models_convvit.py global_pool
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes else nn.Identity()
        self.set_fused_attn(fused_attn)
        for m in self.modules():  # vision_transformer.py ConvViT._init_weights
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False):
        """Layer ids for layer-wise lr decay (timm): the stem, each block of the three stages
        in order (stage embeds with their stage), then fusion, norms and head last."""
        d1, d2 = len(self.blocks1), len(self.blocks2)
        starts = {"blocks1": 1, "blocks2": 2 + d1, "blocks3": 3 + d1 + d2}
        embeds = {"patch_embed1": 0, "patch_embed2": 1 + d1, "patch_embed3": 2 + d1 + d2,
                  "patch_embed4": 2 + d1 + d2, "pos_embed": 2 + d1 + d2}

        def layer_id(name: str) -> float:
            head, _, rest = name.partition(".")
            if head in starts:
                return starts[head] + int(rest.split(".")[0])
            return embeds.get(head, float("inf"))

        return layer_id

    def forward_features(self, imgs: torch.Tensor) -> torch.Tensor:
        """imgs: [N, 3, H, W] -> tokens [N, L, D]."""
        return self.encode(imgs)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """x: [N, L, D] -> logits [N, num_classes] (or pooled features [N, D])."""
        x = self.fc_norm(x.mean(dim=1))
        return x if pre_logits else self.head(x)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(imgs))


# ------------------------------------------------------------------ classifier
def classifier(arch: dict[str, Any], num_classes: int = 1000, drop_path_rate: float = 0.0,
               global_pool: str = "avg", img_size: int | None = None) -> nn.Module:
    """The released ConvViT fine-tune model (Alpha-VL/ConvMAE ``models_convvit.py``, which
    PixMIM follows for ConvMAE, Sec. 5.1): no multi-scale fusion, no final norm, stage-3
    tokens averaged, then ``fc_norm`` and the head; ``global_pool`` is not used."""
    kw = encoder_kwargs(arch)
    if img_size:
        kw["img_size"] = img_size
    return ConvViT(**kw, num_classes=num_classes, drop_path_rate=drop_path_rate,
                   multiscale_fusion=False)


def checkpoint_filter(state_dict: dict, model: nn.Module, drop: tuple[str, ...]) -> dict:
    """Map a ConvMAE pretraining state dict (or ``{"model": ...}`` checkpoint) to ConvViT
    keys: drops the pretraining-only keys ``drop`` (and the fusion convs and the final norm
    when ``model`` has no fusion); strips DDP's ``module.`` prefix. Everything else is kept,
    so unknown keys still surface as unexpected when loading."""
    state_dict = state_dict.get("model", state_dict)
    drop = drop + (() if getattr(model, "multiscale_fusion", False) else FUSION)
    stripped = ((k.removeprefix("module."), v) for k, v in state_dict.items())
    return {k: v for k, v in stripped if not k.startswith(drop)}


def load_pretrained(model: nn.Module, state_dict: dict, drop: tuple[str, ...],
                    who: str) -> dict[str, Any]:
    """Load a pretraining state dict into a ConvViT; exactly ``head.*``/``fc_norm.*`` may
    be missing.

    Raises:
        KeyError: naming every key that differs: missing beyond the head, unexpected, or a
            head / fc_norm the checkpoint provided; ValueError: a shape (another size).
    """
    try:
        result = model.load_state_dict(checkpoint_filter(state_dict, model, drop), strict=False)
    except RuntimeError as e:
        raise ValueError(f"checkpoint does not fit the {who} model: {e}") from None
    expected = {k for k in model.state_dict() if k.startswith(("head.", "fc_norm."))}
    missing, unexpected = set(result.missing_keys) - expected, set(result.unexpected_keys)
    not_missing = expected - set(result.missing_keys)  # the checkpoint set the new head
    if missing or unexpected or not_missing:
        raise KeyError(f"unexpected key mismatch loading the {who} encoder into ConvViT: "
                       f"missing {sorted(missing)}, unexpected {sorted(unexpected)}, "
                       f"unexpectedly provided {sorted(not_missing)}")
    return {"missing": sorted(expected), "unexpected": []}


# ------------------------------------------------------------------ dense backbone
def pyramid_channels(method: str, arch: str) -> tuple[int, ...]:
    """Channels of :class:`ConvViTPyramid`'s four levels (the 1/32 level repeats 1/16)."""
    dims = tuple(convvit_arch(method, arch)["embed_dims"])
    return (*dims, dims[2])


class ConvViTPyramid(DenseBackbone):
    """ConvMAE's encoder unmasked, its stages as a pyramid: 1/4, 1/8, 1/16 and a max-pooled
    1/32 map, each with its own LayerNorm2d (the fusion convs and final norm are dropped,
    as in the released fine-tuning model).

    Args:
        method, arch: a pretraining method of encoder family ``convvit`` and its arch
            (another family is a ValueError naming the method and its family).
        drop_path_rate: stochastic depth.
        pretrained: a pretraining ``checkpoint.pth`` loaded by :meth:`init_weights`.
    """

    family_drop = FUSION

    def __init__(self, method: str, arch: str, drop_path_rate: float = 0.1,
                 pretrained: str | None = None) -> None:
        super().__init__()
        kw = convvit_arch(method, arch)
        self.method, self.arch, self.pretrained = method, arch, pretrained
        enc = nn.Module()
        kw = full(kw)
        ConvEncoderMixin.build_encoder(enc, img_size=kw["img_size"], in_chans=3,
                                       patch_sizes=kw["patch_sizes"],
                                       embed_dims=kw["embed_dims"], depths=kw["depths"],
                                       num_heads=kw["num_heads"],
                                       mlp_ratio=kw["mlp_ratio"],
                                       drop_path_rate=drop_path_rate, multiscale_fusion=False,
                                       learn_pos=True)
        # Flatten the encoder's modules onto self so the keys match the checkpoint.
        for name, mod in enc.named_children():
            self.add_module(name, mod)
        self.pos_embed, self.grid = enc.pos_embed, enc.grid
        self.out_channels = dims = pyramid_channels(method, arch)
        self.out_norms = nn.ModuleList([LayerNorm2d(c) for c in dims])
        d1, d2, d3 = kw["depths"]
        self.num_layers = d1 + d2 + d3 + 2
        self._starts = {"blocks1": 1, "blocks2": 2 + d1, "blocks3": 3 + d1 + d2}
        self._embeds = {"patch_embed1": 0, "patch_embed2": 1 + d1, "patch_embed3": 2 + d1 + d2,
                        "patch_embed4": 2 + d1 + d2, "pos_embed": 2 + d1 + d2}

    def layer_id(self, name: str) -> int:
        """Layer ids as ``ConvViT.group_matcher``: each stage embed just before its stage."""
        head, _, rest = name.removeprefix("backbone.").partition(".")
        if head in self._starts:
            return self._starts[head] + int(rest.split(".")[0])
        return self._embeds.get(head, self.num_layers + 1)

    def added_keys(self) -> set[str]:
        return {k for k in self.state_dict() if k.startswith("out_norms.")}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = []
        for embed, blocks in ((self.patch_embed1, self.blocks1), (self.patch_embed2, self.blocks2)):
            x = embed(x)
            for blk in blocks:
                x = blk(x)
            outs.append(x)
        x = self.patch_embed3(x)
        n, _, h, w = x.shape
        pos = self.pos_embed
        if (h, w) != (self.grid, self.grid):
            pos = resample_abs_pos_embed(pos, [h, w], old_size=[self.grid] * 2,
                                         num_prefix_tokens=0)
        x = self.patch_embed4(x.flatten(2).transpose(1, 2)) + pos
        for blk in self.blocks3:
            x = blk(x)
        x = x.transpose(1, 2).reshape(n, -1, h, w)
        outs += [x, F.max_pool2d(x, 2, ceil_mode=True)]
        return tuple(norm(o) for norm, o in zip(self.out_norms, outs, strict=True))


# ------------------------------------------------------------------ dense configs
def segmentation(cfg, arch: str, pretrained: str | None) -> tuple[dict, dict | None, list[int]]:
    """(backbone, neck, channels per level) of UperNet: the stages straight into the head."""
    bb = dict(type="PixMIMConvViT", method=cfg.method, arch=arch,
              drop_path_rate=cfg.dense.drop_path, pretrained=pretrained)
    return bb, None, list(pyramid_channels(cfg.method, arch))


def detection(cfg, arch: str, pretrained: str | None, channels: int) -> tuple[dict, dict]:
    """(backbone, neck) of Mask R-CNN: the stages into mmdet's FPN (LayerNorm)."""
    bb = dict(type="PixMIMConvViT", method=cfg.method, arch=arch,
              drop_path_rate=cfg.dense.drop_path, pretrained=pretrained)
    neck = dict(_delete_=True, type="FPN", in_channels=list(pyramid_channels(cfg.method, arch)),
                out_channels=channels, num_outs=5, norm_cfg=dict(type="LN2d"))
    return bb, neck


# The classes the dense configs name (registered by pixmim.downstream.seg / det).
MODULES = {"PixMIMConvViT": ConvViTPyramid}
