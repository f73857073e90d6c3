"""ToyMAE: MAE whose loss also counts the visible patches, at a tenth of the weight of the
masked ones (a real, if minor, change of objective). Declared in ``tests.plugins.toy_mae``."""

from __future__ import annotations

import torch

from pixmim.models.mae import MAE

VISIBLE_WEIGHT = 0.1


class ToyMAE(MAE):
    """MAE with a down-weighted reconstruction term on the visible patches."""

    def forward_loss(self, target: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor):
        masked = super().forward_loss(target, pred, mask)
        visible = super().forward_loss(target, pred, 1.0 - mask)
        return masked + VISIBLE_WEIGHT * visible
