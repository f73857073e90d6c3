"""mmpretrain's MAE pretraining step (Apache-2.0, benchmark-only): the official comparison.

Built from mmpretrain 1.2.0's registry with the sizes of one of our MAE archs (MAEViT +
MAEPretrainDecoder + MAEPretrainHead with norm_pix), trained with the optimizer of
mmpretrain's MAE config: ``torch.optim.AdamW`` (betas 0.9 / 0.95, wd 0.05; mmengine builds
this class with its defaults). The mmcv ops stand-in (``pixmim.downstream.mmcv_ext``) lets
``mmpretrain.models`` import without compiled mmcv.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from pixmim.models import archs


class OfficialMAE(nn.Module):
    """``forward(imgs) -> loss`` of mmpretrain's ``MAE.loss`` (backbone -> neck -> head)."""

    def __init__(self, arch: str) -> None:
        super().__init__()
        from pixmim.downstream import mmcv_ext

        mmcv_ext.install()
        import mmpretrain.models  # noqa: F401  (registers the modules)
        from mmpretrain.registry import MODELS

        a = archs("mae")[arch]
        p, size, d = a.get("patch_size", 16), a.get("img_size", 224), a["embed_dim"]
        self.model = MODELS.build(dict(
            type="MAE",
            backbone=dict(type="MAEViT", img_size=size, patch_size=p, mask_ratio=0.75,
                          arch=dict(embed_dims=d, num_layers=a["depth"],
                                    num_heads=a["num_heads"], feedforward_channels=4 * d)),
            neck=dict(type="MAEPretrainDecoder", num_patches=(size // p) ** 2, patch_size=p,
                      in_chans=3, embed_dim=d, decoder_embed_dim=a["decoder_embed_dim"],
                      decoder_depth=a["decoder_depth"],
                      decoder_num_heads=a["decoder_num_heads"], mlp_ratio=4.0),
            head=dict(type="MAEPretrainHead", norm_pix=True, patch_size=p,
                      loss=dict(type="PixelReconstructionLoss", criterion="L2"))))

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        return self.model.loss(imgs, None)["loss"]


def official_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """mmpretrain's MAE config: AdamW(lr 1.5e-4 x 4096 / 256, betas (0.9, 0.95), wd 0.05)."""
    return torch.optim.AdamW(model.parameters(), lr=1.5e-4 * 4096 / 256, betas=(0.9, 0.95),
                             weight_decay=0.05)
