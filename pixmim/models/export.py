"""Load a pretrained encoder into its downstream model, asserting the exact keys.

The loader is chosen by the method's declared encoder family (``pixmim.models.family``),
never by its name: family ``vit`` (``mae``, ``mff``, ``lsmae``) loads into timm's
``VisionTransformer`` (the ``vit_*_patch16_*`` models) through :func:`vit_checkpoint_filter`;
family ``convvit`` (ConvMAE's hybrid encoder) loads into our ``ConvViT`` through
``pixmim.models.convmae.convmae_to_convvit``. Every load checks the missing and unexpected
keys against what the downstream model is expected to add, and raises naming the offending
keys (a checkpoint of another method or size fails here).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from pixmim.models import archs, by_family, family

# Pretraining-only parameters, dropped on export: decoder, mask token, MFF fusion, radius.
_PRETRAIN_ONLY = ("decoder_", "mask_token", "fusion_", "radius_logit")
_ENCODER_KEYS = ("cls_token", "pos_embed", "patch_embed.", "blocks.", "norm.")


def vit_for(method: str, arch: str, num_classes: int = 1000, global_pool: str = "avg",
            drop_path_rate: float = 0.0, img_size: int | None = None) -> nn.Module:
    """The timm ViT matching a pretraining ``arch`` (same width, depth, heads, patch) at
    ``img_size`` px (None: the arch's own size)."""
    from timm.models.vision_transformer import VisionTransformer

    if (fam := family(method)) != "vit":
        raise ValueError(f"method {method!r} (encoder family {fam!r}) has no timm ViT: only "
                         "family 'vit' exports to one (family 'convvit' to "
                         "pixmim.models.convmae.ConvViT)")
    a = _arch(method, arch)
    return VisionTransformer(
        img_size=img_size or a.get("img_size", 224), patch_size=a.get("patch_size", 16),
        embed_dim=a["embed_dim"], depth=a["depth"], num_heads=a["num_heads"],
        mlp_ratio=a.get("mlp_ratio", 4.0), qkv_bias=True, num_classes=num_classes,
        global_pool=global_pool, drop_path_rate=drop_path_rate,
    )


def _arch(method: str, arch: str) -> dict[str, Any]:
    table = archs(method)
    if arch not in table:
        raise KeyError(f"unknown arch {arch!r} for method {method!r}; registered: {sorted(table)}")
    return table[arch]


def convvit_arch(method: str, arch: str) -> dict[str, Any]:
    """``ConvViT`` kwargs of a convvit-family ``arch`` of ``method`` (decoder keys removed),
    read from that method's own arch table."""
    if (fam := family(method)) != "convvit":
        raise ValueError(f"method {method!r} (encoder family {fam!r}) has no ConvViT: only "
                         "family 'convvit' builds one")
    return {k: v for k, v in _arch(method, arch).items() if not k.startswith("decoder_")}


def fit_pos_embeds(state_dict: dict[str, torch.Tensor], model: nn.Module
                   ) -> dict[str, torch.Tensor]:
    """``state_dict`` with every ``*pos_embed`` whose token count differs from ``model``'s
    resampled to the model's square grid (timm's bicubic ``resample_abs_pos_embed``; prefix
    tokens such as the cls token kept): a checkpoint pretrained at 448 px (LSMAE, 28 x 28
    patches) loads into a model at 224 (14 x 14), as long_seq_mae's fine-tuning does."""
    from timm.layers import resample_abs_pos_embed

    own = model.state_dict()
    out = dict(state_dict)
    for key, value in state_dict.items():
        if not key.endswith("pos_embed") or key not in own or own[key].shape == value.shape:
            continue
        old, new = value.shape[1], own[key].shape[1]
        side_old, side_new = _grid_side(old), _grid_side(new)
        prefix = old - side_old**2
        if prefix != new - side_new**2 or value.shape[2] != own[key].shape[2]:
            continue  # another width or prefix count: another model, the load names it
        out[key] = resample_abs_pos_embed(value, [side_new, side_new], [side_old, side_old],
                                          num_prefix_tokens=prefix)
    return out


def _grid_side(tokens: int) -> int:
    """The side of the largest square grid in ``tokens`` (the rest are prefix tokens)."""
    import math

    return math.isqrt(tokens)


def vit_checkpoint_filter(state_dict: dict[str, torch.Tensor], model: nn.Module
                          ) -> dict[str, torch.Tensor]:
    """Map a ViT-method pretraining state dict onto timm ``VisionTransformer`` keys.

    Drops the pretraining-only parameters; drops the final ``norm`` when the target model
    pools with ``fc_norm`` (global pool: MAE fine-tuning re-initialises that norm);
    resamples the position grid to the model's input size (:func:`fit_pos_embeds`).
    """
    out = {}
    uses_norm = not isinstance(getattr(model, "norm", None), nn.Identity)
    for key, value in state_dict.items():
        if key.startswith(_PRETRAIN_ONLY) or (key.startswith("norm.") and not uses_norm):
            continue
        out[key] = value
    return fit_pos_embeds(out, model)


def expected_new_keys(model: nn.Module) -> set[str]:
    """Keys a downstream ViT adds on top of the encoder: the head (and fc_norm)."""
    return {k for k in model.state_dict() if k.startswith(("head.", "fc_norm."))}


def load_pretrained(model: nn.Module, state_dict: dict[str, torch.Tensor],
                    method: str) -> dict[str, Any]:
    """Load an encoder into ``model``; assert exactly the expected missing/unexpected keys.

    The loader is chosen by ``method``'s encoder family; an unknown family is a ValueError.
    """
    load = by_family(method, {"vit": _load_vit, "convvit": _load_convvit}, "load_pretrained")
    return load(model, state_dict, method)


def _load_convvit(model: nn.Module, state_dict: dict[str, torch.Tensor],
                  method: str) -> dict[str, Any]:
    from pixmim.models.convmae import load_convmae_encoder

    load_convmae_encoder(model, state_dict)
    return {"missing": sorted(expected_new_keys(model)), "unexpected": []}


def _load_vit(model: nn.Module, state_dict: dict[str, torch.Tensor],
              method: str) -> dict[str, Any]:
    unknown = [k for k in state_dict
               if not k.startswith(_PRETRAIN_ONLY) and not k.startswith(_ENCODER_KEYS)]
    if unknown:
        raise KeyError(f"checkpoint has keys no {method} encoder has: {unknown[:5]}")
    filtered = vit_checkpoint_filter(state_dict, model)
    try:
        result = model.load_state_dict(filtered, strict=False)
    except RuntimeError as e:  # shape mismatch: another size
        raise ValueError(f"checkpoint does not fit the {method} model: {e}") from None
    missing, unexpected = set(result.missing_keys), set(result.unexpected_keys)
    if missing != expected_new_keys(model) or unexpected:
        raise KeyError(
            f"unexpected key mismatch loading the {method} encoder: missing "
            f"{sorted(missing - expected_new_keys(model))}, unexpected {sorted(unexpected)}")
    return {"missing": sorted(missing), "unexpected": sorted(unexpected)}
