"""A toy encoder family of another shape, defined only under tests/: a two-stage
hierarchical transformer with patch merging (a Swin-like pyramid without windows).

An arch is ``img_size``, ``embed_dims`` (two stages), ``depths``, ``num_heads``,
``mlp_ratio``: a 4-px patch embedding, stage 1 at 1/4, a 2x2 patch merging (LayerNorm +
Linear 4 x d1 -> d2), stage 2 at 1/8, a final norm. Its one method,
:mod:`tests.plugins.toy_simmim`, names this package as its family; nothing in ``pixmim/``
names it. This module is torch-free, as every family's declaration is (the budget's FLOPs).
"""

from __future__ import annotations

from typing import Any

from pixmim.families.vit import blocks_flops


def _encoder(arch: dict[str, Any], size: int) -> float:
    d1, d2 = arch["embed_dims"]
    n1, n2 = arch["depths"]
    r = arch.get("mlp_ratio", 4.0)
    t1 = (size // 4) ** 2
    t2 = t1 // 4
    return (2 * 3 * 16 * d1 * t1 + blocks_flops(t1, d1, n1, r) + 2 * 4 * d1 * d2 * t2
            + blocks_flops(t2, d2, n2, r))


def forward_flops(arch: dict[str, Any], size: int | None = None, num_classes: int = 0) -> float:
    """One image through the encoder at ``size`` px, plus a linear head."""
    return _encoder(arch, size or arch["img_size"]) + 2 * arch["embed_dims"][1] * num_classes


def pretrain_flops(arch: dict[str, Any], mask_ratio: float = 0.75,
                   backward: bool = True) -> float:
    """SimMIM-style: the whole encoder on every token (masked ones replaced), then a linear
    prediction of each 8-px patch's pixels."""
    size = arch["img_size"]
    first = 2 * 3 * 16 * arch["embed_dims"][0] * (size // 4) ** 2
    body = _encoder(arch, size) - first + 2 * (size // 8) ** 2 * arch["embed_dims"][1] * 192
    return 2 * first + 3 * body if backward else first + body
