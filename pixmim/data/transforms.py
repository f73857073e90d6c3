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
    """``op`` (pad, then a random crop) on a uint8 tensor, without padding the image.

    The box is drawn by ``op.get_params`` on the padded image's shape, as ``op`` draws it.
    A box inside ``img`` is a slice; one that reaches into the padding is assembled from
    views of ``img`` (:func:`_gather`), the same pixels bit for bit as padding the whole
    image first. torchvision pads uint8 by way of float32 and copies the whole image:
    0.2 ms of a 1.3 ms 224 px SRC sample (``benchmarks/loader.py``)."""
    _, ih, iw = img.shape
    left, top, right, bottom = _sides(op.padding)
    padded = torch.empty((1, ih + top + bottom, iw + left + right), device="meta")
    i, j, h, w = op.get_params(padded, op.size)
    r0, c0 = i - top, j - left  # the box in img's coordinates (may start outside it)
    if r0 >= 0 and c0 >= 0 and r0 + h <= ih and c0 + w <= iw:
        return img[:, r0 : r0 + h, c0 : c0 + w]
    out = _gather(_gather(img, 1, r0, h, op.padding_mode), 2, c0, w, op.padding_mode)
    if op.padding_mode == "constant":  # the positions outside img (clamped) take the fill
        fill = torch.as_tensor(op.fill if op.fill is not None else 0, dtype=img.dtype)
        fill = fill.view(-1, 1, 1) if fill.ndim else fill
        rows, cols = torch.arange(r0, r0 + h), torch.arange(c0, c0 + w)
        outside = ((rows < 0) | (rows >= ih)).view(1, -1, 1) | \
            ((cols < 0) | (cols >= iw)).view(1, 1, -1)
        out = torch.where(outside, fill, out)
    return out


def _gather(img: torch.Tensor, dim: int, start: int, length: int, mode: str) -> torch.Tensor:
    """Positions ``start .. start + length - 1`` of ``img`` padded along ``dim`` by
    ``mode`` (reflect: -k -> k; symmetric: -k -> k - 1; edge and constant: clamped), as at
    most three narrowed views (the border before, the inside, the border after; a mirrored
    border flipped) in one ``cat``. One reflection: torchvision refuses a padding as wide
    as the image. (uint8 ``index_select`` on the strided image: 0.4 ms a 224 px box.)"""
    size, end = img.shape[dim], start + length
    if mode not in ("reflect", "symmetric", "edge", "constant"):
        raise ValueError(f"RandomCrop padding_mode {mode!r} has no uint8 tensor path")

    def border(first: int, n: int, mirror: int) -> torch.Tensor:
        if mode in ("edge", "constant"):  # one index repeated
            shape = list(img.shape)
            shape[dim] = n
            return img.narrow(dim, first, 1).expand(shape)
        return img.narrow(dim, mirror, n).flip(dim)

    parts = []
    if min(end, 0) > start:  # before: p < 0
        n = min(end, 0) - start
        lowest = -(start + n - 1) - (mode == "symmetric")  # the smallest mirrored index
        parts.append(border(0, n, lowest))
    if min(end, size) > max(start, 0):
        parts.append(img.narrow(dim, max(start, 0), min(end, size) - max(start, 0)))
    if end > max(start, size):  # after: p >= size
        n = end - max(start, size)
        lowest = 2 * (size - 1) - (end - 1) + (mode == "symmetric")
        parts.append(border(size - 1, n, lowest))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim)


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
