"""Reconstruction targets: the PixMIM low-pass filter (PixMIM Sec. 4.1, Eq. 2-4) and kin.

Two semantics are offered (facts from open-mmlab/mmselfsup ``low_freq_generator.py``):

* ``official``: what the released code computes. ``fft2 -> fftshift -> ideal disk
  centred at ((H-1)/2, (W-1)/2) -> ifft2`` *without* ``ifftshift`` ``-> abs``. The disk is
  therefore centred half a bin off DC, and ``abs`` rectifies negative ringing.
* ``centered``: the paper's Eq. 2-4. Disk centred on DC (index ``(H//2, W//2)`` after
  ``fftshift``), ``ifftshift``, ``ifft2``, real part.

``highpass`` keeps the complement of the disk (PixMIM Table 22, "removing low-freq");
``soft_lowpass`` is a differentiable disk for the learnable radius of Table 21.
"""

from __future__ import annotations

import torch

MODES = ("official", "centered")


def _check(img: torch.Tensor, mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"lowpass mode must be one of {MODES}, got {mode!r}")
    if img.dim() != 4:
        raise ValueError(f"expected images [N, C, H, W], got shape {tuple(img.shape)}")


def _sq_distance(h: int, w: int, mode: str, device=None) -> torch.Tensor:
    """[H, W] squared distance of each fftshift-ed bin to the filter centre of ``mode``."""
    cy, cx = ((h - 1) / 2, (w - 1) / 2) if mode == "official" else (h // 2, w // 2)
    yy = torch.arange(h, device=device, dtype=torch.float32).view(-1, 1)
    xx = torch.arange(w, device=device, dtype=torch.float32).view(1, -1)
    return (yy - cy) ** 2 + (xx - cx) ** 2


def lowpass_mask(h: int, w: int, radius: float, mode: str = "official", device=None) -> torch.Tensor:
    """Ideal circular low-pass mask in the fftshift-ed layout.

    Args:
        h, w: spatial size of the image.
        radius: disk radius in frequency bins (r=40 at 224 px keeps ~10% of the bins).
        mode: ``official`` (centre ((H-1)/2, (W-1)/2)) or ``centered`` (centre (H//2, W//2)).

    Returns:
        mask: [H, W] float32, 1 inside the disk.
    """
    if mode not in MODES:
        raise ValueError(f"lowpass mode must be one of {MODES}, got {mode!r}")
    return (_sq_distance(h, w, mode, device) <= radius**2).float()


def apply_spectral_mask(img: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Filter ``img`` [N, C, H, W] with an fftshift-ed spectral ``mask`` [H, W] (float32)."""
    with torch.autocast(device_type=img.device.type, enabled=False):
        spec = torch.fft.fftshift(torch.fft.fft2(img.float()), dim=(-2, -1)) * mask
        if mode == "official":
            return torch.fft.ifft2(spec).abs()
        return torch.fft.ifft2(torch.fft.ifftshift(spec, dim=(-2, -1))).real


def lowpass(img: torch.Tensor, radius: float, mode: str = "official") -> torch.Tensor:
    """Low-pass filter an image batch with an ideal circular filter.

    Args:
        img: [N, C, H, W] un-normalised images in [0, 1].
        radius: disk radius in frequency bins.
        mode: ``official`` or ``centered`` (module docstring).

    Returns:
        [N, C, H, W] float32 filtered images (same scale as the input).
    """
    _check(img, mode)
    h, w = img.shape[-2:]
    return apply_spectral_mask(img, lowpass_mask(h, w, radius, mode, img.device), mode)


def highpass(img: torch.Tensor, radius: float, mode: str = "official") -> torch.Tensor:
    """Remove the components inside the disk of ``radius`` (PixMIM Table 22)."""
    _check(img, mode)
    h, w = img.shape[-2:]
    return apply_spectral_mask(img, 1.0 - lowpass_mask(h, w, radius, mode, img.device), mode)


def soft_lowpass(img: torch.Tensor, radius: torch.Tensor, mode: str = "official",
                 sharpness: float = 1.0) -> torch.Tensor:
    """Low-pass with a sigmoid-edged disk, differentiable in ``radius`` (a 0-dim tensor).

    The mask is ``sigmoid((radius - distance) / sharpness)``: within about one bin of an
    ideal disk, so gradients reach the radius (the adaptive threshold of PixMIM Table 21).
    """
    _check(img, mode)
    h, w = img.shape[-2:]
    mask = torch.sigmoid((radius.float() - _sq_distance(h, w, mode, img.device).sqrt()) / sharpness)
    return apply_spectral_mask(img, mask, mode)
