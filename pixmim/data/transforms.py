"""Named image transforms: the pretraining crops (the PixMIM ``crop`` knob) and eval.

``CROPS`` is the registry of pretraining crops; each maps ``img_size`` to a callable
``(img, mask=None) -> img`` on PIL images (``mask``: the foreground mask, used by ``bg``):

* ``rrc``: RandomResizedCrop(scale=(0.2, 1.0), bicubic) + flip: MAE's pretraining crop
  (MAE Sec. A.1, official ``main_pretrain.py``).
* ``src``: Simple Resized Crop (PixMIM Sec. 4.2, DeiT III): resize the shorter side to
  the input size (bilinear, as in the official mmselfsup config), reflect-pad 4 px, random
  square crop, flip.
* ``cc``: centre crop (PixMIM Table 5b): resize the shorter side to size / 0.875, take the
  centre square, flip.
* ``bg``: background-focused RRC (PixMIM Table 5b "BG", Appendix C): draw RRC boxes up to 50
  times until one holds under 20% of the object's area, else keep the last plain RRC box.
* ``resize``: no crop; the whole image resized to a square (aspect not kept), flip.

Two pixel paths share one parameter sampler. ``crop(img)`` runs the torchvision ops on a
PIL image and returns a normalised float tensor (the probe and evaluation stages use it);
``crop.tensor(img)`` runs the same ops' own ``get_params`` draws, in the same order, on a
uint8 tensor [3, H, W] with ``transforms.v2`` kernels and returns uint8 [3, S, S] (the
pretraining loader; :mod:`pixmim.data.loading` converts and normalises on the device).
Given the same RNG state both paths take the same box and flip; the pixels differ only by
the resampling kernels' rounding (PIL's fixed-point vs torch's uint8 antialiased kernels:
at most 2 of 255 levels, ``tests/data/test_transforms.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F
from torchvision.transforms.v2 import functional as F2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BICUBIC, BILINEAR = InterpolationMode.BICUBIC, InterpolationMode.BILINEAR
RRC_SCALE = (0.2, 1.0)  # MAE pretraining crop scale: MAE main_pretrain.py
BG_TRIES, BG_MAX_COVERAGE = 50, 0.2  # PixMIM Appendix C


class Crop:
    """A pretraining crop: PIL image (+ optional mask) -> normalised tensor [3, S, S]."""

    needs_mask = False

    def __init__(self, ops: list) -> None:
        self.ops = T.Compose(ops)
        self.finish = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def __call__(self, img: Image.Image, mask: Image.Image | None = None) -> torch.Tensor:
        return self.finish(self.ops(img))

    def tensor(self, img: torch.Tensor, mask=None) -> torch.Tensor:
        """The same crop on a uint8 tensor: [3, H, W] -> uint8 [3, S, S] (not normalised)."""
        return apply_ops(self.ops.transforms, img)


def apply_ops(ops: list, img: torch.Tensor) -> torch.Tensor:
    """Run torchvision ``ops`` on a uint8 tensor with v2 kernels, drawing each op's random
    parameters with its own ``get_params`` / ``torch.rand(1)``, as its ``__call__`` does."""
    for op in ops:
        if isinstance(op, T.RandomResizedCrop):
            i, j, h, w = op.get_params(img, op.scale, op.ratio)
            img = F2.resized_crop(img, i, j, h, w, op.size, op.interpolation, antialias=True)
        elif isinstance(op, T.Resize):
            img = F2.resize(img, op.size, op.interpolation, op.max_size, antialias=True)
        elif isinstance(op, T.CenterCrop):
            img = F2.center_crop(img, op.size)
        elif isinstance(op, T.RandomCrop):
            if op.pad_if_needed:
                raise ValueError("RandomCrop(pad_if_needed=True) has no tensor path")
            img = padded_crop(op, img)
        elif isinstance(op, T.RandomHorizontalFlip):
            if torch.rand(1) < op.p:
                img = F2.horizontal_flip(img)
        else:
            raise TypeError(f"no uint8 tensor path for transform {type(op).__name__}")
    return img


def padded_crop(op: T.RandomCrop, img: torch.Tensor) -> torch.Tensor:
    """``op`` (pad, then a random crop) on a uint8 tensor, padding only the crop.

    The box is drawn by ``op.get_params`` on the padded image's shape, as ``op`` draws it;
    then only the part of ``img`` the box covers is cut and padded on the sides where the
    box leaves ``img``. That part reaches ``img``'s border on every such side, so its
    reflect / symmetric / edge / constant padding is the full image's: the same pixels as
    padding the whole image first, without copying it (0.2 ms of 1.7 ms per 224 px SRC
    crop, ``benchmarks/loader.py``)."""
    _, ih, iw = img.shape
    left, top, right, bottom = _sides(op.padding)
    padded = torch.empty((1, ih + top + bottom, iw + left + right), device="meta")
    i, j, h, w = op.get_params(padded, op.size)
    r0, c0 = i - top, j - left  # the box in img's coordinates (may start outside it)
    pt, pl = max(0, -r0), max(0, -c0)
    pb, pr = max(0, r0 + h - ih), max(0, c0 + w - iw)
    part = img[:, max(r0, 0): max(min(r0 + h, ih), 0), max(c0, 0): max(min(c0 + w, iw), 0)]
    if not (pt or pl or pb or pr):
        return part
    if part.shape[1] <= max(pt, pb) or part.shape[2] <= max(pl, pr):
        # a box mostly in the padding: its reflection reaches past the part; pad it all
        return F2.crop(F2.pad(img, [left, top, right, bottom], op.fill, op.padding_mode),
                       i, j, h, w)
    return F2.pad(part, [pl, pt, pr, pb], op.fill, op.padding_mode)


def _sides(padding) -> tuple[int, int, int, int]:
    """torchvision's ``padding`` (int, [lr, tb] or [l, t, r, b]) as (left, top, right,
    bottom)."""
    if padding is None:
        return 0, 0, 0, 0
    if isinstance(padding, int):
        return padding, padding, padding, padding
    if len(padding) == 1:
        return (padding[0],) * 4
    if len(padding) == 2:
        return padding[0], padding[1], padding[0], padding[1]
    return tuple(padding)


class BackgroundCrop(Crop):
    """RRC retried until the crop keeps under 20% of the foreground (PixMIM Appendix C)."""

    needs_mask = True

    def __init__(self, img_size: int) -> None:
        super().__init__([T.RandomHorizontalFlip()])
        self.size = img_size

    def __call__(self, img: Image.Image, mask: Image.Image | None = None) -> torch.Tensor:
        if mask is None:
            raise ValueError("variant.crop 'bg' needs foreground masks (data.masks_root)")
        i, j, h, w = self.box(img, mask)
        img = F.resized_crop(img, i, j, h, w, [self.size, self.size], BICUBIC)
        return self.finish(self.ops(img))

    def tensor(self, img: torch.Tensor, mask: Image.Image | None = None) -> torch.Tensor:
        i, j, h, w = self.box(img, mask)
        img = F2.resized_crop(img, i, j, h, w, [self.size, self.size], BICUBIC, antialias=True)
        return apply_ops(self.ops.transforms, img)

    def box(self, img, mask) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the first RRC box keeping < 20% of the foreground."""
        if mask is None:
            raise ValueError("variant.crop 'bg' needs foreground masks (data.masks_root)")
        fg = np.asarray(mask) > 127
        total = max(int(fg.sum()), 1)
        for _ in range(BG_TRIES):
            i, j, h, w = T.RandomResizedCrop.get_params(img, RRC_SCALE, (3 / 4, 4 / 3))
            if fg[i : i + h, j : j + w].sum() / total < BG_MAX_COVERAGE:
                break
        return i, j, h, w


def rrc(img_size: int) -> Crop:
    return Crop([T.RandomResizedCrop(img_size, scale=RRC_SCALE, interpolation=BICUBIC),
                 T.RandomHorizontalFlip()])


def src(img_size: int) -> Crop:
    # 4 px reflect padding: PixMIM Sec. 4.2 / DeiT III; bilinear: mmselfsup PixMIM config
    return Crop([T.Resize(img_size, interpolation=BILINEAR),
                 T.RandomCrop(img_size, padding=4, padding_mode="reflect"),
                 T.RandomHorizontalFlip()])


def cc(img_size: int) -> Crop:
    return Crop([T.Resize(int(img_size / 0.875), interpolation=BICUBIC),
                 T.CenterCrop(img_size), T.RandomHorizontalFlip()])


def resize(img_size: int) -> Crop:
    return Crop([T.Resize((img_size, img_size), interpolation=BICUBIC),
                 T.RandomHorizontalFlip()])


CROPS: dict[str, Callable[[int], Crop]] = {
    "rrc": rrc, "src": src, "cc": cc, "bg": BackgroundCrop, "resize": resize}


def build_pretrain_transform(crop: str, img_size: int) -> Crop:
    """The pretraining transform named ``crop`` (a key of ``CROPS``)."""
    if crop not in CROPS:
        raise KeyError(f"variant.crop: unknown crop {crop!r}; registered: {sorted(CROPS)}")
    return CROPS[crop](img_size)


def build_probe_transform(img_size: int) -> Crop:
    """Linear-probe training transform: RandomResizedCrop + flip (PixMIM Table 10)."""
    return Crop([T.RandomResizedCrop(img_size, interpolation=BICUBIC), T.RandomHorizontalFlip()])


def build_eval_transform(img_size: int, crop_pct: float = 0.875) -> Crop:
    """Evaluation: resize the shorter side to img_size / 0.875 (256 for 224), centre crop."""
    return Crop([T.Resize(int(img_size / crop_pct), interpolation=BICUBIC),
                 T.CenterCrop(img_size)])


def _posterize(img: Image.Image, bits_to_keep: int, **_) -> Image.Image:
    """timm's posterize op, defined for 0 bits too (keep no bit: a black image).

    timm's ``PosterizeIncreasing`` maps the top RandAugment magnitudes to 0 bits, which
    Pillow >= 13 rejects (``bits must be between or equal to 1 and 8``); older Pillow
    returned the all-zero image, which is what the op means.
    """
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


def use_zero_safe_posterize() -> None:
    """Point timm's posterize ops at :func:`_posterize` (idempotent)."""
    from timm.data import auto_augment

    for name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
        auto_augment.NAME_TO_OP[name] = _posterize
