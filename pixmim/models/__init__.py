"""Model registry: ``create_model(method, arch, **kwargs)``.

``METHODS`` maps a method name to its class; ``ARCHS[method]`` maps an architecture name to
the encoder/decoder sizes of that method. PixMIM is not a method: it is the target/crop
variant of any method, passed as keyword arguments (``target="lowpass", radius=40``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the registry itself imports no torch (the workflow reads ARCHS)
    import torch.nn as nn

# method -> "module:Class" (imported on use, so the registry itself stays light)
METHODS: dict[str, str] = {
    "mae": "pixmim.models.mae:MAE",
    "mff": "pixmim.models.mff:MFF",
    "convmae": "pixmim.models.convmae:ConvMAE",
    "lsmae": "pixmim.models.lsmae:LSMAE",
}

# Decoder 8 x 512 x 16 heads for every ViT size: MAE Sec. 4 / Table 1 (PixMIM keeps it).
_DEC = dict(decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16)
# CPU size for the embedded dataset and tests (not a paper model).
_CPU = dict(img_size=64, patch_size=8, embed_dim=128, depth=4, num_heads=4,
            decoder_embed_dim=64, decoder_depth=2, decoder_num_heads=2)
_VIT = {
    "vit_cpu_patch8_64": _CPU,
    # ViT-S/B/L (Dosovitskiy et al. 2021): PixMIM Table 2 (B) and Table 16 (S, L).
    "vit_small_patch16_224": dict(embed_dim=384, depth=12, num_heads=6, **_DEC),
    "vit_base_patch16_224": dict(embed_dim=768, depth=12, num_heads=12, **_DEC),
    "vit_large_patch16_224": dict(embed_dim=1024, depth=24, num_heads=16, **_DEC),
}


ARCHS: dict[str, dict[str, dict[str, Any]]] = {
    "mae": _VIT,
    # MFF fuses blocks [0, 2, 4, 6, 8, 11] of ViT-B (Liu et al. 2023; mmpretrain mff.py).
    "mff": {
        "vit_cpu_patch8_64": dict(_CPU, fusion_layers=(0, 1, 2, 3)),
        "vit_base_patch16_224": dict(_VIT["vit_base_patch16_224"],
                                     fusion_layers=(0, 2, 4, 6, 8, 11)),
    },
    "convmae": {
        # CPU size for the embedded dataset and tests (not a paper model): 1/16 grid of 4x4.
        "convvit_cpu_64": dict(img_size=64, embed_dims=(32, 48, 96), depths=(1, 1, 2),
                               num_heads=4, decoder_embed_dim=64, decoder_depth=2,
                               decoder_num_heads=2),
        # ConvMAE-B: Alpha-VL/ConvMAE convmae_convvit_base_patch16_dec512d8b (88M encoder).
        "convvit_base_224": dict(img_size=224, patch_sizes=(4, 2, 2), embed_dims=(256, 384, 768),
                                 depths=(2, 2, 11), num_heads=12, decoder_embed_dim=512,
                                 decoder_depth=8, decoder_num_heads=16),
    },
    # LSMAE: 448 px, 32-px mask units, decoder 384 x 12 heads x 8 (long_seq_mae).
    "lsmae": {
        "vit_cpu_patch8_64": dict(_CPU, mask_unit=2),
        "vit_base_patch16_448": dict(img_size=448, embed_dim=768, depth=12, num_heads=12,
                                     decoder_embed_dim=384, decoder_depth=8,
                                     decoder_num_heads=12, mask_unit=2),
    },
}


def method_class(method: str) -> type[nn.Module]:
    if method not in METHODS:
        raise KeyError(f"unknown method {method!r}; registered: {sorted(METHODS)}")
    module, name = METHODS[method].split(":")
    return getattr(importlib.import_module(module), name)


def archs(method: str) -> dict[str, dict[str, Any]]:
    """The architectures registered for ``method``."""
    if method not in METHODS:
        raise KeyError(f"unknown method {method!r}; registered: {sorted(METHODS)}")
    return ARCHS[method]


def create_model(method: str, arch: str, **kwargs: Any) -> nn.Module:
    """Build a pretraining model.

    Args:
        method: a key of ``METHODS`` (``mae``, ``mff``, ``convmae``, ``lsmae``).
        arch: an architecture of that method (``archs(method)``), e.g.
            ``vit_cpu_patch8_64`` or ``vit_base_patch16_224``.
        **kwargs: model options overriding the arch defaults (``mask_ratio``,
            ``target``, ``radius``, ``lowpass_mode``, ``norm_pix_loss``, ...).

    Returns:
        A module whose ``forward(imgs, noise=None)`` returns ``(loss, pred, mask)``.
    """
    table = archs(method)
    if arch not in table:
        raise KeyError(f"unknown arch {arch!r} for method {method!r}; registered: {sorted(table)}")
    return method_class(method)(**{**table[arch], **kwargs})
