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
from typing import Any

import torch
import torch.nn as nn
from timm.layers import trunc_normal_

from pixmim.families.convvit.nets import ConvEncoderMixin, gather, vit_blocks
from pixmim.models.base import MIMBase
from pixmim.models.mae import sincos_pos_embed

Ints = tuple[int, ...]
# Declared in pixmim.methods (ConvMAE-B and the CPU arch there).


class ConvMAE(MIMBase, ConvEncoderMixin):
    """ConvMAE pretraining model: ConvViT encoder + MAE decoder at the 1/16 grid.

    Defaults are ConvMAE-B (``pixmim.methods.CONVMAE_ARCHS["convvit_base_224"]``); ``**mim``
    goes to :class:`MIMBase`.
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
        self.decoder_blocks = vit_blocks(dd, decoder_num_heads, mlp_ratio, [0.0] * decoder_depth)
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
        x = gather(x, ids_restore) + self.decoder_pos_embed
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
