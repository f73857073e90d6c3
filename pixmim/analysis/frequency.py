"""Frequency analysis of MIM reconstructions (PixMIM Fig. 1 and Fig. 5).

The paper splits the centred 2-D spectrum into radial frequency intervals and reports the
PSNR of the reconstruction for each interval's component (x axis 0..112 at 224 px, i.e.
radius in frequency bins up to ``min(H, W) / 2``). Choices made here (the paper states none):

* Radius of a bin: distance to DC in the ``fftshift``-ed layout, DC at ``(H // 2, W // 2)``
  (the paper's Eq. 2-4 convention, ``centered`` in :mod:`pixmim.models.targets`).
* Bands: ``n_bands`` equal-width rings, band ``k`` = radius in ``[k R/n, (k+1) R/n)`` with
  ``R = min(H, W) / 2``. The corners (radius >= R, up to R * sqrt(2)) belong to the last
  band, so the bands partition the spectrum and the band components sum to the image.
* Band MSE by Parseval: ``mean_pixels |x_k|^2 = sum_{bins in k} |X|^2 / (H W)^2`` on the
  spectrum of ``original - reconstruction``; equal to the MSE of the inverse-FFT band
  components (:func:`band_components`, tested), without ``n_bands`` inverse FFTs.
* PSNR = ``10 log10(max_val^2 / MSE)`` per image and band (MSE over channels and pixels),
  then the mean over images ("averaged across 50,000 images", Fig. 5). Identical images give
  ``inf``. :func:`band_psnr_pooled` (PSNR of the image-mean MSE) is offered beside it.

:func:`reconstruct` turns a pretrained model's prediction into an image as MAE's
visualisation does: un-normalise the per-patch normalised prediction (``norm_pix_loss``)
with the mean and variance of the patches of the input image itself (``denorm="image"``),
or of the model's own target (``denorm="target"``: the low-passed image for PixMIM, which
inverts exactly what the model was trained to predict; identical to ``image`` for pixel
targets), then paste the visible patches of the original over the prediction. Caveat: with
``norm_pix_loss`` either choice hands the reconstruction each masked patch's true mean and
spread, information the model never predicted; their share shows when the prediction is
zeroed (the ``patch_stats`` reference of the stage).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence

import torch

DENORMS = ("image", "target")


# ------------------------------------------------------------------------ bands
def band_edges(h: int, w: int, n_bands: int) -> list[float]:
    """Radii (frequency bins) bounding the bands: ``[0, R/n, ..., R]``, ``R = min(h, w) / 2``.

    The last band also holds the corners beyond ``R``.
    """
    if n_bands < 1:
        raise ValueError(f"n_bands must be >= 1, got {n_bands}")
    r = min(h, w) / 2
    return [k * r / n_bands for k in range(n_bands + 1)]


def band_index(h: int, w: int, n_bands: int, device=None) -> torch.Tensor:
    """[H, W] int64 band of each bin in the ``fftshift`` layout (DC at ``(H//2, W//2)``)."""
    fy = torch.arange(h, dtype=torch.float64).view(-1, 1) - h // 2
    fx = torch.arange(w, dtype=torch.float64).view(1, -1) - w // 2
    radius = (fy**2 + fx**2).sqrt()
    width = (min(h, w) / 2) / n_bands
    return torch.clamp((radius / width).floor().long(), max=n_bands - 1).to(device)


def _centred_spectrum(x: torch.Tensor) -> torch.Tensor:
    with torch.autocast(device_type=x.device.type, enabled=False):
        return torch.fft.fftshift(torch.fft.fft2(x.double()), dim=(-2, -1))


def band_components(x: torch.Tensor, n_bands: int) -> torch.Tensor:
    """Split images into their band components by inverse FFT.

    Args:
        x: [N, C, H, W] images.

    Returns:
        [N, n_bands, C, H, W] float64; the components sum to ``x`` (the bands partition the
        spectrum; each band is conjugate-symmetric, so its component is real).
    """
    spec = _centred_spectrum(x)
    idx = band_index(*x.shape[-2:], n_bands, x.device)
    comps = [torch.fft.ifft2(torch.fft.ifftshift(spec * (idx == k), dim=(-2, -1))).real
             for k in range(n_bands)]
    return torch.stack(comps, dim=1)


def band_mse(original: torch.Tensor, reconstruction: torch.Tensor, n_bands: int) -> torch.Tensor:
    """Per-image, per-band MSE between the band components of two image batches.

    Args:
        original, reconstruction: [N, C, H, W] (same scale, e.g. [0, 1]).

    Returns:
        [N, n_bands] float64: mean over channels and pixels of the squared difference of the
        band-``k`` components (Parseval on the spectrum of the difference; module docstring).
    """
    if original.shape != reconstruction.shape or original.dim() != 4:
        raise ValueError(f"expected two [N, C, H, W] batches of one shape, got "
                         f"{tuple(original.shape)} and {tuple(reconstruction.shape)}")
    n, c, h, w = original.shape
    power = _centred_spectrum(original - reconstruction).abs().square().sum(dim=1)  # [N, H, W]
    idx = band_index(h, w, n_bands, original.device).flatten()
    sums = torch.zeros(n, n_bands, dtype=power.dtype, device=power.device)
    sums.index_add_(1, idx, power.flatten(1))
    return sums / (c * (h * w) ** 2)


def psnr_from_mse(mse: torch.Tensor, max_val: float = 1.0) -> torch.Tensor:
    """``10 log10(max_val^2 / mse)`` in dB; ``inf`` where ``mse == 0``."""
    return 10.0 * torch.log10(max_val**2 / mse)


def band_psnr(original: torch.Tensor, reconstruction: torch.Tensor, n_bands: int,
              max_val: float = 1.0) -> torch.Tensor:
    """PSNR (dB) of each frequency band, per image then averaged over images.

    Args:
        original, reconstruction: [N, 3, H, W] floats in [0, max_val].
        n_bands: number of radial bands (:func:`band_edges`).

    Returns:
        [n_bands] float64 mean PSNR; ``inf`` in a band where some image matches exactly.
    """
    return psnr_from_mse(band_mse(original, reconstruction, n_bands), max_val).mean(dim=0)


def band_psnr_pooled(original: torch.Tensor, reconstruction: torch.Tensor, n_bands: int,
                     max_val: float = 1.0) -> torch.Tensor:
    """[n_bands] PSNR of the image-mean MSE (the whole batch as one signal)."""
    return psnr_from_mse(band_mse(original, reconstruction, n_bands).mean(dim=0), max_val)


def image_psnr(original: torch.Tensor, reconstruction: torch.Tensor,
               max_val: float = 1.0) -> torch.Tensor:
    """[N] PSNR of whole images (MSE over channels and pixels)."""
    mse = (original.double() - reconstruction.double()).square().mean(dim=(1, 2, 3))
    return psnr_from_mse(mse, max_val)


# ------------------------------------------------------------- reconstruction
def mask_noise(seeds: Sequence[int], units: int) -> torch.Tensor:
    """[N, units] uniform noise for the argsort masking, row ``i`` drawn from ``seeds[i]``
    (the mask of an image depends on its seed only, not on the batch)."""
    return torch.stack([torch.rand(units, generator=torch.Generator().manual_seed(int(s)))
                        for s in seeds])


@torch.no_grad()
def predict(model: torch.nn.Module, imgs: torch.Tensor, mask_ratio: float,
            seed: int | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a MIM model with a fixed mask: imgs [N, 3, H, W] normalised (ImageNet mean/std)
    -> (pred [N, L, p*p*3] in the model's target space, mask [N, L], 1 = removed).

    ``seed``: one int (image ``i`` uses ``seed + i``) or one seed per image.
    """
    n = imgs.shape[0]
    seeds = [seed + i for i in range(n)] if isinstance(seed, int) else list(seed)
    if len(seeds) != n:
        raise ValueError(f"expected {n} seeds, got {len(seeds)}")
    noise = mask_noise(seeds, model.num_mask_units).to(imgs.device)
    _, pred, mask = model(imgs, mask_ratio=mask_ratio, noise=noise)
    return pred.float(), mask.float()


@torch.no_grad()
def to_image(model: torch.nn.Module, imgs: torch.Tensor, pred: torch.Tensor,
             mask: torch.Tensor, denorm: str = "image") -> torch.Tensor:
    """Prediction -> image in [0, 1] with the visible patches of the original pasted in.

    Args:
        imgs: [N, 3, H, W] normalised model inputs; pred: [N, L, p*p*3]; mask: [N, L].
        denorm: ``image`` or ``target``: whose per-patch mean/var undo ``norm_pix_loss``.

    Returns:
        [N, 3, H, W] float32 in [0, 1].
    """
    if denorm not in DENORMS:
        raise ValueError(f"denorm must be one of {DENORMS}, got {denorm!r}")
    imgs = imgs.float()
    if model.norm_pix_loss:
        ref = model.patchify(imgs) if denorm == "image" else model.forward_target(imgs)
        mean, var = ref.mean(dim=-1, keepdim=True), ref.var(dim=-1, keepdim=True)
        pred = pred * (var + 1.0e-6) ** 0.5 + mean  # inverse of MIMBase.forward_loss
    removed = model.unpatchify(mask.unsqueeze(-1).expand_as(pred))  # [N, 3, H, W], 1 = removed
    raw = imgs * model.std + model.mean
    rec = model.unpatchify(pred) * model.std + model.mean
    return (raw * (1 - removed) + rec * removed).clamp(0.0, 1.0)


def reconstruct(model: torch.nn.Module, imgs: torch.Tensor, mask_ratio: float,
                seed: int | Sequence[int], denorm: str = "image") -> tuple[torch.Tensor,
                                                                          torch.Tensor]:
    """A pretrained model's reconstruction as an image (module docstring).

    Args:
        model: a MIM pretraining model (``forward(imgs, mask_ratio, noise)``).
        imgs: [N, 3, H, W] normalised with the ImageNet mean/std.
        mask_ratio: fraction of mask units removed.
        seed: masking seed(s) (:func:`predict`).

    Returns:
        (reconstruction [N, 3, H, W] in [0, 1], mask [N, L], 1 = removed).
    """
    was_training = model.training
    model.eval()
    try:
        pred, mask = predict(model, imgs, mask_ratio, seed)
        return to_image(model, imgs, pred, mask, denorm), mask
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------- outputs
def bands_csv(metrics: dict) -> str:
    """The per-band table of a frequency ``metrics.json`` as CSV text."""
    buf = io.StringIO()
    keys = {"psnr_db": "band_psnr", "psnr_pooled_db": "band_psnr_pooled",
            "psnr_target_denorm_db": "band_psnr_target_denorm",
            "psnr_patch_stats_db": "band_psnr_patch_stats"}
    keys = {col: key for col, key in keys.items() if key in metrics}
    cols = ["band", "r_lo", "r_hi", *keys]
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    edges = metrics["band_edges"]
    for k in range(metrics["n_bands"]):
        writer.writerow([k, f"{edges[k]:.4f}", f"{edges[k + 1]:.4f}",
                         *(_fmt(metrics[key][k]) for key in keys.values())])
    return buf.getvalue()


def _fmt(v: float | None) -> str:
    return "" if v is None or v != v else f"{v:.4f}"  # None or nan: empty


def finite(values) -> list[float | None]:
    """Floats for JSON: non-finite values (an exact band: ``inf``) become ``None``."""
    return [float(v) if math.isfinite(float(v)) else None for v in values]
