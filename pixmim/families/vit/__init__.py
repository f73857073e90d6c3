"""The plain-ViT family (MAE, MFF, LSMAE): FLOPs from its structure (torch-free).

An arch is ``img_size``, ``patch_size`` (16), ``embed_dim``, ``depth``, ``num_heads``,
``mlp_ratio`` (4) and the decoder's ``decoder_embed_dim`` / ``decoder_depth``. FLOPs count
what ``torch.utils.flop_counter`` counts: 2 per multiply-add of every matrix product and
convolution (norms, softmax, GELU and the FFT of the targets are not counted); a backward
pass costs two forwards, except the first layer's, which needs no input gradient.
"""

from __future__ import annotations

from typing import Any

# What an arch may leave out: ViT-B/16's input, patch and MLP ratio (Dosovitskiy et al. 2021).
DEFAULTS = dict(img_size=224, patch_size=16, mlp_ratio=4.0)


def full(arch: dict[str, Any]) -> dict[str, Any]:
    """``arch`` with :data:`DEFAULTS` filled in."""
    return {**DEFAULTS, **arch}


def blocks_flops(tokens: int, dim: int, depth: int, mlp_ratio: float = 4.0) -> float:
    """Forward FLOPs of ``depth`` transformer blocks on ``tokens`` tokens of width ``dim``:
    qkv, projection and MLP (2 x (4 + 2 x mlp_ratio) x T x D^2) plus attention
    (QK^T and AV: 4 x T^2 x D)."""
    return depth * (2 * (4 + 2 * mlp_ratio) * tokens * dim**2 + 4 * tokens**2 * dim)


def _dims(arch: dict[str, Any], size: int | None = None) -> tuple[int, int, int, float]:
    a = full(arch)
    size = size or a["img_size"]
    return (size // a["patch_size"]) ** 2, a["patch_size"], a["embed_dim"], a["mlp_ratio"]


def forward_flops(arch: dict[str, Any], size: int | None = None, num_classes: int = 0) -> float:
    """One image through the encoder, all tokens and the cls token, at ``size`` px."""
    patches, p, d, r = _dims(arch, size)
    embed = 2 * 3 * p * p * d * patches
    return embed + blocks_flops(patches + 1, d, arch["depth"], r) + 2 * d * num_classes


def pretrain_flops(arch: dict[str, Any], mask_ratio: float = 0.75,
                   backward: bool = True) -> float:
    """One image's MAE pretraining step, forward + backward: the patch embedding on every
    patch, the encoder on the visible ones and the cls token, the decoder on all of them
    (MAE Sec. 3). MFF's fusion projections (a few % of the step) are not counted."""
    patches, p, d, r = _dims(arch)
    visible = int(patches * (1 - mask_ratio)) + 1
    dd = arch["decoder_embed_dim"]
    embed = 2 * 3 * p * p * d * patches
    body = (blocks_flops(visible, d, arch["depth"], r) + 2 * visible * d * dd
            + blocks_flops(patches + 1, dd, arch["decoder_depth"], r)
            + 2 * (patches + 1) * dd * 3 * p * p)
    if not backward:
        return embed + body
    return 2 * embed + 3 * body  # the patch embedding needs no input gradient
