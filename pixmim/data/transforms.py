"""Named image transforms: pretraining crops and evaluation pipelines.

``CROPS`` is the registry of pretraining crops (the PixMIM ``crop`` knob):

* ``rrc``: RandomResizedCrop(scale=(0.2, 1.0), bicubic) + flip, MAE's pretraining crop
  (MAE Sec. A.1, official ``main_pretrain.py``).
* ``src``: Simple Resized Crop (PixMIM Sec. 4.2, DeiT III): resize the shorter side to
  the input size (bilinear, as in the official mmselfsup config), reflect-pad 4 px, random
  square crop, flip.
"""

from __future__ import annotations

from collections.abc import Callable

from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _finish(ops: list) -> T.Compose:
    return T.Compose([*ops, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def rrc(img_size: int) -> T.Compose:
    # scale (0.2, 1.0), bicubic: MAE official pretraining augmentation
    return _finish(
        [
            T.RandomResizedCrop(img_size, scale=(0.2, 1.0), interpolation=InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
        ]
    )


def src(img_size: int) -> T.Compose:
    # 4 px reflect padding: PixMIM Sec. 4.2 / DeiT III; bilinear: mmselfsup PixMIM config
    return _finish(
        [
            T.Resize(img_size, interpolation=InterpolationMode.BILINEAR),
            T.RandomCrop(img_size, padding=4, padding_mode="reflect"),
            T.RandomHorizontalFlip(),
        ]
    )


CROPS: dict[str, Callable[[int], T.Compose]] = {"rrc": rrc, "src": src}


def build_pretrain_transform(crop: str, img_size: int) -> T.Compose:
    """The pretraining transform named ``crop`` (a key of ``CROPS``)."""
    if crop not in CROPS:
        raise KeyError(f"variant.crop: unknown crop {crop!r}; registered: {sorted(CROPS)}")
    return CROPS[crop](img_size)


def build_probe_transform(img_size: int) -> T.Compose:
    """Linear-probe training transform: RandomResizedCrop + flip (PixMIM Table 10)."""
    return _finish(
        [
            T.RandomResizedCrop(img_size, interpolation=InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
        ]
    )


def build_eval_transform(img_size: int, crop_pct: float = 0.875) -> T.Compose:
    """Evaluation: resize the shorter side to img_size / 0.875 (256 for 224), centre crop."""
    return _finish(
        [
            T.Resize(int(img_size / crop_pct), interpolation=InterpolationMode.BICUBIC),
            T.CenterCrop(img_size),
        ]
    )
