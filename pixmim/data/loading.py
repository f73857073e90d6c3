"""The pretraining data path: uint8 in the loader workers, float on the device.

Workers decode with ``torchvision.io`` (libjpeg-turbo / libpng) and crop uint8 tensors with
``transforms.v2`` kernels (:meth:`pixmim.data.transforms.Crop.tensor`); batches travel as
uint8 (a quarter of float32's bytes) through pinned memory; :func:`normalise` converts and
normalises on the device after a non-blocking copy. The PixMIM low-pass target is computed
inside the model from the normalised batch (:mod:`pixmim.models.targets`).

Optional GPU decode (nvjpeg, for nodes with few cores per GPU): workers only read the
files (:class:`EncodedImage`), and :class:`DeviceDecode` decodes the batch on the GPU
with ``torchvision.io.decode_jpeg(device=...)`` and crops there, each sample under its own
seed, so its boxes equal the CPU path's.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file

from pixmim.data.datasets import _seeded
from pixmim.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Crop


def decode(path: str) -> torch.Tensor:
    """An image file as uint8 [3, H, W] RGB: torchvision's decoders (JPEG, PNG, WebP, GIF),
    PIL for the other formats it reads. No EXIF rotation, as ImageFolder's PIL loader."""
    try:
        return decode_image(path, mode=ImageReadMode.RGB)
    except RuntimeError:  # a format torchvision does not decode, or a corrupt file
        with open(path, "rb") as f:  # PIL raises OSError on a corrupt one (bad_images)
            rgb = np.array(Image.open(f).convert("RGB"))
        return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


class UInt8Crop:
    """A pretraining crop on the uint8 path: ``(uint8 [3, H, W], mask) -> uint8 [3, S, S]``.

    ``loader`` tells :class:`pixmim.data.datasets.ImageDataset` how to read a file."""

    loader = staticmethod(decode)
    torch_rng_only = True  # the crops draw from torch's RNG only (get_params, torch.rand)

    def __init__(self, crop: Crop) -> None:
        self.crop, self.needs_mask = crop, crop.needs_mask

    def __call__(self, img: torch.Tensor, mask: Image.Image | None = None) -> torch.Tensor:
        return self.crop.tensor(img, mask)


@functools.lru_cache(maxsize=8)
def _affine(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    scale, shift = 1 / (255 * std), -mean / std
    return shift.view(1, 3, 1, 1).to(device), scale.view(1, 3, 1, 1).to(device)


def normalise(imgs: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> float32 ``(imgs / 255 - mean) / std`` (ImageNet statistics).

    On a GPU one kernel (``addcmul`` promotes uint8 to float32); on the CPU, where the
    broadcast ``addcmul`` takes a slow scalar path (10x, measured), convert, scale, shift."""
    shift, scale = _affine(str(imgs.device))
    if imgs.device.type == "cpu":
        return imgs.float().mul_(scale).add_(shift)
    return torch.addcmul(shift, imgs, scale)


def to_device(imgs: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A uint8 batch (pinned by the loader on CUDA) copied without blocking, normalised
    on ``device``; a float batch (the PIL path) is only copied."""
    imgs = imgs.to(device, non_blocking=True)
    return normalise(imgs) if imgs.dtype == torch.uint8 else imgs


# ------------------------------------------------------------------ GPU decode (optional)
class EncodedImage:
    """Worker side of GPU decode: the file's bytes, uncropped (cropping needs the pixels)."""

    needs_mask = False
    loader = staticmethod(read_file)

    def __call__(self, data: torch.Tensor, mask=None) -> torch.Tensor:
        return data


def collate_encoded(batch):
    """``[(bytes, label, seed), ...]`` -> (list of byte tensors, labels, seeds)."""
    data, labels, seeds = zip(*batch, strict=True)
    return list(data), torch.tensor(labels), torch.tensor(seeds)


class DeviceDecode:
    """Main-process side of GPU decode: JPEG bytes -> normalised float [N, 3, S, S] on
    ``device``. Each sample is cropped under its seed, as the worker would have."""

    def __init__(self, crop: Crop, device: torch.device | str) -> None:
        self.crop, self.device = crop, torch.device(device)

    def __call__(self, data: list[torch.Tensor], seeds: torch.Tensor) -> torch.Tensor:
        imgs = decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
        out = []
        for img, seed in zip(imgs, seeds.tolist(), strict=True):
            with _seeded(seed, UInt8Crop.torch_rng_only):  # as the worker seeds it
                out.append(self.crop.tensor(img))
        return normalise(torch.stack(out))
