"""Masked Autoencoder (He et al., CVPR 2022) on timm layers, with PixMIM's target knob.

One class: ``forward_encoder`` (patchify, mask, encode the visible patches),
``forward_decoder`` (re-insert mask tokens, decode to pixels), ``forward_target``
(raw pixels or the PixMIM low-pass target) and ``forward_loss`` (per-patch normalised
MSE on the masked patches). Notation: N batch, L patches, D width, p patch size.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import PatchEmbed, build_sincos2d_pos_embed, trunc_normal_
from timm.models.vision_transformer import Block

from pixmim.models.targets import lowpass

# ImageNet statistics used to normalise inputs (torchvision / MAE convention).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def sincos_pos_embed(grid: int, dim: int, cls_token: bool = True) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding: [1, (1 +) grid*grid, dim] (MAE Sec. 3)."""
    pe = build_sincos2d_pos_embed([grid, grid], dim=dim)  # [grid*grid, dim]
    if cls_token:
        pe = torch.cat([torch.zeros(1, dim), pe], dim=0)
    return pe.unsqueeze(0)


class MAE(nn.Module):
    """Masked autoencoder with a ViT encoder and a light ViT decoder.

    ``target`` selects the reconstruction target: ``pixel`` (MAE) or ``lowpass``
    (PixMIM: low-pass filtered pixels, computed without grad from the same augmented,
    masked image; per-patch normalisation is applied after filtering).
    """

    probe_pool = "cls"  # linear probe reads the cls token after the final norm (MAE Sec. A.2)

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
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = True,
        target: str = "pixel",
        radius: float = 40.0,
        lowpass_mode: str = "official",
        fused_attn: bool = True,
    ) -> None:
        super().__init__()
        if target not in ("pixel", "lowpass"):
            raise ValueError(f"target must be 'pixel' or 'lowpass', got {target!r}")
        self.patch_size, self.in_chans = patch_size, in_chans
        self.mask_ratio, self.norm_pix_loss = mask_ratio, norm_pix_loss
        self.target, self.radius, self.lowpass_mode = target, radius, lowpass_mode
        self.embed_dim = embed_dim

        # encoder
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        grid = self.patch_embed.grid_size[0]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(sincos_pos_embed(grid, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList(
            [Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

        # decoder
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(
            sincos_pos_embed(grid, decoder_embed_dim), requires_grad=False
        )
        self.decoder_blocks = nn.ModuleList(
            [
                Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True)
                for _ in range(decoder_depth)
            ]
        )
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size**2 * in_chans)

        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)
        self.set_fused_attn(fused_attn)
        self.initialize_weights()

    # ----------------------------------------------------------------- set-up
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

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Tokens and position embeddings take no weight decay (norms/biases: by ndim)."""
        return {"cls_token", "mask_token", "pos_embed", "decoder_pos_embed"}

    # ------------------------------------------------------------ patch utils
    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """imgs: [N, C, H, W] -> [N, L, p*p*C] (row-major patches, pixel order (p, p, C))."""
        n, c, h, w = imgs.shape
        p = self.patch_size
        x = imgs.reshape(n, c, h // p, p, w // p, p)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(n, (h // p) * (w // p), p * p * c)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, L, p*p*C] -> [N, C, H, W] (square images)."""
        p, c = self.patch_size, self.in_chans
        g = int(x.shape[1] ** 0.5)
        x = x.reshape(x.shape[0], g, g, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], c, g * p, g * p)

    @staticmethod
    def random_masking(x: torch.Tensor, mask_ratio: float):
        """Per-sample random masking by sorting uniform noise.

        Args:
            x: [N, L, D] patch tokens.

        Returns:
            x_visible: [N, L_keep, D] with L_keep = int(L * (1 - mask_ratio));
            mask: [N, L], 1 = removed, in the original patch order;
            ids_restore: [N, L], the inverse permutation that un-shuffles.
        """
        n, length, d = x.shape
        len_keep = int(length * (1 - mask_ratio))
        # argsort trick: sorting i.i.d. noise gives a uniform random permutation per
        # sample; its first len_keep entries are kept, and argsort of the permutation
        # is its inverse, used to put decoder tokens back in place.
        noise = torch.rand(n, length, device=x.device)
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        x_visible = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))
        mask = torch.ones(n, length, device=x.device)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        return x_visible, mask, ids_restore

    # ---------------------------------------------------------------- forward
    def forward_encoder(self, imgs: torch.Tensor, mask_ratio: float):
        """imgs: [N, 3, H, W] -> latent [N, 1 + L_keep, D], mask [N, L], ids_restore [N, L]."""
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:]
        x, mask, ids_restore = self.random_masking(x, mask_ratio)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x), mask, ids_restore

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

    @torch.no_grad()
    def forward_target(self, imgs: torch.Tensor) -> torch.Tensor:
        """imgs: [N, 3, H, W] normalised -> target [N, L, p*p*3] (before norm_pix)."""
        if self.target == "lowpass":
            # PixMIM: un-normalise to [0, 1], filter, re-normalise (mmselfsup LowFreqTargetGenerator)
            raw = imgs.float() * self.std + self.mean
            imgs = (lowpass(raw, self.radius, self.lowpass_mode) - self.mean) / self.std
        return self.patchify(imgs.float())

    def forward_loss(self, target: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor):
        """Per-patch normalised MSE averaged over the masked patches only.

        Args:
            target, pred: [N, L, p*p*3]; mask: [N, L], 1 = removed.
        """
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        loss = ((pred.float() - target) ** 2).mean(dim=-1)
        return (loss * mask).sum() / mask.sum()

    def forward(self, imgs: torch.Tensor, mask_ratio: float | None = None):
        """imgs: [N, 3, H, W] -> (loss, pred [N, L, p*p*3], mask [N, L])."""
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        latent, mask, ids_restore = self.forward_encoder(imgs, ratio)
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
