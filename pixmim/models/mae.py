"""Masked Autoencoder (He et al., CVPR 2022) on timm layers.

One class: ``forward_encoder`` (patchify, mask, encode the visible patches),
``forward_decoder`` (re-insert mask tokens, decode to pixels); the target (pixel or a
PixMIM filtered target), the loss and the masking come from :class:`MIMBase`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from timm.layers import PatchEmbed, build_sincos2d_pos_embed, trunc_normal_
from timm.models.vision_transformer import Block

from pixmim.models.base import MIMBase

# Declared in pixmim.methods (its arch table, family and pretraining-only parameters).


def sincos_pos_embed(grid: int, dim: int, cls_token: bool = True) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding: [1, (1 +) grid*grid, dim] (MAE Sec. 3), in
    MAE's channel order so that official checkpoints load unpermuted (facebookresearch/mae
    ``util/pos_embed.py``): the first half encodes the column (x), the second the row (y),
    each half sin then cos of ``pos * 10000^(-i / (dim / 4))``. timm builds the same values
    as [sin y | sin x | cos y | cos x]; the view below reorders the four blocks."""
    pe = build_sincos2d_pos_embed([grid, grid], dim=dim)  # [grid*grid, dim]
    # [L, (sin, cos), (y, x), dim/4] -> [L, (x, y), (sin, cos), dim/4]
    pe = pe.view(grid * grid, 2, 2, dim // 4).transpose(1, 2).flip(1).reshape(grid * grid, dim)
    if cls_token:
        pe = torch.cat([torch.zeros(1, dim), pe], dim=0)
    return pe.unsqueeze(0)


def vit_blocks(dim: int, depth: int, heads: int, mlp_ratio: float) -> nn.ModuleList:
    return nn.ModuleList([Block(dim, heads, mlp_ratio, qkv_bias=True) for _ in range(depth)])


class MAE(MIMBase):
    """Masked autoencoder with a ViT encoder and a light ViT decoder."""

    def __init__(
        self,
        *,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        mlp_ratio: float = 4.0,
        fused_attn: bool = True,
        **mim: Any,
    ) -> None:
        super().__init__(patch_size=patch_size, in_chans=in_chans, **mim)
        self.embed_dim = embed_dim
        # encoder
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        grid = self.patch_embed.grid_size[0]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(sincos_pos_embed(grid, embed_dim), requires_grad=False)
        self.blocks = vit_blocks(embed_dim, depth, num_heads, mlp_ratio)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        # decoder
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(
            sincos_pos_embed(grid, decoder_embed_dim), requires_grad=False
        )
        self.decoder_blocks = vit_blocks(decoder_embed_dim, decoder_depth, decoder_num_heads,
                                         mlp_ratio)
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size**2 * in_chans)
        self.set_fused_attn(fused_attn)
        self.initialize_weights()

    @property
    def num_patches(self) -> int:
        return self.patch_embed.num_patches

    def initialize_weights(self) -> None:
        """Xavier-uniform linears (patch projection as a linear), N(0, .02) tokens."""
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        trunc_normal_(self.cls_token, std=0.02)
        trunc_normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def set_fused_attn(self, enable: bool = True) -> None:
        """Use torch SDPA (fused) or the explicit softmax(QK^T)V path in every block."""
        for blk in [*self.blocks, *self.decoder_blocks]:
            blk.attn.fused_attn = enable

    # ---------------------------------------------------------------- forward
    def mask_tokens(self, x: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None):
        """Hook for the masking scheme: x [N, L, D] -> (x_visible, mask, ids_restore)."""
        return self.random_masking(x, mask_ratio, noise)

    def run_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder blocks + final norm: [N, 1 + L', D] -> [N, 1 + L', D]."""
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_encoder(self, imgs: torch.Tensor, mask_ratio: float,
                        noise: torch.Tensor | None = None):
        """imgs: [N, 3, H, W] -> latent [N, 1 + L_keep, D], mask [N, L], ids_restore [N, L]."""
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:]
        x, mask, ids_restore = self.mask_tokens(x, mask_ratio, noise)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        return self.run_blocks(torch.cat([cls, x], dim=1)), mask, ids_restore

    def forward_decoder(self, x: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """x: [N, 1 + L_keep, D] -> pred [N, L, p*p*3]."""
        x = self.decoder_embed(x)
        n, length = ids_restore.shape
        mask_tokens = self.mask_token.expand(n, length + 1 - x.shape[1], -1)
        x_ = torch.cat([x[:, 1:], mask_tokens], dim=1)
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))
        x = torch.cat([x[:, :1], x_], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def forward(self, imgs: torch.Tensor, mask_ratio: float | None = None,
                noise: torch.Tensor | None = None):
        """imgs: [N, 3, H, W] (noise: [N, num_mask_units])
        -> (loss, pred [N, L, p*p*3], mask [N, L])."""
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        latent, mask, ids_restore = self.forward_encoder(imgs, ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)
        loss = self.forward_loss(self.forward_target(imgs), pred, mask)
        return loss, pred, mask

    # ------------------------------------------------------------- downstream
    def forward_features(self, imgs: torch.Tensor) -> torch.Tensor:
        """Unmasked encoder pass: imgs [N, 3, H, W] -> tokens [N, 1 + L, D] after the norm."""
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_probe_features(self, imgs: torch.Tensor) -> torch.Tensor:
        """Features for the linear probe: [N, D] (cls token or mean of patch tokens)."""
        x = self.forward_features(imgs)
        return x[:, 0] if self.probe_pool == "cls" else x[:, 1:].mean(dim=1)
