"""A straightforward MAE, the comparison point of ``pretrain_step.py``.

Written the obvious way from timm's default blocks (same sizes and math as
``pixmim.models.mae.MAE``), trained with a plain per-tensor AdamW loop and no compilation:
what a first implementation looks like before any performance work.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import PatchEmbed, build_sincos2d_pos_embed
from timm.models.vision_transformer import Block


class PlainMAE(nn.Module):
    def __init__(self, img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12,
                 decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16, mask_ratio=0.75):
        super().__init__()
        self.p, self.mask_ratio = patch_size, mask_ratio
        self.patch_embed = PatchEmbed(img_size, patch_size, 3, embed_dim)
        n = self.patch_embed.num_patches
        g = self.patch_embed.grid_size[0]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        pe = build_sincos2d_pos_embed([g, g], embed_dim)
        self.register_buffer("pos_embed", torch.cat([torch.zeros(1, embed_dim), pe])[None])
        self.blocks = nn.ModuleList(
            [Block(embed_dim, num_heads, 4.0, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim)
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        dpe = build_sincos2d_pos_embed([g, g], decoder_embed_dim)
        self.register_buffer("decoder_pos_embed",
                             torch.cat([torch.zeros(1, decoder_embed_dim), dpe])[None])
        self.decoder_blocks = nn.ModuleList(
            [Block(decoder_embed_dim, decoder_num_heads, 4.0, qkv_bias=True)
             for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size**2 * 3)
        self.num_patches = n

    def patchify(self, imgs):
        n, c, h, w = imgs.shape
        x = imgs.reshape(n, c, h // self.p, self.p, w // self.p, self.p)
        x = x.permute(0, 2, 4, 3, 5, 1)
        return x.reshape(n, -1, self.p * self.p * c)

    def forward(self, imgs):
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:]
        n, length, d = x.shape
        keep = int(length * (1 - self.mask_ratio))
        noise = torch.rand(n, length, device=x.device)
        shuffle = noise.argsort(1)
        restore = shuffle.argsort(1)
        x = x.gather(1, shuffle[:, :keep, None].repeat(1, 1, d))
        mask = torch.ones(n, length, device=x.device)
        mask[:, :keep] = 0
        mask = mask.gather(1, restore)
        x = torch.cat([(self.cls_token + self.pos_embed[:, :1]).repeat(n, 1, 1), x], 1)
        for blk in self.blocks:
            x = blk(x)
        x = self.decoder_embed(self.norm(x))
        tokens = torch.cat([x[:, 1:], self.mask_token.repeat(n, length - keep, 1)], 1)
        tokens = tokens.gather(1, restore[:, :, None].repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1], tokens], 1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:]
        target = self.patchify(imgs)
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
        loss = ((pred - target) ** 2).mean(-1)
        return (loss * mask).sum() / mask.sum()


def plain_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """AdamW looping over parameter tensors one at a time (no foreach, no fused kernel)."""
    return torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95),
                             weight_decay=0.05, foreach=False, fused=False)
