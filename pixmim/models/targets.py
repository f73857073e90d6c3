"""Reconstruction targets: the PixMIM low-pass filter (PixMIM Sec. 4.1, Eq. 2-4) and kin.

Two semantics are offered (facts from open-mmlab/mmselfsup ``low_freq_generator.py``):

* ``official``: what the released code computes. ``fft2 -> fftshift -> ideal disk
  centred at ((H-1)/2, (W-1)/2) -> ifft2`` *without* ``ifftshift`` ``-> abs``. The disk is
  therefore centred half a bin off DC, and ``abs`` rectifies negative ringing.
* ``centered``: the paper's Eq. 2-4. Disk centred on DC (index ``(H//2, W//2)`` after
  ``fftshift``), ``ifftshift``, ``ifft2``, real part.

``highpass`` keeps the complement of the disk (PixMIM Table 22, "removing low-freq");
``soft_lowpass`` is a differentiable disk for the learnable radius of Table 21.

:func:`lowpass_normalised` is the model's target: it takes the normalised batch and
returns the normalised filtered batch, with un-normalise, filter and re-normalise folded
into the band matrices (the filter is linear; ``abs`` is positively homogeneous, so the
std cancels and the mean becomes one DC entry of the band spectrum).
"""

from __future__ import annotations

import functools
import math

import torch

MODES = ("official", "centered")


def _fp32(img: torch.Tensor):
    """Autocast off for the filter (float32 / complex64) on ``img``'s device type; the meta
    device (paper-size shape checks) has no autocast state, the CPU's stands in for it."""
    kind = img.device.type
    return torch.autocast(device_type="cpu" if kind == "meta" else kind, enabled=False)


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


def lowpass_mask(h: int, w: int, radius: float, mode: str = "official",
                 device=None) -> torch.Tensor:
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
    """Filter ``img`` [N, C, H, W] with an fftshift-ed spectral ``mask`` [H, W] by FFT.

    The straightforward formulation (``fft2 -> fftshift -> mask -> ifft2``), used for
    filters that keep most of the spectrum and as the reference the fast path is tested
    against.
    """
    with _fp32(img):
        spec = torch.fft.fftshift(torch.fft.fft2(img.float()), dim=(-2, -1)) * mask
        if mode == "official":
            return torch.fft.ifft2(spec).abs()
        return torch.fft.ifft2(torch.fft.ifftshift(spec, dim=(-2, -1))).real


@functools.lru_cache(maxsize=16)
def _band_bases(h: int, w: int, radius: float, mode: str, device: str):
    """Partial DFT matrices over the frequency rows/columns that the disk touches.

    With ``e_h[k, y] = exp(-2 pi i f_k y / H)`` for the signed frequencies ``f_k`` of the
    band (``e_w`` alike), returns real matrices whose products need no complex copies:
    ``fwd_w`` [W, 2Kw] gives a row spectrum as interleaved (re, im) pairs (a view as
    complex), ``inv_w`` [2Kw, 2W] (or [2Kw, W] for the real part only) maps interleaved
    pairs back to interleaved pixels; ``e_h`` [Kh, H] complex64; the disk [Kh, Kw].
    """
    with torch.device("cpu"):  # constants of the filter, whatever the default device
        return _cpu_band_bases(h, w, radius, mode, device)


def _cpu_band_bases(h: int, w: int, radius: float, mode: str, device: str):
    mask = lowpass_mask(h, w, radius, mode)
    rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
    fy, fx = (rows - h // 2).double(), (cols - w // 2).double()  # fftshift index -> frequency
    e_h = torch.exp(-2j * math.pi * fy[:, None] * torch.arange(h).double()[None] / h)
    e_w = torch.exp(-2j * math.pi * fx[:, None] * torch.arange(w).double()[None] / w)
    kw = len(cols)
    fwd_w = torch.stack([e_w.real.T, e_w.imag.T], dim=-1).reshape(w, 2 * kw)
    # (b_re + i b_im)(c + i s) with conj(e_w) = c + i s: re = b_re c - b_im s, im = b_re s + b_im c
    c, s_ = e_w.real, -e_w.imag
    inv_w = torch.stack([torch.stack([c, s_], -1), torch.stack([-s_, c], -1)], 1)  # [Kw,2,W,2]
    inv_w = inv_w.reshape(2 * kw, 2 * w) if mode == "official" else inv_w[..., 0].reshape(
        2 * kw, w)
    dev = torch.device(device)
    return (fwd_w.to(dev, torch.float32), inv_w.to(dev, torch.float32),
            e_h.to(dev, torch.complex64), mask[rows][:, cols].to(dev))


def _band_lowpass(img: torch.Tensor, radius: float, mode: str) -> torch.Tensor:
    """Low-passed images [N, C, H, W] by partial DFTs over the disk's band only.

    Equal to the inverse DFT of the disk-masked spectrum with frequencies indexed from DC;
    the ``official`` output differs from it only by a unit-modulus phase ramp (the missing
    ``ifftshift``), which ``abs`` removes. With r=40 at 224 px the band is 81 of 224
    frequencies per axis, so a few small matrix products replace two full FFTs.

    Returns:
        official: complex64 [N, C, H, W]; centered: its real part, float32.
    """
    n, c, h, w = img.shape
    fwd_w, inv_w, e_h, disk = _band_bases(h, w, float(radius), mode, str(img.device))
    kw = disk.shape[1]
    a = torch.view_as_complex((img.float() @ fwd_w).view(n, c, h, kw, 2))  # rows' spectra
    spec = e_h @ a  # [N, C, Kh, Kw]
    b = e_h.conj().transpose(0, 1) @ (spec * disk)  # [N, C, H, Kw]
    out = torch.view_as_real(b).reshape(n, c, h, 2 * kw) @ inv_w / (h * w)
    return torch.view_as_complex(out.view(n, c, h, w, 2)) if mode == "official" else out


@functools.lru_cache(maxsize=16)
def _folded_bases(h: int, w: int, radius: float, mode: str, device: str,
                  mean: tuple[float, ...], std: tuple[float, ...]):
    """:func:`_band_bases` with the 1 / (H W) of the inverse DFT folded into ``inv_w``, the
    inverse column transform pre-conjugated and transposed, and the normalisation folded:
    ``bias`` [C, Kh, Kw] adds ``H W mean / std`` at the DC bin (when the disk keeps DC),
    ``shift`` [C, 1, 1] = mean / std is subtracted after ``abs`` (official)."""
    fwd_w, inv_w, e_h, disk = _band_bases(h, w, radius, mode, device)
    dev = torch.device(device)
    with torch.device("cpu"):
        shift = torch.tensor(mean, dtype=torch.float32) / torch.tensor(std, dtype=torch.float32)
        full = lowpass_mask(h, w, radius, mode)  # on the CPU: `disk` may be on meta
        rows, cols = full.any(1).nonzero()[:, 0], full.any(0).nonzero()[:, 0]
        bias = torch.zeros(len(shift), len(rows), len(cols), dtype=torch.complex64)
        dc_r, dc_c = (rows == h // 2).nonzero(), (cols == w // 2).nonzero()
        if full[h // 2, w // 2] > 0:  # the disk keeps DC (disk[i, j] = full[rows[i], cols[j]])
            bias[:, dc_r[0, 0], dc_c[0, 0]] = shift * (h * w)
        elif mode == "centered":  # cannot happen: the centred disk always holds DC
            raise AssertionError("centered disk without DC")
    return (fwd_w, (inv_w / (h * w)).contiguous(), e_h,
            e_h.conj().transpose(0, 1).contiguous(), disk, bias.to(dev),
            shift.view(-1, 1, 1).to(dev))


def lowpass_normalised(img: torch.Tensor, radius: float, mode: str = "official",
                       mean: tuple[float, ...] = (0.0,), std: tuple[float, ...] = (1.0,)
                       ) -> torch.Tensor:
    """``(lowpass(img * std + mean) - mean) / std`` (mmselfsup's PixMIM target on a
    normalised batch) in four matrix products, one ``addcmul`` and, for ``official``, an
    ``abs`` and a subtraction: no pass over the image to un-normalise, scale or
    re-normalise.

    With ``B`` the band filter (complex, linear) and ``m = mean / std``:
    ``official``: ``|std B(x) + mean B(1)| / std - m = |B(x) + m B(1)| - m``, and ``m B(1)``
    is ``m`` at DC of the band spectrum (times H W) when the disk holds DC, else 0;
    ``centered``: ``Re B(x) + m - m = Re B(x)`` (the centred disk always holds DC).

    Args:
        img: [N, C, H, W] images normalised by ``mean`` / ``std`` (per channel, length C
            or 1).
    Returns:
        [N, C, H, W] float32, normalised the same way.
    """
    _check(img, mode)
    n, c, h, w = img.shape
    mean, std = tuple(map(float, mean)), tuple(map(float, std))
    fwd_w, inv_w, e_h, e_h_inv, disk, bias, shift = _folded_bases(
        h, w, float(radius), mode, str(img.device), mean, std)
    with _fp32(img):
        kw = disk.shape[1]
        a = torch.view_as_complex((img.float() @ fwd_w).view(n, c, h, kw, 2))
        spec = e_h @ a  # [N, C, Kh, Kw]
        if mode == "official":
            spec = torch.addcmul(bias, spec, disk)
            out = torch.view_as_real(e_h_inv @ spec).reshape(n, c, h, 2 * kw) @ inv_w
            return torch.view_as_complex(out.view(n, c, h, w, 2)).abs() - shift
        b = e_h_inv @ (spec * disk)
        return torch.view_as_real(b).reshape(n, c, h, 2 * kw) @ inv_w


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
    with _fp32(img):
        out = _band_lowpass(img, radius, mode)
        return out.abs() if mode == "official" else out


def lowpass_fft(img: torch.Tensor, radius: float, mode: str = "official") -> torch.Tensor:
    """:func:`lowpass` by full FFTs (the straightforward formulation; reference)."""
    _check(img, mode)
    h, w = img.shape[-2:]
    return apply_spectral_mask(img, lowpass_mask(h, w, radius, mode, img.device), mode)


def highpass(img: torch.Tensor, radius: float, mode: str = "official") -> torch.Tensor:
    """Remove the components inside the disk of ``radius`` (PixMIM Table 22).

    The complement of :func:`lowpass` with the same semantics: ``official`` is the
    magnitude of ``image - low band`` (complex), ``centered`` its real part.
    """
    _check(img, mode)
    with _fp32(img):
        out = img.float() - _band_lowpass(img, radius, mode)
        return out.abs() if mode == "official" else out


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
