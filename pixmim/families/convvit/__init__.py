"""The ConvViT family (ConvMAE's hybrid encoder): FLOPs from its structure (torch-free).

An arch is ``img_size``, ``patch_sizes`` (4, 2, 2), ``embed_dims``, ``depths`` (per stage),
``num_heads``, ``mlp_ratio`` (4) and the decoder's ``decoder_embed_dim`` /
``decoder_depth``. Stages 1-2 are convolution blocks at 1/4 and 1/8 (1x1, 5x5 depthwise,
1x1, then a 1x1 MLP), stage 3 transformer blocks at 1/16 (Alpha-VL/ConvMAE). FLOPs are
counted as in :mod:`pixmim.families.vit`.
"""

from __future__ import annotations

from typing import Any

from pixmim.families.vit import blocks_flops

# What an arch may leave out: ConvMAE-B's input, stage strides and MLP ratio
# (Alpha-VL/ConvMAE models_convmae.py).
DEFAULTS = dict(img_size=224, patch_sizes=(4, 2, 2), mlp_ratio=4.0)


def full(arch: dict[str, Any]) -> dict[str, Any]:
    """``arch`` with :data:`DEFAULTS` filled in."""
    return {**DEFAULTS, **arch}


def _conv_block_flops(dim: int, hw: int, mlp_ratio: float) -> float:
    """One ConvBlock on an ``hw``-pixel map: three 1x1 pairs and a 5x5 depthwise."""
    return (2 * (2 + 2 * mlp_ratio) * dim**2 + 2 * 25 * dim) * hw


def _conv_stages(arch: dict[str, Any], size: int) -> tuple[float, float, int]:
    """(FLOPs of the first embedding, FLOPs of the rest of stages 1-2 and the stage-3
    embedding, tokens at 1/16)."""
    arch = full(arch)
    p1, p2, p3 = arch["patch_sizes"]
    d1, d2, d3 = arch["embed_dims"]
    n1, n2, _ = arch["depths"]
    r = arch["mlp_ratio"]
    hw1 = (size // p1) ** 2
    hw2 = hw1 // p2**2
    tokens = hw2 // p3**2
    first = 2 * 3 * p1 * p1 * d1 * hw1
    rest = (n1 * _conv_block_flops(d1, hw1, r) + 2 * d1 * p2 * p2 * d2 * hw2
            + n2 * _conv_block_flops(d2, hw2, r) + 2 * d2 * p3 * p3 * d3 * tokens
            + 2 * tokens * d3 * d3)  # the Linear after the stage-3 embedding
    return first, rest, tokens


def forward_flops(arch: dict[str, Any], size: int | None = None, num_classes: int = 0) -> float:
    """One image through the fine-tuning encoder (no fusion), all tokens, at ``size`` px."""
    arch = full(arch)
    size = size or arch["img_size"]
    first, rest, tokens = _conv_stages(arch, size)
    d3, r = arch["embed_dims"][2], arch["mlp_ratio"]
    return (first + rest + blocks_flops(tokens, d3, arch["depths"][2], r)
            + 2 * d3 * num_classes)


def pretrain_flops(arch: dict[str, Any], mask_ratio: float = 0.75,
                   backward: bool = True) -> float:
    """One image's ConvMAE pretraining step, forward + backward: the convolution stages on
    the whole image (masked convolution zeroes, it does not skip), the multi-scale fusion
    convolutions, stage 3 on the visible tokens, the decoder on all tokens."""
    arch = full(arch)
    size = arch["img_size"]
    first, rest, tokens = _conv_stages(arch, size)
    p1, p2, p3 = arch["patch_sizes"]
    d1, d2, d3 = arch["embed_dims"]
    r = arch["mlp_ratio"]
    visible = int(tokens * (1 - mask_ratio))
    dd = arch["decoder_embed_dim"]
    stride = p1 * p2 * p3
    fusion = 2 * tokens * d3 * (d1 * (p2 * p3) ** 2 + d2 * p3**2)
    body = (rest + fusion + blocks_flops(visible, d3, arch["depths"][2], r)
            + 2 * visible * d3 * dd + blocks_flops(tokens, dd, arch["decoder_depth"], r)
            + 2 * tokens * dd * 3 * stride**2)
    return 2 * first + 3 * body if backward else first + body
