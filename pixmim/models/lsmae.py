"""LSMAE: MAE at long sequence length (Hu et al., 2022, "Exploring long-sequence MIM").

Input 448 px (784 patches of 16 px for ViT-B), the mask drawn on a coarser grid of 32-px
units (2x2 patch blocks, 14x14 units) so that the visible area stays comparable, a
384-wide decoder with 12 heads and 8 blocks; the loss is still on normalised 16-px patches
(facts: facebookresearch/long_seq_mae).
"""

from __future__ import annotations

from typing import Any

import torch

from pixmim.models.mae import MAE

# Declared in pixmim.methods (448 px, 32-px mask units, a 384 x 12 x 8 decoder there).


class LSMAE(MAE):
    """MAE with block-wise masking over ``mask_unit`` x ``mask_unit`` patch blocks."""

    def __init__(self, *, mask_unit: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        grid = self.patch_embed.grid_size[0]
        if grid % mask_unit:
            raise ValueError(f"mask_unit {mask_unit} must divide the patch grid {grid}")
        self.mask_unit = mask_unit
        self.unit_grid = grid // mask_unit

    @property
    def num_mask_units(self) -> int:
        return self.unit_grid**2

    def mask_tokens(self, x: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None):
        """Draw the mask on the unit grid and expand it to patches (whole blocks kept)."""
        n, _, d = x.shape
        u, g = self.mask_unit, self.unit_grid
        if noise is None:
            noise = torch.rand(n, g * g, device=x.device)
        # one noise value per unit, shared by its u x u patches: the sort keeps the patches
        # of a unit together, so int(L * (1 - ratio)) kept patches are whole units when
        # that count is a multiple of u * u (196 = 49 units of 4 at 448 px, ratio 0.75)
        patch_noise = noise.to(x.device).view(n, g, 1, g, 1).expand(n, g, u, g, u)
        return self.random_masking(x, mask_ratio, patch_noise.reshape(n, -1))
