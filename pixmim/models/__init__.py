"""Model registry: ``create_model(method, arch, **kwargs)``.

``METHODS`` maps a method name to its class; ``ARCHS`` maps an architecture name to the
encoder/decoder sizes. PixMIM is not a method: it is the ``target``/``crop`` variant of any
method, passed as keyword arguments (``target="lowpass", radius=40``).
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from pixmim.models.mae import MAE

METHODS: dict[str, type[nn.Module]] = {"mae": MAE}

# Decoder 8 x 512 x 16 heads for every ViT size: MAE Sec. 4 / Table 1 (PixMIM keeps it).
_DECODER = dict(decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16)
ARCHS: dict[str, dict[str, Any]] = {
    # CPU size for the embedded dataset and tests (not a paper model).
    "vit_cpu_patch8_64": dict(
        img_size=64, patch_size=8, embed_dim=128, depth=4, num_heads=4,
        decoder_embed_dim=64, decoder_depth=2, decoder_num_heads=2,
    ),
    # Paper sizes (ViT-S/B/L: Dosovitskiy et al. 2021; PixMIM Table 2 and Table 16).
    "vit_small_patch16_224": dict(embed_dim=384, depth=12, num_heads=6, **_DECODER),
    "vit_base_patch16_224": dict(embed_dim=768, depth=12, num_heads=12, **_DECODER),
    "vit_large_patch16_224": dict(embed_dim=1024, depth=24, num_heads=16, **_DECODER),
}


def create_model(method: str, arch: str, **kwargs: Any) -> nn.Module:
    """Build a pretraining model.

    Args:
        method: a key of ``METHODS`` (``mae``).
        arch: a key of ``ARCHS`` (``vit_cpu_patch8_64``, ``vit_base_patch16_224``, ...).
        **kwargs: model options overriding the arch defaults (``mask_ratio``,
            ``target``, ``radius``, ``lowpass_mode``, ``norm_pix_loss``, ...).

    Returns:
        A module whose ``forward(imgs)`` returns ``(loss, pred, mask)``.
    """
    if method not in METHODS:
        raise KeyError(f"unknown method {method!r}; registered: {sorted(METHODS)}")
    if arch not in ARCHS:
        raise KeyError(f"unknown arch {arch!r}; registered: {sorted(ARCHS)}")
    return METHODS[method](**{**ARCHS[arch], **kwargs})
