"""The toy SimMIM-style method on the toy hierarchical family (declared in
``tests.plugins.toy_simmim``).

Masked 8-px patches have their four stage-1 tokens replaced by a learned mask token; the
whole encoder runs on every token and a linear layer predicts each 8-px patch's pixels
(Xie et al. 2022, SimMIM); the loss is MIMBase's, on the masked patches.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from pixmim.models.base import MIMBase
from tests.plugins.toy_family.nets import HierEncoder


class ToySimMIM(MIMBase, HierEncoder):
    probe_pool = "avg"

    def __init__(self, *, img_size: int = 64, embed_dims: tuple[int, int] = (32, 64),
                 depths: tuple[int, int] = (1, 2), num_heads: int = 4, mlp_ratio: float = 4.0,
                 **mim: Any) -> None:
        super().__init__(patch_size=8, **mim)
        self.build_encoder(img_size=img_size, embed_dims=embed_dims, depths=depths,
                           num_heads=num_heads, mlp_ratio=mlp_ratio)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dims[0]))
        nn.init.normal_(self.mask_token, std=0.02)
        self.decoder_pred = nn.Linear(embed_dims[1], 8 * 8 * 3)

    @property
    def num_patches(self) -> int:
        return self.grid**2

    def forward(self, imgs: torch.Tensor, mask_ratio: float | None = None,
                noise: torch.Tensor | None = None):
        """imgs: [N, 3, H, W] -> (loss, pred [N, L, 192], mask [N, L], 1 = masked)."""
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        n, g = imgs.shape[0], self.grid
        ids = torch.zeros(n, g * g, 1, device=imgs.device)
        _, mask, _ = self.random_masking(ids, ratio, noise)
        masked = F.interpolate(mask.view(n, 1, g, g), scale_factor=2, mode="nearest")[:, 0]
        tokens = self.stages(imgs, self.mask_token, masked)[1].flatten(2).transpose(1, 2)
        pred = self.decoder_pred(self.norm(tokens))
        return self.forward_loss(self.forward_target(imgs), pred, mask), pred, mask

    def forward_probe_features(self, imgs: torch.Tensor) -> torch.Tensor:
        """Average of the final tokens [N, D]."""
        return self.forward_features(imgs).mean(dim=1)
