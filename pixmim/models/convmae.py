"""ConvMAE: masked convolution meets masked autoencoders (Gao et al., NeurIPS 2022).

A three-stage hybrid encoder (ConvViT): two stages of convolution blocks at 1/4 and 1/8
resolution, then transformer blocks at 1/16 on the visible tokens only. One mask is drawn
on the 1/16 grid and upsampled; the conv stages zero masked positions right before their
depthwise convolutions ("masked convolution"), so nothing leaks from masked into visible
regions. Stage-1/2 outputs are projected to the 1/16 grid and added before the final norm
(multi-scale fusion). Facts: Alpha-VL/ConvMAE ``models_convmae.py``, ``vision_transformer.py``
and ``models_convvit.py``; module names follow those files (same state-dict keys and shapes).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from functools import partial
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm2d, Mlp, trunc_normal_
from timm.layers.attention import Attention
from timm.models.vision_transformer import Block

from pixmim.models.base import MIMBase
from pixmim.models.mae import sincos_pos_embed

Ints = tuple[int, ...]
ARCHS = {
    # CPU size for the embedded dataset and tests (not a paper model): 1/16 grid of 4x4.
    "convvit_cpu_64": dict(img_size=64, embed_dims=(32, 48, 96), depths=(1, 1, 2), num_heads=4,
                           decoder_embed_dim=64, decoder_depth=2, decoder_num_heads=2),
    # ConvMAE-B: Alpha-VL/ConvMAE convmae_convvit_base_patch16_dec512d8b (88M encoder).
    "convvit_base_224": dict(img_size=224, patch_sizes=(4, 2, 2), embed_dims=(256, 384, 768),
                             depths=(2, 2, 11), num_heads=12, decoder_embed_dim=512,
                             decoder_depth=8, decoder_num_heads=16),
}
# The registry's declaration: a hybrid conv + ViT encoder (family convvit).
METHOD = dict(name="convmae", model="ConvMAE", family="convvit", archs=ARCHS)


def convvit_kwargs(arch: str) -> dict[str, Any]:
    """Encoder-only kwargs of ``ARCHS[arch]`` for :class:`ConvViT` (decoder keys removed)."""
    return {k: v for k, v in ARCHS[arch].items() if not k.startswith("decoder_")}


def _vit_blocks(dim: int, heads: int, mlp_ratio: float, dprs: list[float]) -> nn.ModuleList:
    """timm Blocks, qkv bias, LayerNorm eps 1e-6 (models_convmae.py), one per drop-path rate."""
    ln = partial(nn.LayerNorm, eps=1e-6)
    return nn.ModuleList([Block(dim, heads, mlp_ratio, qkv_bias=True, drop_path=p, norm_layer=ln)
                          for p in dprs])


def _gather(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """x: [N, L, D], ids: [N, L'] -> [N, L', D]."""
    return torch.gather(x, 1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


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
        self.blocks3 = _vit_blocks(d, num_heads, mlp_ratio, dpr[c2:])
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
            x, skips = _gather(x, ids_keep), [_gather(s, ids_keep) for s in skips]
        for blk in self.blocks3:
            x = blk(x)
        return self.norm(x + sum(skips)) if self.multiscale_fusion else x


class ConvMAE(MIMBase, ConvEncoderMixin):
    """ConvMAE pretraining model: ConvViT encoder + MAE decoder at the 1/16 grid.

    Defaults are ConvMAE-B (``ARCHS["convvit_base_224"]``); ``**mim`` goes to :class:`MIMBase`.
    """

    probe_pool = "avg"  # no cls token: the linear probe pools all tokens (reference-facts)

    def __init__(self, *, img_size: int = 224, in_chans: int = 3, patch_sizes: Ints = (4, 2, 2),
                 embed_dims: Ints = (256, 384, 768), depths: Ints = (2, 2, 11),
                 num_heads: int = 12, mlp_ratio: float = 4.0, decoder_embed_dim: int = 512,
                 decoder_depth: int = 8, decoder_num_heads: int = 16, fused_attn: bool = True,
                 **mim: Any) -> None:
        super().__init__(patch_size=math.prod(patch_sizes), in_chans=in_chans, **mim)
        self.build_encoder(img_size=img_size, in_chans=in_chans, patch_sizes=patch_sizes,
                           embed_dims=embed_dims, depths=depths, num_heads=num_heads,
                           mlp_ratio=mlp_ratio)
        dd = decoder_embed_dim
        self.decoder_embed = nn.Linear(self.embed_dim, dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.decoder_pos_embed = nn.Parameter(sincos_pos_embed(self.grid, dd, cls_token=False),
                                              requires_grad=False)
        self.decoder_blocks = _vit_blocks(dd, decoder_num_heads, mlp_ratio, [0.0] * decoder_depth)
        self.decoder_norm = nn.LayerNorm(dd, eps=1e-6)
        self.decoder_pred = nn.Linear(dd, self.patch_size**2 * in_chans)
        self.set_fused_attn(fused_attn)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """As models_convmae.py: xavier linears (and the stage-3 embed conv as a linear),
        LayerNorms 1/0, mask token N(0, .02); the other convs keep PyTorch's default."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):  # LayerNorm2d included
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patch_embed3.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        trunc_normal_(self.mask_token, std=0.02)

    def forward_encoder(self, imgs: torch.Tensor, mask_ratio: float,
                        noise: torch.Tensor | None = None):
        """imgs: [N, 3, H, W] -> latent [N, L_keep, D], mask [N, L], ids_restore [N, L]."""
        n, g = imgs.shape[0], self.grid
        # mask the token indices themselves: the visible "tokens" are ids_keep
        ids = torch.arange(g * g, device=imgs.device).expand(n, -1).unsqueeze(-1)
        ids_keep, mask, ids_restore = self.random_masking(ids, mask_ratio, noise)
        visible = (1 - mask).view(n, 1, g, g).to(imgs.dtype)
        return self.encode(imgs, visible, ids_keep.squeeze(-1)), mask, ids_restore

    def forward_decoder(self, x: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """x: [N, L_keep, D] -> pred [N, L, p*p*3] (no cls token)."""
        x = self.decoder_embed(x)
        n, length = ids_restore.shape
        x = torch.cat([x, self.mask_token.expand(n, length - x.shape[1], -1)], dim=1)
        x = _gather(x, ids_restore) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))

    def forward(self, imgs: torch.Tensor, mask_ratio: float | None = None,
                noise: torch.Tensor | None = None):
        """imgs: [N, 3, H, W] (noise: [N, L]) -> (loss, pred [N, L, p*p*3], mask [N, L])."""
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        latent, mask, ids_restore = self.forward_encoder(imgs, ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)
        return self.forward_loss(self.forward_target(imgs), pred, mask), pred, mask

    def forward_features(self, imgs: torch.Tensor) -> torch.Tensor:
        """Unmasked encoder pass: imgs [N, 3, H, W] -> tokens [N, L, D] after the norm."""
        return self.encode(imgs)

    def forward_probe_features(self, imgs: torch.Tensor) -> torch.Tensor:
        """Linear-probe features: global average of the tokens [N, D]."""
        return self.forward_features(imgs).mean(dim=1)


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


# Pretraining-only entries of a ConvMAE state dict; the fusion entries also go when the
# ConvViT has no fusion (models_convvit.py drops them and the final norm).
_PRETRAIN_ONLY = ("mask_token", "decoder_", "radius_logit")
_FUSION = ("stage1_output_decode.", "stage2_output_decode.", "norm.")


def convmae_to_convvit(state_dict: dict, model: ConvViT) -> dict:
    """Map a ConvMAE pretraining state dict (or ``{"model": ...}`` checkpoint) to ConvViT keys.

    Drops the decoder, the mask token and the adaptive radius (and the fusion convs and the
    final norm when ``model.multiscale_fusion`` is off); strips DDP's ``module.`` prefix.
    Everything else is kept, so unknown keys still surface as unexpected when loading.
    """
    state_dict = state_dict.get("model", state_dict)
    drop = _PRETRAIN_ONLY + (() if model.multiscale_fusion else _FUSION)
    stripped = ((k.removeprefix("module."), v) for k, v in state_dict.items())
    return {k: v for k, v in stripped if not k.startswith(drop)}


def load_convmae_encoder(model: ConvViT, state_dict: dict) -> None:
    """Load a ConvMAE checkpoint into ``model`` (strict=False, then checked).

    Raises:
        RuntimeError: naming every key that differs: missing beyond the new ``head.*`` /
            ``fc_norm.*``, unexpected, or a head / fc_norm the checkpoint provided.
    """
    result = model.load_state_dict(convmae_to_convvit(state_dict, model), strict=False)
    expected = {k for k in model.state_dict() if k.startswith(("head.", "fc_norm."))}
    missing, unexpected = set(result.missing_keys) - expected, set(result.unexpected_keys)
    not_missing = expected - set(result.missing_keys)  # the checkpoint set the new head
    if missing or unexpected or not_missing:
        raise RuntimeError(f"ConvMAE -> ConvViT load: missing {sorted(missing)}, unexpected "
                       f"{sorted(unexpected)}, unexpectedly provided {sorted(not_missing)}")
