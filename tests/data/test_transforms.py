"""The pretraining crops (the PixMIM crop knob) on PIL images with foreground masks."""

import numpy as np
import pytest
import torch
from PIL import Image

from pixmim.data.transforms import CROPS, IMAGENET_MEAN, IMAGENET_STD, build_pretrain_transform


def _object_image(w=120, h=80):
    """White object (left third) on black: the image is its own foreground mask."""
    fg = np.zeros((h, w), dtype=np.uint8)
    fg[10:70, 5:45] = 255
    return Image.fromarray(np.stack([fg] * 3, -1)), Image.fromarray(fg), fg


def _unnormalise(t: torch.Tensor) -> torch.Tensor:
    return t * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)


def _fg_fraction(t: torch.Tensor) -> float:
    return float((_unnormalise(t).mean(0) > 0.5).float().mean())


@pytest.mark.parametrize("crop", sorted(CROPS))
def test_every_crop_gives_a_normalised_square(crop):
    img, mask, _ = _object_image()
    torch.manual_seed(0)
    out = CROPS[crop](64)(img, mask)
    assert out.shape == (3, 64, 64) and out.dtype == torch.float32
    assert out.min() < -1.5  # normalised: black is far below zero
    if crop != "bg":  # every other crop keeps some of the white object
        assert out.max() > 1.5


def test_bg_crop_keeps_little_foreground_and_needs_masks():
    img, mask, fg = _object_image()
    bg = CROPS["bg"](64)
    torch.manual_seed(0)
    kept = [_fg_fraction(bg(img, mask)) for _ in range(20)]
    torch.manual_seed(0)
    plain = [_fg_fraction(CROPS["rrc"](64)(img)) for _ in range(20)]
    # the object covers 25% of the canvas; bg crops hold under 20% of it
    assert max(kept) < 0.25 and np.mean(kept) < 0.5 * np.mean(plain)
    with pytest.raises(ValueError, match="masks_root"):
        bg(img)


def test_src_never_zooms_and_cc_is_deterministic_up_to_flip():
    img, mask, fg = _object_image()
    torch.manual_seed(0)
    for _ in range(5):  # shorter side 80 -> 80: the 60-px-tall object stays 60 px tall
        raw = CROPS["src"](80)(img)
        rows = (_unnormalise(raw).mean(0) > 0.5).any(dim=1).sum().item()
        assert abs(rows - 60) <= 1
    outs = {tuple(CROPS["cc"](64)(img).flatten()[:50].tolist()) for _ in range(8)}
    assert len(outs) <= 2  # centre crop + optional flip


def test_resize_keeps_the_whole_image():
    img, mask, fg = _object_image()
    out = CROPS["resize"](64)(img)
    assert _fg_fraction(out) == pytest.approx(fg.mean() / 255, abs=0.03)


def test_unknown_crop_names_the_key():
    with pytest.raises(KeyError, match="variant.crop: unknown crop 'zoom'"):
        build_pretrain_transform("zoom", 64)


def test_randaugment_posterize_survives_its_top_magnitude():
    # timm maps the top magnitudes of PosterizeIncreasing to 0 bits, which Pillow 13 rejects
    from timm.data.auto_augment import AugmentOp

    from pixmim.data.transforms import use_zero_safe_posterize

    img, _, _ = _object_image()
    use_zero_safe_posterize()
    op = AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=10, hparams={"magnitude_std": 0})
    out = np.asarray(op(img))
    assert out.max() == 0  # keep no bit: black
    op = AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=5, hparams={"magnitude_std": 0})
    assert 0 < np.asarray(op(img)).max() < 255
