"""A toy pixel-MIM method, declared the way a user declares one: this one module (its
class, arch table, family), named in the config key ``plugins``, plus its catalogue rows.

ToyMAE is MAE whose loss also counts the visible patches, at a tenth of the weight of the
masked ones (a real, if minor, change of objective).
"""

from __future__ import annotations

import torch

from pixmim.models.mae import ARCHS as VIT_ARCHS
from pixmim.models.mae import MAE, PRETRAIN_ONLY

ARCHS = {"vit_cpu_patch8_64": VIT_ARCHS["vit_cpu_patch8_64"]}
METHOD = dict(name="toymae", model="ToyMAE", family="vit", archs=ARCHS,
              pretrain_only=PRETRAIN_ONLY)

VISIBLE_WEIGHT = 0.1


class ToyMAE(MAE):
    """MAE with a down-weighted reconstruction term on the visible patches."""

    def forward_loss(self, target: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor):
        masked = super().forward_loss(target, pred, mask)
        visible = super().forward_loss(target, pred, 1.0 - mask)
        return masked + VISIBLE_WEIGHT * visible
