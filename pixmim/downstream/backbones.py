"""Dense-prediction backbones built from our pretrained encoders (torch + timm only).

The OpenMMLab registries see these classes through :mod:`pixmim.downstream.seg` and
:mod:`pixmim.downstream.det`; nothing here imports OpenMMLab, so shapes and checkpoint
conversion test without it.

* :class:`SegViT`: the ViT of UperNet on ADE20K. BEiT-style blocks (timm ``beit.Block``)
  with a relative position bias per block initialised to zero (PixMIM Sec. 5, "we also turn
  on the relative position bias and initialize them with zero"), features of four blocks
  as ``[N, D, H/p, W/p]`` maps for mmseg's ``Feature2Pyramid``.
* :class:`ViTDet`: the plain ViT of Mask R-CNN, ViTDet style (Li et al. 2022, "Exploring
  Plain Vision Transformer Backbones for Object Detection"): window attention in every block
  but the evenly spaced global ones (ViT-B: windows of 14, global blocks 2, 5, 8, 11),
  decomposed relative position (timm's SAM ``Block``), one stride-p map for :class:`SimpleFPN`.
* :class:`ConvViTPyramid`: ConvMAE's hierarchical stages (1/4, 1/8, 1/16, and a pooled 1/32)
  feed the pyramid directly (UperNet's head, mmdet's FPN).

Which backbone takes a method is decided by the method's declared encoder family
(``pixmim.models.family``), never by its name: family ``vit`` feeds :class:`SegViT` and
:class:`ViTDet`, family ``convvit`` :class:`ConvViTPyramid`; each refuses the other family.

Each backbone loads a pretraining checkpoint through :func:`load_encoder`, which maps our
pretraining keys onto the backbone and asserts the exact key sets: every backbone key is
either loaded or one of the parameters the backbone adds (relative position tables, output
norms), and every checkpoint key is either loaded or a pretraining-only key (decoder, mask
token, MFF fusion, adaptive radius, the final norm, ConvMAE's fusion convs).
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm2d, PatchEmbed, resample_abs_pos_embed, trunc_normal_
from timm.models import beit, vision_transformer_sam

from pixmim.models import archs, family

_LN = partial(nn.LayerNorm, eps=1e-6)
# Keys of a pretraining state dict that no downstream backbone takes.
_PRETRAIN_ONLY = ("decoder_", "mask_token", "fusion_", "radius_logit", "norm.",
                  "stage1_output_decode.", "stage2_output_decode.")


def default_out_indices(depth: int) -> tuple[int, ...]:
    """Four evenly spaced blocks ending at the last: ViT-B (12) -> (3, 5, 7, 11) (mmseg MAE)."""
    return tuple(sorted({max(0, round(depth * f) - 1) for f in (1 / 3, 1 / 2, 2 / 3)}
                        | {depth - 1})) if depth >= 4 else tuple(range(depth))


def default_global_blocks(depth: int) -> tuple[int, ...]:
    """ViTDet's global-attention blocks: the last of each quarter (ViT-B: 2, 5, 8, 11)."""
    q = max(2, depth // 4)
    return tuple(range(q - 1, depth, q))


def _square(tokens: int) -> int:
    """The side of a square grid of ``tokens`` tokens, 0 if there is none."""
    side = math.isqrt(max(tokens, 0))
    return side if side * side == tokens and side else 0


def _vit_arch(method: str, arch: str) -> dict[str, Any]:
    if (fam := family(method)) != "vit":
        raise ValueError(f"method {method} has no plain ViT (encoder family {fam}, not vit); "
                         f"arch {arch!r} needs "
                         + ("ConvViTPyramid" if fam == "convvit" else "a backbone of its family"))
    a = dict(archs(method)[arch])
    a.setdefault("patch_size", 16)
    a.setdefault("img_size", 224)
    a.setdefault("mlp_ratio", 4.0)
    return a


def _drop_path_rates(rate: float, depth: int) -> list[float]:
    return torch.linspace(0, rate, depth, device="cpu").tolist()  # timm's linear rule


def vit_dims(method: str, arch: str) -> tuple[int, int]:
    """``(embed_dim, patch_size)`` of a ViT arch, read from the registry (nothing built)."""
    a = _vit_arch(method, arch)
    return a["embed_dim"], a["patch_size"]


def pyramid_channels(method: str, arch: str) -> tuple[int, ...]:
    """Channels of :class:`ConvViTPyramid`'s four levels (the 1/32 level repeats 1/16) for a
    convvit-family ``method``/``arch``."""
    from pixmim.models.export import convvit_arch

    dims = tuple(convvit_arch(method, arch)["embed_dims"])
    return (*dims, dims[2])


class _DenseBackbone(nn.Module):
    """What the dense backbones share: loading the pretraining checkpoint named by
    ``pretrained`` in :meth:`init_weights` (mmengine calls it), and layer ids for
    layer-wise lr decay (BEiT, Bao et al. 2021): embeddings 0, block i i + 1; anything
    else (norms, added layers) num_layers + 1."""

    method: str
    arch: str
    pretrained: str | None
    num_layers: int

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


class SegViT(_DenseBackbone):
    """ViT with a zero-initialised relative position bias in every block, for UperNet.

    Args:
        method, arch: the pretraining method and arch (``pixmim.models.ARCHS``).
        img_size: training crop in px; the rel-pos tables and position grid are built for it
            (test with mmseg's slide mode at the same crop).
        out_indices: blocks whose outputs feed the pyramid (None: four evenly spaced).
        drop_path_rate: stochastic depth (paper Tables 12/13: 0.1).
        use_rel_pos_bias: BEiT-style relative position bias (paper: on, zero-initialised).
        pretrained: a pretraining ``checkpoint.pth`` loaded by :meth:`init_weights`.
    """

    def __init__(self, method: str = "mae", arch: str = "vit_base_patch16_224",
                 img_size: int = 512, out_indices: tuple[int, ...] | None = None,
                 drop_path_rate: float = 0.1, use_rel_pos_bias: bool = True,
                 pretrained: str | None = None) -> None:
        super().__init__()
        a = _vit_arch(method, arch)
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
                       drop_path=r, norm_layer=_LN, window_size=window)
            for r in _drop_path_rates(drop_path_rate, depth)])
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
            if k.startswith(_PRETRAIN_ONLY):
                dropped.append(k)
            elif k.endswith("attn.qkv.bias"):
                stem = k.removesuffix("qkv.bias")
                out[stem + "q_bias"], out[stem + "v_bias"] = v[:d], v[2 * d:]
            elif (k == "pos_embed" and v.shape[1] != self.pos_embed.shape[1]
                  and _square(v.shape[1] - 1)):  # else the shape check names it
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


class ViTDet(_DenseBackbone):
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

    def __init__(self, method: str = "mae", arch: str = "vit_base_patch16_224",
                 img_size: int = 1024, window_size: int = 14,
                 global_blocks: tuple[int, ...] | None = None, drop_path_rate: float = 0.1,
                 use_rel_pos: bool = True, pretrained: str | None = None) -> None:
        super().__init__()
        a = _vit_arch(method, arch)
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
                norm_layer=_LN, use_rel_pos=use_rel_pos,
                window_size=0 if (i in glob or not window_size) else window_size,
                input_size=(self.grid, self.grid))
            for i, r in enumerate(_drop_path_rates(drop_path_rate, depth))])
        trunc_normal_(self.pos_embed, std=0.02)

    def added_keys(self) -> set[str]:
        return {k for k in self.state_dict() if k.endswith(("rel_pos_h", "rel_pos_w"))}

    def convert(self, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
        """Pretraining ViT keys -> ours: the cls token and its position go (ViTDet has none),
        the position grid is resampled to the detector's input size."""
        out, dropped = {}, []
        for k, v in state.items():
            if k in ("cls_token",) or k.startswith(_PRETRAIN_ONLY):
                dropped.append(k)
            elif k == "pos_embed" and _square(v.shape[1] - 1):  # else the shape check names it
                grid = _square(v.shape[1] - 1)
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


class ConvViTPyramid(_DenseBackbone):
    """ConvMAE's encoder unmasked, its stages as a pyramid: 1/4, 1/8, 1/16 and a max-pooled
    1/32 map, each with its own LayerNorm2d (the fusion convs and final norm are dropped,
    as in the released fine-tuning model).

    Args:
        method, arch: a pretraining method of encoder family ``convvit`` and its arch
            (another family is a ValueError naming the method and its family).
        drop_path_rate: stochastic depth.
        pretrained: a pretraining ``checkpoint.pth`` loaded by :meth:`init_weights`.
    """

    def __init__(self, method: str, arch: str, drop_path_rate: float = 0.1,
                 pretrained: str | None = None) -> None:
        super().__init__()
        from pixmim.models.convmae import ConvEncoderMixin
        from pixmim.models.export import convvit_arch

        if (fam := family(method)) != "convvit":
            raise ValueError(f"ConvViTPyramid takes convvit-family checkpoints, not {method} "
                             f"(family {fam})")
        kw = convvit_arch(method, arch)
        self.method, self.arch, self.pretrained = method, arch, pretrained
        enc = nn.Module()
        ConvEncoderMixin.build_encoder(enc, img_size=kw.get("img_size", 224), in_chans=3,
                                       patch_sizes=kw.get("patch_sizes", (4, 2, 2)),
                                       embed_dims=kw["embed_dims"], depths=kw["depths"],
                                       num_heads=kw["num_heads"],
                                       mlp_ratio=kw.get("mlp_ratio", 4.0),
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

    def convert(self, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
        out = {k: v for k, v in state.items() if not k.startswith(_PRETRAIN_ONLY)}
        return out, sorted(set(state) - set(out))

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
