"""Load a pretrained encoder into its downstream classifier, asserting the exact keys.

The key map is the method's encoder family's (``pixmim.families``: ``load_pretrained`` of
its ``nets`` module), never chosen by the method's name; the keys it drops are the
method's declared pretraining-only parameters. Every load checks the missing and
unexpected keys against what the downstream model is expected to add, and raises naming the
offending keys (a checkpoint of another method or size fails here).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from pixmim import families


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


def load_pretrained(model: nn.Module, state_dict: dict[str, torch.Tensor],
                    method: str) -> dict[str, Any]:
    """Load ``method``'s pretrained encoder into ``model`` (its family's classifier); assert
    exactly the expected missing/unexpected keys (``{"missing": [...], "unexpected": []}``)."""
    return families.nets_of(method).load_pretrained(model, state_dict,
                                                    families.pretrain_only(method), method)
