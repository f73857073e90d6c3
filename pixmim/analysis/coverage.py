"""Object coverage J(F) (PixMIM Sec. 3.2, Fig. 3 and Fig. 6).

``J(F) = |foreground kept by F| / |foreground of the original image|``, both measured in
pixels of the ORIGINAL image, for F = a pretraining crop, and F = the crop followed by MAE's
random masking (``M o A`` in the paper). Paper, ImageNet-1K with PSSL masks: RRC 68.3 /
17.1 %, CC 82.7 / 20.7 %, SRC 88.2 / 22.1 % (without / with 75 % masking; the upper bound with
masking is 25 %).

How "kept" is measured. Every crop of :data:`pixmim.data.transforms.CROPS` is an axis-aligned
map: an optional box + resize of the original (affine per axis), then integer index maps
(crop, reflect padding, flip). Each output pixel therefore has a footprint in the original,
``[offset + idx * scale, offset + (idx + 1) * scale)`` per axis, and the footprints of the
output pixels partition the part of the original that the output shows. An original pixel is
kept when its centre lies in the footprint of an output pixel (without masking) or of an
output pixel in a visible patch (with masking; patches of ``patch_size`` on the output grid,
``int(L * (1 - mask_ratio))`` kept by the argsort of uniform noise as MAE draws them).
Reflected padding (SRC) shows border pixels twice; a pixel counts once, if any copy is kept.
Resampling filters (bicubic support beyond the footprint) are ignored. Measuring in output
pixels instead would weight the foreground by the crop's zoom, which J(F) does not.

Random parameters. :func:`sample_geometry` walks the ``torchvision`` ops of the real crop
object and draws their parameters with the same calls in the same order (``RandomResizedCrop.
get_params``, ``RandomCrop.get_params`` after the same padding, ``torch.rand(1) < p`` for the
flip; the ``bg`` crop's 50 tries), so under one ``torch.manual_seed`` it reproduces exactly
the crop that the transform applies to the image (checked against the transform in the tests).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision import transforms as T
from torchvision.transforms import functional as F

from pixmim.data.transforms import BG_MAX_COVERAGE, BG_TRIES, RRC_SCALE, BackgroundCrop, Crop


@dataclass
class AxisMap:
    """Where the output pixels of one axis come from in the original image.

    Output pixel ``u`` shows grid cell ``index[u]`` (-1: constant padding, no pixel) of a
    grid whose cell ``k`` covers original coordinates ``[offset + k*scale, offset +
    (k+1)*scale)``.
    """

    offset: float
    scale: float
    index: np.ndarray  # [S] int

    def coverage(self, n_orig: int) -> np.ndarray:
        """[S, n_orig] bool: output pixel ``u`` covers the centre of original pixel ``y``."""
        lo = self.offset + self.index * self.scale
        centre = np.arange(n_orig) + 0.5
        hit = (centre[None] >= lo[:, None]) & (centre[None] < lo[:, None] + self.scale)
        return hit & (self.index >= 0)[:, None]

    def crop(self, start: int, size: int) -> None:
        self.index = self.index[start : start + size]

    def resize(self, size: int) -> None:
        """Resample the current pixels (a contiguous run of grid cells) to ``size``."""
        n, first = len(self.index), int(self.index[0])
        if not np.array_equal(self.index, np.arange(first, first + n)):
            raise ValueError("resize after padding or flipping is not supported")
        self.offset, self.scale = self.offset + first * self.scale, self.scale * n / size
        self.index = np.arange(size)


@dataclass
class Geometry:
    """The geometric part of one crop draw: rows (``ys``) and columns (``xs``)."""

    ys: AxisMap
    xs: AxisMap

    @property
    def out_size(self) -> tuple[int, int]:
        return len(self.ys.index), len(self.xs.index)


def _dummy(h: int, w: int) -> torch.Tensor:
    """A [1, h, w] tensor without memory: what the ``get_params`` functions read (its size)."""
    return torch.zeros(1, 1, 1).expand(1, h, w)


def _sides(padding) -> tuple[int, int, int, int]:
    """torchvision padding -> (left, top, right, bottom)."""
    p = [padding] if isinstance(padding, int) else list(padding)
    if len(p) == 1:
        return p[0], p[0], p[0], p[0]
    if len(p) == 2:  # (left/right, top/bottom)
        return p[0], p[1], p[0], p[1]
    return p[0], p[1], p[2], p[3]


def _pad(ax: AxisMap, before: int, after: int, mode: str) -> None:
    if mode in ("reflect", "symmetric", "edge"):
        ax.index = np.pad(ax.index, (before, after), mode=mode)
    else:  # constant fill: no original pixel
        ax.index = np.concatenate([np.full(before, -1), ax.index, np.full(after, -1)])


def _apply(op, g: Geometry) -> None:
    """Advance ``g`` through one torchvision op, drawing its random parameters."""
    h, w = g.out_size
    if isinstance(op, T.RandomResizedCrop):
        i, j, ch, cw = op.get_params(_dummy(h, w), op.scale, op.ratio)
        _resized_crop(g, i, j, ch, cw, op.size)
    elif isinstance(op, T.Resize):
        if op.max_size is not None:
            raise ValueError("Resize(max_size=...) is not supported")
        size = [op.size] if isinstance(op.size, int) else list(op.size)
        nh, nw = F._compute_resized_output_size((h, w), size)
        g.ys.resize(nh)
        g.xs.resize(nw)
    elif isinstance(op, T.CenterCrop):
        th, tw = op.size
        if th > h or tw > w:
            raise ValueError("CenterCrop larger than the image is not supported")
        g.ys.crop(int(round((h - th) / 2.0)), th)
        g.xs.crop(int(round((w - tw) / 2.0)), tw)
    elif isinstance(op, T.RandomCrop):
        if op.padding is not None:
            left, top, right, bottom = _sides(op.padding)
            _pad(g.ys, top, bottom, op.padding_mode)
            _pad(g.xs, left, right, op.padding_mode)
        h, w = g.out_size
        if op.pad_if_needed and (h < op.size[0] or w < op.size[1]):
            raise ValueError("RandomCrop(pad_if_needed=True) on a small image is not supported")
        i, j, th, tw = op.get_params(_dummy(h, w), op.size)
        g.ys.crop(i, th)
        g.xs.crop(j, tw)
    elif isinstance(op, T.RandomHorizontalFlip):
        if torch.rand(1) < op.p:
            g.xs.index = g.xs.index[::-1].copy()
    else:
        raise TypeError(f"coverage: no geometry for transform {type(op).__name__}")


def _resized_crop(g: Geometry, i: int, j: int, h: int, w: int, size) -> None:
    sh, sw = (size, size) if isinstance(size, int) else tuple(size)
    g.ys.crop(i, h)
    g.xs.crop(j, w)
    g.ys.resize(sh)
    g.xs.resize(sw)


def sample_geometry(crop: Crop, height: int, width: int,
                    foreground: np.ndarray | None = None) -> Geometry:
    """Draw one crop's geometry with the torch RNG, as ``crop(img, mask)`` would.

    Args:
        crop: a transform of :data:`pixmim.data.transforms.CROPS` (its ``ops``).
        height, width: size of the original image.
        foreground: [H, W] bool, for crops that need the mask (``bg``).
    """
    g = Geometry(AxisMap(0.0, 1.0, np.arange(height)), AxisMap(0.0, 1.0, np.arange(width)))
    if isinstance(crop, BackgroundCrop):  # PixMIM Appendix C: mirrors BackgroundCrop.__call__
        if foreground is None:
            raise ValueError("crop 'bg' needs the foreground mask")
        total = max(int(foreground.sum()), 1)
        for _ in range(BG_TRIES):
            i, j, h, w = T.RandomResizedCrop.get_params(_dummy(height, width), RRC_SCALE,
                                                        (3 / 4, 4 / 3))
            if foreground[i : i + h, j : j + w].sum() / total < BG_MAX_COVERAGE:
                break
        _resized_crop(g, i, j, h, w, crop.size)
    for op in crop.ops.transforms:
        _apply(op, g)
    return g


def render_mask(g: Geometry, foreground: np.ndarray) -> np.ndarray:
    """[S, S] bool: the foreground as the crop shows it (nearest sample at pixel centres)."""
    def centres(ax: AxisMap, n: int) -> np.ndarray:
        c = np.floor(ax.offset + (ax.index + 0.5) * ax.scale).astype(int)
        return np.clip(c, 0, n - 1)

    out = foreground[np.ix_(centres(g.ys, foreground.shape[0]),
                            centres(g.xs, foreground.shape[1]))]
    return out & (g.ys.index >= 0)[:, None] & (g.xs.index >= 0)[None]


def visible_patches(grid: int, mask_ratio: float, generator: torch.Generator) -> np.ndarray:
    """[grid, grid] bool visible patches of MAE's random masking (argsort of uniform noise,
    ``int(L * (1 - mask_ratio))`` kept: MAE Sec. 3, ``MIMBase.random_masking``)."""
    length = grid * grid
    keep = torch.argsort(torch.rand(length, generator=generator))[: int(length * (1 - mask_ratio))]
    visible = np.zeros(length, dtype=bool)
    visible[keep.numpy()] = True
    return visible.reshape(grid, grid)


def kept(g: Geometry, shape: tuple[int, int], patch_size: int,
         visible: np.ndarray | None = None) -> np.ndarray:
    """[H, W] bool: original pixels shown by the crop (in a visible patch when ``visible``)."""
    rows, cols = g.ys.coverage(shape[0]), g.xs.coverage(shape[1])  # [S, H], [S, W]
    if visible is not None:
        s = patch_size
        gh, gw = len(g.ys.index) // s, len(g.xs.index) // s
        rows = rows[: gh * s].reshape(gh, s, -1).any(1)  # [gh, H]: rows of each patch row
        cols = cols[: gw * s].reshape(gw, s, -1).any(1)
        return (rows.T.astype(np.float32) @ visible.astype(np.float32)
                @ cols.astype(np.float32)) > 0
    return rows.any(0)[:, None] & cols.any(0)[None]


def coverage(foreground: np.ndarray, g: Geometry, patch_size: int,
             visible: np.ndarray | None = None) -> float:
    """J(F) of one draw: kept foreground / foreground, in original pixels."""
    total = int(foreground.sum())
    if total == 0:
        raise ValueError("coverage of an empty foreground is undefined")
    return float((foreground & kept(g, foreground.shape, patch_size, visible)).sum()) / total


def draw_seed(seed: int, repeat: int, index: int) -> int:
    """The seed of one (repeat, image) draw: crop and mask depend on nothing else."""
    return ((seed * 1_000_003 + repeat) * 10_000_019 + index) % (2**63 - 1)


def image_coverage(crop: Crop, foreground: np.ndarray, patch_size: int, mask_ratio: float,
                   seed: int) -> tuple[float, float]:
    """(J without masking, J with masking) of one seeded draw on one image."""
    with torch.random.fork_rng(devices=[]):
        # ImageDataset seeds a sample's transform with torch.manual_seed: the same CPU draws
        # (seeding the CPU generator alone skips the slow lazy seeding of accelerators)
        torch.default_generator.manual_seed(seed)
        g = sample_geometry(crop, *foreground.shape, foreground=foreground)
    s = patch_size
    if g.out_size[0] % s or g.out_size[1] % s or g.out_size[0] != g.out_size[1]:
        raise ValueError(f"crop output {g.out_size} is not a square grid of {s}-px patches")
    visible = visible_patches(g.out_size[0] // s, mask_ratio,
                              torch.Generator().manual_seed(seed ^ 0x5EED))
    return coverage(foreground, g, s), coverage(foreground, g, s, visible)


# ---------------------------------------------------------------------- outputs
def summarise(values: dict[tuple[str, bool], list[float]]) -> list[dict]:
    """Rows ``crop, masking, J_mean, J_std, n`` (J in [0, 1]; std over draws)."""
    rows = []
    for (name, masked), js in values.items():
        a = np.asarray(js, dtype=np.float64)
        rows.append({"crop": name, "masking": masked, "J_mean": float(a.mean()),
                     "J_std": float(a.std()), "n": int(a.size)})
    return rows
