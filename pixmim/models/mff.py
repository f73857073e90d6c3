"""MFF: multi-level feature fusion for MAE (Liu et al., ICCV 2023).

The outputs of several encoder blocks ([0, 2, 4, 6, 8, 11] for ViT-B) are fused before the
decoder: each but the last goes through its own Linear(D, D), the fusion weights are a
softmax over learnable scalars (initialised equal), and the weighted sum passes the final
LayerNorm (facts: open-mmlab/mmpretrain ``mmpretrain/models/selfsup/mff.py``). Fusion is a
pretraining device only: ``forward_features`` (and the exported encoder) is a plain ViT.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from pixmim.models.mae import MAE

# Declared in pixmim.methods (MFF fuses blocks [0, 2, 4, 6, 8, 11] of ViT-B there).


class MFF(MAE):
    """MAE whose decoder reads a learned mixture of several encoder levels."""

    # The fusion's names in released checkpoints, by format (read by the family's converter,
    # pixmim.families.vit.formats; a rule is (ours, theirs[, our shape, their shape])):
    # mmpretrain 1.2.0's MFFViT holds the projections as proj_layers.i and the weights as
    # proj_weights [k, 1, 1, 1].
    checkpoint_keys = {"openmmlab": (("fusion_proj.", "backbone.proj_layers."),
                                     ("fusion_weight", "backbone.proj_weights", (-1,),
                                      (-1, 1, 1, 1)))}

    def __init__(self, *, fusion_layers: tuple[int, ...] = (0, 2, 4, 6, 8, 11),
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        depth = len(self.blocks)
        if not fusion_layers or max(fusion_layers) >= depth or list(fusion_layers) != sorted(
                set(fusion_layers)) or fusion_layers[-1] != depth - 1:
            raise ValueError(f"fusion_layers {fusion_layers} must be increasing block indices "
                             f"ending with the last block ({depth - 1})")
        self.fusion_layers = tuple(fusion_layers)
        d = self.embed_dim
        self.fusion_proj = nn.ModuleList([nn.Linear(d, d) for _ in fusion_layers[:-1]])
        self.fusion_weight = nn.Parameter(torch.zeros(len(fusion_layers)))  # softmax -> equal
        for m in self.fusion_proj:
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> set[str]:
        return super().no_weight_decay() | {"fusion_weight"}

    def run_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """Blocks, then softmax-weighted fusion of the chosen levels, then the final norm."""
        levels = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i in self.fusion_layers:
                levels.append(x)
        projected = [proj(h) for proj, h in zip(self.fusion_proj, levels[:-1], strict=True)]
        projected.append(levels[-1])
        weights = torch.softmax(self.fusion_weight, dim=0)
        fused = sum(w * h for w, h in zip(weights, projected, strict=True))
        return self.norm(fused)
