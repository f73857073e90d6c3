"""The plain-ViT family (MAE, MFF, LSMAE): its classifier, key maps and dense backbones.

* Classifier: timm's ``VisionTransformer`` with the arch's width, depth, heads and patch
  (global average pool + ``fc_norm``, as MAE fine-tuning); the pretraining keys map onto it
  through :func:`checkpoint_filter`.
* :class:`SegViT`: the ViT of UperNet on ADE20K. BEiT-style blocks (timm ``beit.Block``)
  with a relative position bias per block initialised to zero (PixMIM Sec. 5, "we also turn
  on the relative position bias and initialize them with zero"), features of four blocks
  as ``[N, D, H/p, W/p]`` maps for mmseg's ``Feature2Pyramid``.
* :class:`ViTDet`: the plain ViT of Mask R-CNN, ViTDet style (Li et al. 2022, "Exploring
  Plain Vision Transformer Backbones for Object Detection"): window attention in every block
  but the evenly spaced global ones (ViT-B: windows of 14, global blocks 2, 5, 8, 11),
  decomposed relative position (timm's SAM ``Block``), one stride-p map for
  :class:`SimpleFPN`.

Nothing here imports OpenMMLab: :func:`segmentation` and :func:`detection` return config
dicts naming the classes of ``MODULES``, which the downstream modules register.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm2d, PatchEmbed, resample_abs_pos_embed, trunc_normal_
from timm.models import beit, vision_transformer_sam
from timm.models.vision_transformer import VisionTransformer

from pixmim import families
from pixmim.downstream.backbones import LN, DenseBackbone, drop_path_rates, square
from pixmim.families.vit import full
from pixmim.models.export import fit_pos_embeds

ENCODER_KEYS = ("cls_token", "pos_embed", "patch_embed.", "blocks.", "norm.")


def vit_arch(method: str, arch: str) -> dict[str, Any]:
    """``method``'s ``arch`` with the ViT defaults filled in; a method of another family is
    a ValueError naming it and its family."""
    fam = families.of(method)
    if families.module_name(fam) != __package__:
        raise ValueError(f"method {method} has no plain ViT (encoder family {fam}); arch "
                         f"{arch!r} needs a backbone of its own family")
    return full(families.arch(method, arch))


# ------------------------------------------------------------------ classifier
def classifier(arch: dict[str, Any], num_classes: int = 1000, drop_path_rate: float = 0.0,
               global_pool: str = "avg", img_size: int | None = None) -> nn.Module:
    """The timm ViT matching a pretraining ``arch`` (same width, depth, heads, patch) at
    ``img_size`` px (None: the arch's own size)."""
    a = full(arch)
    return VisionTransformer(
        img_size=img_size or a["img_size"], patch_size=a["patch_size"],
        embed_dim=a["embed_dim"], depth=a["depth"], num_heads=a["num_heads"],
        mlp_ratio=a["mlp_ratio"], qkv_bias=True, num_classes=num_classes,
        global_pool=global_pool, drop_path_rate=drop_path_rate,
    )


def checkpoint_filter(state_dict: dict[str, torch.Tensor], model: nn.Module,
                      drop: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Map a pretraining state dict onto timm ``VisionTransformer`` keys: drops the
    pretraining-only keys ``drop``; drops the final ``norm`` when the model pools with
    ``fc_norm`` (global pool: MAE fine-tuning re-initialises that norm); resamples the
    position grid to the model's input size (:func:`fit_pos_embeds`)."""
    uses_norm = not isinstance(getattr(model, "norm", None), nn.Identity)
    out = {k: v for k, v in state_dict.items()
           if not k.startswith(drop) and (uses_norm or not k.startswith("norm."))}
    return fit_pos_embeds(out, model)


def new_keys(model: nn.Module) -> set[str]:
    """Keys the classifier adds on top of the encoder: the head (and fc_norm)."""
    return {k for k in model.state_dict() if k.startswith(("head.", "fc_norm."))}


def load_pretrained(model: nn.Module, state_dict: dict[str, torch.Tensor],
                    drop: tuple[str, ...], who: str) -> dict[str, Any]:
    """Load a pretraining state dict into the classifier; exactly the head may be missing.

    Raises:
        KeyError: a key that is neither encoder nor pretraining-only (``drop``), or any
            missing/unexpected key beyond the head; ValueError: a shape (another size).
    """
    unknown = [k for k in state_dict if not k.startswith(drop) and not k.startswith(ENCODER_KEYS)]
    if unknown:
        raise KeyError(f"checkpoint has keys no {who} encoder has: {unknown[:5]}")
    try:
        result = model.load_state_dict(checkpoint_filter(state_dict, model, drop), strict=False)
    except RuntimeError as e:  # shape mismatch: another size
        raise ValueError(f"checkpoint does not fit the {who} model: {e}") from None
    missing, unexpected = set(result.missing_keys), set(result.unexpected_keys)
    if missing != new_keys(model) or unexpected:
        raise KeyError(f"unexpected key mismatch loading the {who} encoder: missing "
                       f"{sorted(missing - new_keys(model))}, unexpected {sorted(unexpected)}")
    return {"missing": sorted(missing), "unexpected": sorted(unexpected)}


# ------------------------------------------------------------------ dense backbones
def default_out_indices(depth: int) -> tuple[int, ...]:
    """Four evenly spaced blocks ending at the last: ViT-B (12) -> (3, 5, 7, 11) (mmseg MAE)."""
    return tuple(sorted({max(0, round(depth * f) - 1) for f in (1 / 3, 1 / 2, 2 / 3)}
                        | {depth - 1})) if depth >= 4 else tuple(range(depth))


def default_global_blocks(depth: int) -> tuple[int, ...]:
    """ViTDet's global-attention blocks: the last of each quarter (ViT-B: 2, 5, 8, 11)."""
    q = max(2, depth // 4)
    return tuple(range(q - 1, depth, q))


class SegViT(DenseBackbone):
    """ViT with a zero-initialised relative position bias in every block, for UperNet.

    Args:
        method, arch: the pretraining method and arch (``pixmim.methods``).
        img_size: training crop in px; the rel-pos tables and position grid are built for it
            (test with mmseg's slide mode at the same crop).
        out_indices: blocks whose outputs feed the pyramid (None: four evenly spaced).
        drop_path_rate: stochastic depth (paper Tables 12/13: 0.1).
        use_rel_pos_bias: BEiT-style relative position bias (paper: on, zero-initialised).
        pretrained: a pretraining ``checkpoint.pth`` loaded by :meth:`init_weights`.
    """

    family_drop = ("norm.",)  # the final norm: fine-tuning re-initialises it

    def __init__(self, method: str = "mae", arch: str = "vit_base_patch16_224",
                 img_size: int = 512, out_indices: tuple[int, ...] | None = None,
                 drop_path_rate: float = 0.1, use_rel_pos_bias: bool = True,
                 pretrained: str | None = None) -> None:
        super().__init__()
        a = vit_arch(method, arch)
        self.method, self.arch, self.pretrained = method, arch, pretrained
        d, depth, p = a["embed_dim"], a["depth"], a["patch_size"]
        if img_size % p:
            raise ValueError(f"img_size {img_size} is not a multiple of the patch size {p}")
        self.embed_dim, self.num_layers, self.patch_size = d, depth, p
        self.grid = img_size // p
        self.out_indices = tuple(out_indices) if out_indices else default_out_indices(depth)
        if max(self.out_indices) >= depth:
            raise ValueError(f"out_indices {self.out_indices} beyond depth {depth} of {arch}")
        self.patch_embed = PatchEmbed(img_size, p, 3, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid**2, d))
        window = (self.grid, self.grid) if use_rel_pos_bias else None
        self.blocks = nn.ModuleList([
            beit.Block(d, a["num_heads"], qkv_bias=True, mlp_ratio=a["mlp_ratio"],
                       drop_path=r, norm_layer=LN, window_size=window)
            for r in drop_path_rates(drop_path_rate, depth)])
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)

    def added_keys(self) -> set[str]:
        """Parameters the pretraining checkpoint does not provide."""
        return {k for k in self.state_dict() if k.endswith("relative_position_bias_table")}

    def convert(self, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
        """Pretraining ViT keys -> ours: fused qkv bias split into BEiT's q/v biases (the key
        bias is dropped: softmax is invariant to it), position grid resampled to the crop."""
        out, dropped = {}, []
        d = self.embed_dim
        for k, v in state.items():
            if k.startswith(self.drop):
                dropped.append(k)
            elif k.endswith("attn.qkv.bias"):
                stem = k.removesuffix("qkv.bias")
                out[stem + "q_bias"], out[stem + "v_bias"] = v[:d], v[2 * d:]
            elif (k == "pos_embed" and v.shape[1] != self.pos_embed.shape[1]
                  and square(v.shape[1] - 1)):  # else the shape check names it
                out[k] = resample_abs_pos_embed(v, [self.grid, self.grid], num_prefix_tokens=1)
            else:
                out[k] = v
        return out, dropped

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n, _, h, w = x.shape
        if (h, w) != (self.grid * self.patch_size,) * 2:
            raise ValueError(f"SegViT built for {self.grid * self.patch_size}px crops got "
                             f"{h}x{w}: set the crop to the backbone's img_size (slide test)")
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(n, -1, -1), x], dim=1) + self.pos_embed
        outs = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i in self.out_indices:
                outs.append(x[:, 1:].transpose(1, 2).reshape(n, -1, self.grid, self.grid))
        return tuple(outs)


class ViTDet(DenseBackbone):
    """Plain ViT of ViTDet: window attention with a few global blocks, decomposed rel-pos.

    Args:
        method, arch: the pretraining method and arch.
        img_size: the detector's input size in px (position grid and rel-pos built for it;
            other sizes interpolate the absolute position embedding).
        window_size: attention window in tokens (ViTDet: 14); 0 = global everywhere.
        global_blocks: blocks with global attention (None: the last of each quarter).
        drop_path_rate: stochastic depth (paper Tables 14/15: 0.1).
        pretrained: a pretraining ``checkpoint.pth`` loaded by :meth:`init_weights`.
    """

    family_drop = ("norm.",)  # the final norm: fine-tuning re-initialises it

    def __init__(self, method: str = "mae", arch: str = "vit_base_patch16_224",
                 img_size: int = 1024, window_size: int = 14,
                 global_blocks: tuple[int, ...] | None = None, drop_path_rate: float = 0.1,
                 use_rel_pos: bool = True, pretrained: str | None = None) -> None:
        super().__init__()
        a = vit_arch(method, arch)
        self.method, self.arch, self.pretrained = method, arch, pretrained
        d, depth, p = a["embed_dim"], a["depth"], a["patch_size"]
        self.embed_dim, self.num_layers, self.patch_size = d, depth, p
        self.grid = img_size // p
        glob = set(default_global_blocks(depth) if global_blocks is None else global_blocks)
        self.global_blocks = tuple(sorted(glob))
        self.patch_embed = PatchEmbed(img_size, p, 3, d, flatten=False, output_fmt="NHWC",
                                      strict_img_size=False)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid**2, d))
        self.blocks = nn.ModuleList([
            vision_transformer_sam.Block(
                d, a["num_heads"], mlp_ratio=a["mlp_ratio"], qkv_bias=True, drop_path=r,
                norm_layer=LN, use_rel_pos=use_rel_pos,
                window_size=0 if (i in glob or not window_size) else window_size,
                input_size=(self.grid, self.grid))
            for i, r in enumerate(drop_path_rates(drop_path_rate, depth))])
        trunc_normal_(self.pos_embed, std=0.02)

    def added_keys(self) -> set[str]:
        return {k for k in self.state_dict() if k.endswith(("rel_pos_h", "rel_pos_w"))}

    def convert(self, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
        """Pretraining ViT keys -> ours: the cls token and its position go (ViTDet has none),
        the position grid is resampled to the detector's input size."""
        out, dropped = {}, []
        for k, v in state.items():
            if k in ("cls_token",) or k.startswith(self.drop):
                dropped.append(k)
            elif k == "pos_embed" and square(v.shape[1] - 1):  # else the shape check names it
                grid = square(v.shape[1] - 1)
                v = v[:, 1:]
                if grid != self.grid:
                    v = resample_abs_pos_embed(v, [self.grid, self.grid], num_prefix_tokens=0,
                                               old_size=[grid, grid])
                out[k] = v
            else:
                out[k] = v
        return out, dropped

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        x = self.patch_embed(x)  # [N, h, w, D]
        h, w = x.shape[1:3]
        pos = self.pos_embed
        if (h, w) != (self.grid, self.grid):
            pos = resample_abs_pos_embed(pos, [h, w], old_size=[self.grid] * 2,
                                         num_prefix_tokens=0)
        x = x + pos.reshape(1, h, w, -1)
        for blk in self.blocks:
            x = blk(x)
        return (x.permute(0, 3, 1, 2).contiguous(),)


class SimpleFPN(nn.Module):
    """ViTDet's simple feature pyramid: one stride-p map rescaled to strides 4..32 (+ a
    pooled top level), each through 1x1 and 3x3 convs with LayerNorm2d (ViTDet Sec. 3)."""

    def __init__(self, in_channels: int = 768, out_channels: int = 256,
                 patch_size: int = 16, num_outs: int = 5) -> None:
        super().__init__()
        self.num_outs = num_outs
        self.stages = nn.ModuleList()
        for stride in (4, 8, 16, 32):
            layers: list[nn.Module] = []
            scale, dim = patch_size / stride, in_channels
            while scale >= 2:  # 2x up: deconv (+ LN2d + GELU between two deconvs)
                if layers:
                    layers += [LayerNorm2d(dim), nn.GELU()]
                layers.append(nn.ConvTranspose2d(dim, dim // 2, 2, stride=2))
                dim, scale = dim // 2, scale / 2
            while scale <= 0.5:
                layers.append(nn.MaxPool2d(2))
                scale *= 2
            layers += [nn.Conv2d(dim, out_channels, 1, bias=False), LayerNorm2d(out_channels),
                       nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                       LayerNorm2d(out_channels)]
            self.stages.append(nn.Sequential(*layers))

    def init_weights(self) -> None:
        pass

    def forward(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x = inputs[-1]
        outs = [stage(x) for stage in self.stages]
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))  # P6 as in Mask R-CNN's FPN
        return tuple(outs)


# ------------------------------------------------------------------ dense configs
def segmentation(cfg, arch: str, pretrained: str | None) -> tuple[dict, dict | None, list[int]]:
    """(backbone, neck, channels per level) of UperNet: the plain ViT's four block outputs
    through mmseg's Feature2Pyramid (strides 4, 8, 16, 32 from the stride-p map)."""
    d = cfg.dense
    a = vit_arch(cfg.method, arch)
    dim, p = a["embed_dim"], a["patch_size"]
    bb = dict(type="PixMIMSegViT", method=cfg.method, arch=arch, img_size=d.crop_size,
              drop_path_rate=d.drop_path, use_rel_pos_bias=True, pretrained=pretrained)
    neck = dict(_delete_=True, type="Feature2Pyramid", embed_dim=dim,
                rescales=[p / s for s in (4, 8, 16, 32)],
                norm_cfg=dict(type="SyncBN", requires_grad=True))
    return bb, neck, [dim] * 4


def detection(cfg, arch: str, pretrained: str | None, channels: int) -> tuple[dict, dict]:
    """(backbone, neck) of Mask R-CNN: ViTDet's stride-p map through the simple pyramid."""
    d = cfg.dense
    a = vit_arch(cfg.method, arch)
    bb = dict(type="PixMIMViTDet", method=cfg.method, arch=arch, img_size=d.crop_size,
              window_size=d.window_size, drop_path_rate=d.drop_path, use_rel_pos=True,
              pretrained=pretrained)
    neck = dict(_delete_=True, type="PixMIMSimpleFPN", in_channels=a["embed_dim"],
                out_channels=channels, patch_size=a["patch_size"], num_outs=5)
    return bb, neck


# The classes the dense configs name (registered by pixmim.downstream.seg / det).
MODULES = {"PixMIMSegViT": SegViT, "PixMIMViTDet": ViTDet, "PixMIMSimpleFPN": SimpleFPN}
