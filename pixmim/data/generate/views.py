"""Evaluation views of the embedded dataset, in the real datasets' folder layouts.

Small-scale stand-ins of the robustness and shape-bias sets that PixMIM evaluates on
(Table 4, Fig. 8), written so that the evaluation code reads the real datasets unchanged:

=================  =======================================================  ===========
view               layout under ``<out>/``                                  classes
=================  =======================================================  ===========
imagenet-c         ``imagenet-c/<corruption>/<severity>/<wnid>/<file>.png`` all 16
imagenet-a         ``imagenet-a/<wnid>/<cat>_<k>.png``                      timm's IN-A
imagenet-r         ``imagenet-r/<wnid>/<style>_<k>.png``                    timm's IN-R
imagenet-sketch    ``imagenet-sketch/<wnid>/sketch_<k>.png``                all 16
cue-conflict       ``cue-conflict/<shape>/<shape><i>-<texture><j>.png``     all 16
=================  =======================================================  ===========

* ImageNet-C (Hendrycks & Dietterich 2019): the 15 corruptions x 5 severities of
  :mod:`pixmim.data.generate.corruptions` applied to the first ``c_per_class`` val images per class.
* ImageNet-A (Hendrycks et al. 2021, "natural adversarial examples"): the object small, cut
  by the frame, occluded, in unusual colours, over clutter and silhouettes of other classes.
* ImageNet-R (Hendrycks et al. 2021, renditions): the silhouette kept, the texture replaced
  by a drawing style (cartoon, posterised painting, line art, mosaic, cross-stitch).
* ImageNet-Sketch (Wang et al. 2019): grey pencil strokes along the contour, some hatching.
* Cue-conflict (Geirhos et al. 2019): :func:`render` with the shape of one category and the
  texture of another; shape exemplar ``i`` keeps its silhouette across textures.

Torch-free (numpy + Pillow; ImageNet-C also imports imagecorruptions). Every image is a
pure function of (seed, view, class, index).
"""

from __future__ import annotations

import argparse
import colorsys
import dataclasses
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pixmim.data.generate import corruptions
from pixmim.data.generate.synth import (
    CATEGORIES,
    IMAGENET_INDEX,
    SynthConfig,
    category_wnid,
    config_json,
    render,
)
from pixmim.data.imagenet_meta import imagenet_info_dir
from pixmim.io import atomic_dir, existing_meta
from pixmim.progress import progress

GENERATOR_VERSION = "pixmim-views/1"
# what a table note says of data made by this generator (meta.json "description")
DESCRIPTION = ("generated stand-ins of ImageNet-C/A/R/Sketch and the cue-conflict set (the A "
               "and R views hold only the synthetic classes inside those datasets' 200-class "
               "lists)")
VIEWS: tuple[str, ...] = (
    "imagenet-c", "imagenet-a", "imagenet-r", "imagenet-sketch", "cue-conflict",
)  # fmt: skip
STYLES: tuple[str, ...] = ("cartoon", "painting", "lineart", "mosaic", "embroidery")  # IN-R
_SUBSET_LISTS = {"imagenet-a": "imagenet_a_indices.txt", "imagenet-r": "imagenet_r_indices.txt"}
_DOMAIN = 0x7669_6577  # "view": keeps view seeds apart from the synth generator's
_SS = 4  # supersampling of the drawn views (R, sketch): drawn at 4x, box-filtered down
_CUE_TEXTURES_PER_EXEMPLAR = 4  # textures per shape exemplar (the real set: 8 per exemplar)
Rng, Arr = np.random.Generator, np.ndarray


@dataclass(frozen=True)
class ViewsConfig:
    """Sizes of the generated evaluation views (all fields have defaults)."""

    seed: int = 0  # views seed; image k of class c of view v uses rng([seed, tag, v, c, k])
    c_per_class: int = 4  # val images per class corrupted for ImageNet-C (x 15 x 5)
    a_per_class: int = 16  # ImageNet-A-like images per class (classes in timm's IN-A list)
    r_per_class: int = 16  # ImageNet-R-like images per class (classes in timm's IN-R list)
    sketch_per_class: int = 8  # ImageNet-Sketch-like images per class (all 16)
    cue_per_shape: int = 16  # cue-conflict images per shape category (16: each texture once)
    size: int = 64  # side of the square A/R/sketch/cue-conflict images; IN-C keeps the source
    corruptions: tuple[str, ...] = corruptions.CORRUPTIONS  # IN-C corruptions to write

    def __post_init__(self) -> None:
        """Reject configs that cannot produce the views."""
        counts = (self.c_per_class, self.a_per_class, self.r_per_class)
        if min(*counts, self.sketch_per_class, self.cue_per_shape) < 0 or self.size < 32:
            raise ValueError(f"invalid ViewsConfig sizes (counts >= 0, size >= 32): {self}")
        unknown = set(self.corruptions) - set(corruptions.CORRUPTIONS)
        if unknown:
            raise ValueError(f"unknown corruptions {sorted(unknown)}")


def view_categories(view: str) -> tuple[str, ...]:
    """Synthetic categories of a view: for IN-A / IN-R those in timm's 200-class index lists.

    Args:
        view: One of :data:`VIEWS`.

    Returns:
        Category names in :data:`CATEGORIES` order.
    """
    if view not in VIEWS:
        raise KeyError(f"unknown view {view!r}; expected one of {VIEWS}")
    if view not in _SUBSET_LISTS:
        return CATEGORIES
    text = (imagenet_info_dir() / _SUBSET_LISTS[view]).read_text(encoding="utf-8")
    keep = {int(tok) for tok in text.split()}
    return tuple(c for c in CATEGORIES if IMAGENET_INDEX[c] in keep)


def _rng(cfg: ViewsConfig, view: str, *key: int) -> Rng:
    return np.random.default_rng([cfg.seed, _DOMAIN, VIEWS.index(view), *key])


def _canvas(synth: SynthConfig, size: int, scale: tuple[float, float] | None = None) -> SynthConfig:
    """A square-canvas copy of the dataset config, optionally with another object scale."""
    scale = synth.object_scale if scale is None else scale
    return dataclasses.replace(synth, short_side=size, aspect=(1.0, 1.0), object_scale=scale)


# ---------------------------------------------------------------- image helpers
def _noise(rng: Rng, h: int, w: int, cell: float) -> Arr:
    """Smooth noise with feature size ~cell px, zero mean, unit std, [h, w]."""
    grid = rng.random((max(2, round(h / cell) + 2), max(2, round(w / cell) + 2)))
    field = np.asarray(Image.fromarray(grid.astype(np.float32)).resize((w, h), Image.BICUBIC))
    return (field - field.mean()) / (field.std() + 1e-6)


def _grow(mask: Arr, px: int) -> Arr:
    """Dilate (px > 0) or erode (px < 0) a bool mask by |px| px (separable 3x3 steps)."""
    op = np.logical_or if px > 0 else np.logical_and
    for _ in range(abs(px)):
        for axis in (0, 1):
            p = np.pad(mask, [(1, 1) if a == axis else (0, 0) for a in (0, 1)], mode="edge")
            n = mask.shape[axis]
            ends = [p.take(range(k, k + n), axis=axis) for k in (0, 2)]
            mask = op(mask, op(*ends))
    return mask


def _outline(mask: Arr, width: int) -> Arr:
    """A band of about `width` px centred on the mask's contour."""
    return _grow(mask, (width + 1) // 2) & ~_grow(mask, -(width // 2))


def _warp(mask: Arr, rng: Rng, amp: float, cell: float) -> Arr:
    """The mask displaced by a smooth random field of amplitude ~amp px (nearest sampling)."""
    h, w = mask.shape
    y, x = np.mgrid[0:h, 0:w]
    dy, dx = (np.round(_noise(rng, h, w, cell) * amp).astype(int) for _ in range(2))
    return mask[np.clip(y + dy, 0, h - 1), np.clip(x + dx, 0, w - 1)]


def _colour(rng: Rng, sat: tuple[float, float], val: tuple[float, float]) -> Arr:
    """A random RGB colour in [0, 1] with saturation and value drawn from the ranges."""
    return np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val)))


def _bands(rng: Rng) -> tuple[tuple[float, float], tuple[float, float]]:
    """Value ranges of the object and its surround: one bright, one dark (shape stays visible)."""
    bright, dark = (0.75, 0.95), (0.25, 0.5)
    return (bright, dark) if rng.random() < 0.5 else (dark, bright)


def _fill(mask: Arr, inside: Arr, outside: Arr) -> Arr:
    """RGB [H, W, 3]: `inside` (colour or image) where mask, else `outside`."""
    return np.where(mask[..., None], inside, outside)


def _image(rgb: Arr, size: int) -> Image.Image:
    """Float RGB (or grey) in [0, 1] -> PIL RGB image of side `size` (box filter)."""
    arr = np.round(np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8)
    img = Image.fromarray(arr).convert("RGB")
    return img if img.size == (size, size) else img.resize((size, size), Image.BOX)


def _small_mask(mask: Arr, size: int) -> Arr:
    """A supersampled bool mask box-filtered down to [size, size] (coverage >= 0.5)."""
    small = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.BOX)
    return np.asarray(small) >= 128


def _silhouette(cat: str, rng: Rng, cfg: ViewsConfig, synth: SynthConfig) -> Arr:
    """A supersampled silhouette mask [S, S] of `cat` (S = size x _SS), placed as in render."""
    return render(cat, cat, rng, _canvas(synth, cfg.size * _SS))[1]


# ------------------------------------------------------------------- cue-conflict
def cue_conflict_plan(cfg: ViewsConfig) -> list[tuple[str, str, int, int]]:
    """The (shape, texture, i, j) of every cue-conflict image, Geirhos-style.

    Each shape runs through all 16 textures in a seeded order (so 1 image in 16 has
    shape == texture, as 80 of the real 1280), ``i`` is the shape exemplar (shared by
    4 consecutive textures) and ``j`` counts the rounds through the textures.
    """
    plan = []
    for s, shape in enumerate(CATEGORIES):
        order = _rng(cfg, "cue-conflict", s, 0).permutation(len(CATEGORIES))
        for k in range(cfg.cue_per_shape):
            texture = CATEGORIES[order[k % len(CATEGORIES)]]
            plan.append((shape, texture, k // _CUE_TEXTURES_PER_EXEMPLAR + 1, k // 16 + 1))
    return plan


def cue_conflict_name(shape: str, texture: str, i: int, j: int) -> str:
    """File name of a cue-conflict image, e.g. ``airplane1-bicycle2.png``."""
    return f"{shape}{i}-{texture}{j}.png"


def cue_conflict_image(
    shape: str, texture: str, i: int, cfg: ViewsConfig, synth: SynthConfig
) -> tuple[Image.Image, Arr]:
    """Shape exemplar `i` of `shape` filled with the texture of `texture`.

    Returns:
        ``(image, mask)``: RGB image (size x size) and the bool silhouette [size, size];
        the mask (and background) depend only on (seed, shape, i), not on `texture`.
    """
    rng = _rng(cfg, "cue-conflict", CATEGORIES.index(shape), i)
    return render(shape, texture, rng, _canvas(synth, cfg.size))


# -------------------------------------------------------------------- ImageNet-A
def _shift(arr: Arr, dy: int, dx: int) -> Arr:
    """Translate an [H, W, ...] array, filling with zeros (content leaves the frame)."""
    out = np.zeros_like(arr)
    h, w = arr.shape[:2]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = arr[ys, xs]
    return out


def _cut_by_frame(img: Arr, mask: Arr, rng: Rng) -> tuple[Arr, Arr]:
    """Shift the object so that 10-35% of it leaves the frame (20 tries, else unshifted)."""
    area, s = mask.sum(), mask.shape[0]
    for _ in range(20):
        dy, dx = (int(v) for v in rng.integers(-s // 2, s // 2 + 1, size=2))
        moved = _shift(mask, dy, dx)
        if 0.65 <= moved.sum() / max(area, 1) <= 0.9:
            return _shift(img, dy, dx), moved
    return img, mask


def _recolour(rgb: Arr, rng: Rng) -> Arr:
    """Unusual colours: a channel permutation, an inversion or a grey tint (or unchanged)."""
    op = rng.integers(4)
    if op == 0:
        return rgb[..., [(1, 2, 0), (2, 0, 1), (0, 2, 1)][rng.integers(3)]]
    if op == 1:
        return 1.0 - rgb
    if op == 2:
        return rgb.mean(axis=-1, keepdims=True) * 2 * _colour(rng, (0.5, 1.0), (0.6, 1.0))
    return rgb


def _occluders(s: int, mask: Arr, rng: Rng) -> Arr:
    """Bars (branches, posts) and blobs (leaves) over the object; >= 55% stays visible."""
    occ = np.zeros_like(mask)
    ys, xs = np.nonzero(mask)
    for _ in range(rng.integers(1, 4)):
        layer = Image.new("L", (s, s), 0)
        draw = ImageDraw.Draw(layer)
        k = rng.integers(len(ys))
        cy, cx, r = ys[k], xs[k], s * rng.uniform(0.06, 0.16)
        if rng.random() < 0.5:  # a bar through (cx, cy) across the whole canvas
            a = rng.uniform(0, np.pi)
            u, v = 2 * s * np.cos(a), 2 * s * np.sin(a)
            draw.line([(cx - u, cy - v), (cx + u, cy + v)], fill=255, width=max(2, int(r * 0.8)))
        else:
            draw.ellipse([cx - r, cy - 0.7 * r, cx + r, cy + 0.7 * r], fill=255)
        new = occ | (np.asarray(layer) > 0)
        if (mask & ~new).sum() >= 0.55 * mask.sum():
            occ = new
    return occ


def _clutter(rgb: Arr, rng: Rng) -> Arr:
    """Scatter 4-9 random flat polygons (debris, leaves) over the background."""
    s = rgb.shape[0]
    layer = Image.fromarray(np.round(rgb * 255).astype(np.uint8))
    draw = ImageDraw.Draw(layer)
    for _ in range(rng.integers(4, 10)):
        c = tuple(int(v) for v in np.round(_colour(rng, (0.1, 0.7), (0.15, 0.9)) * 255))
        centre, n = rng.uniform(-0.1, 1.1, size=2) * s, rng.integers(3, 6)
        pts = centre + rng.normal(0, s * 0.06, size=(n, 2))
        draw.polygon([tuple(p) for p in pts.tolist()], fill=c)
    return np.asarray(layer, dtype=float) / 255.0


def adversarial_image(
    cat: str, rng: Rng, cfg: ViewsConfig, synth: SynthConfig
) -> tuple[Image.Image, Arr]:
    """An ImageNet-A-like hard example of `cat`.

    Layers, back to front: a distractor object of another class on its background, random
    debris, 1-2 smaller distractor silhouettes, the target (small, shifted so 10-35% leaves
    the frame, often recoloured), then occluders covering part of it.

    Returns:
        ``(image, visible)``: RGB image (size x size), bool mask of the visible target.
    """
    s, others = cfg.size, [c for c in CATEGORIES if c != cat]

    def distractor(scale: tuple[float, float]) -> tuple[Arr, Arr]:
        shape, texture = str(rng.choice(others)), str(rng.choice(CATEGORIES))
        img, mask = render(shape, texture, rng, _canvas(synth, s, scale))
        return np.asarray(img, dtype=float) / 255.0, mask

    rgb = _clutter(distractor((0.4, 0.65))[0], rng)
    for _ in range(rng.integers(1, 3)):
        img, silhouette = distractor((0.25, 0.4))
        rgb = _fill(silhouette, img, rgb)
    obj, mask = render(cat, cat, rng, _canvas(synth, s, (0.55, 0.8)))  # dataset: (0.7, 1.1)
    obj_rgb, mask = _cut_by_frame(np.asarray(obj, dtype=float) / 255.0, mask, rng)
    rgb = _fill(mask, _recolour(obj_rgb, rng), rgb)
    occ = _occluders(s, mask, rng)
    shade = _colour(rng, (0.2, 0.8), (0.1, 0.7)) * (1 + 0.15 * _noise(rng, s, s, s / 6))[..., None]
    rgb = _fill(occ, shade, rgb)
    return _image(rgb, s), mask & ~occ


# -------------------------------------------------------------------- ImageNet-R
def _style_cartoon(mask: Arr, rng: Rng) -> Arr:
    """Flat colours, a cel-shaded shadow and a thick black outline on a flat backdrop."""
    s = mask.shape[0]
    sky, ground = _colour(rng, (0.1, 0.4), (0.85, 1.0)), _colour(rng, (0.3, 0.6), (0.6, 0.9))
    y = np.arange(s)[:, None, None] / s
    rgb = np.where(y < rng.uniform(0.55, 0.8), sky, ground) * np.ones((1, s, 3))
    body = _colour(rng, (0.6, 1.0), (0.7, 1.0))
    shadow = mask & (_noise(rng, s, s, s / 3) > 0.4)
    rgb = _fill(mask, body, rgb)
    rgb = _fill(shadow, body * 0.7, rgb)
    return _fill(_outline(mask, round(0.035 * s)), np.full(3, 0.05), rgb)


def _style_painting(mask: Arr, rng: Rng) -> Arr:
    """Brush-stroke colour fields, a wobbly edge, posterised to a few levels per channel."""
    s = mask.shape[0]
    grid = Image.fromarray(rng.random((s // 4, s // 24)).astype(np.float32))  # long dabs
    strokes = np.asarray(grid.resize((s, s), Image.BICUBIC))
    strokes = strokes if rng.random() < 0.5 else strokes.T
    fields = []
    for band in _bands(rng):
        base, alt = _colour(rng, (0.3, 0.9), band), _colour(rng, (0.3, 0.9), band)
        mix = np.clip(0.5 + 0.35 * _noise(rng, s, s, s / 4) + 0.4 * (strokes - 0.5), 0, 1)
        fields.append(base * (1 - mix[..., None]) + alt * mix[..., None])
    rgb = _fill(_warp(mask, rng, 0.01 * s, s / 12), fields[0], fields[1])
    levels = int(rng.integers(3, 6))
    return np.round(rgb * (levels - 1)) / (levels - 1)


def _style_lineart(mask: Arr, rng: Rng) -> Arr:
    """Clean ink contour on paper, sometimes with an offset flat wash (colouring book)."""
    s = mask.shape[0]
    rgb = np.ones((s, s, 3)) * np.array([0.98, 0.97, 0.93])
    if rng.random() < 0.5:
        dy, dx = (int(v) for v in rng.integers(-s // 40, s // 40 + 1, size=2))
        rgb = _fill(_shift(mask, dy, dx), _colour(rng, (0.2, 0.5), (0.85, 1.0)), rgb)
    return _fill(_outline(mask, max(2, round(0.014 * s))), np.full(3, 0.08), rgb)


def _style_mosaic(mask: Arr, rng: Rng) -> Arr:
    """Square tiles with jittered colours set in light grout; tile colour from its centre."""
    s, n = mask.shape[0], int(rng.integers(12, 18))
    cell = s / n
    centres = ((np.arange(n) + 0.5) * cell).astype(int)
    inside = mask[np.ix_(centres, centres)]
    obj_band, bg_band = _bands(rng)
    obj, bg = _colour(rng, (0.5, 0.9), obj_band), _colour(rng, (0.2, 0.6), bg_band)
    tiles = np.where(inside[..., None], obj, bg) + rng.normal(0, 0.04, size=(n, n, 3))
    idx = np.minimum((np.arange(s) / cell).astype(int), n - 1)
    rgb = tiles[idx][:, idx]
    t = (np.arange(s) % cell) / cell
    grout = (np.minimum(t, 1 - t)[:, None] < 0.06) | (np.minimum(t, 1 - t)[None, :] < 0.06)
    return _fill(grout, np.full(3, 0.85), rgb)


def _style_embroidery(mask: Arr, rng: Rng) -> Arr:
    """Cross-stitches over the silhouette on woven linen, a dark back-stitched contour."""
    s, n = mask.shape[0], int(rng.integers(14, 20))
    cell = s / n
    y, x = np.mgrid[0:s, 0:s] / (s / 60)
    weave = 0.04 * np.sin(2 * np.pi * x) * np.sin(2 * np.pi * y)
    linen = np.array([0.93, 0.9, 0.82]) + weave[..., None]
    layer = Image.fromarray(np.round(np.clip(linen, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(layer)
    threads = [tuple(int(v) for v in _colour(rng, (0.6, 1.0), (0.4, 0.9)) * 255) for _ in range(2)]
    width = max(1, int(cell / 5))
    for r in range(n):
        for c in range(n):
            if mask[int((r + 0.5) * cell), int((c + 0.5) * cell)]:
                x0, y0, x1, y1 = c * cell + 1, r * cell + 1, (c + 1) * cell - 1, (r + 1) * cell - 1
                col = threads[int(rng.random() < 0.25)]
                draw.line([(x0, y0), (x1, y1)], fill=col, width=width)
                draw.line([(x0, y1), (x1, y0)], fill=col, width=width)
    rgb = np.asarray(layer, dtype=float) / 255.0
    dashes = (np.mgrid[0:s, 0:s].sum(axis=0) // max(2, int(cell / 2))) % 2 == 0
    return _fill(_outline(mask, max(2, round(0.012 * s))) & dashes, np.full(3, 0.15), rgb)


_STYLE_FNS = {
    "cartoon": _style_cartoon, "painting": _style_painting, "lineart": _style_lineart,
    "mosaic": _style_mosaic, "embroidery": _style_embroidery,
}  # fmt: skip


def rendition_image(
    cat: str, style: str, rng: Rng, cfg: ViewsConfig, synth: SynthConfig
) -> tuple[Image.Image, Arr]:
    """The silhouette of `cat` drawn in one of :data:`STYLES` (its texture replaced).

    Returns:
        ``(image, mask)``: RGB image (size x size) and the bool silhouette [size, size].
    """
    mask = _silhouette(cat, rng, cfg, synth)
    return _image(_STYLE_FNS[style](mask, rng), cfg.size), _small_mask(mask, cfg.size)


# --------------------------------------------------------------- ImageNet-Sketch
def _hatching(mask: Arr, rng: Rng) -> Arr:
    """Darkness [S, S] of parallel, slightly wavy pencil lines over part of the object."""
    s = mask.shape[0]
    y, x = np.mgrid[0:s, 0:s].astype(float)
    a, period = rng.uniform(0, np.pi), s * rng.uniform(0.03, 0.05)
    phase = (x * np.cos(a) + y * np.sin(a)) / period + 0.15 * _noise(rng, s, s, s / 8)
    lines = np.abs(phase - np.round(phase)) < 0.12
    region = mask & (_noise(rng, s, s, s / 3) > rng.uniform(-0.3, 0.5))
    return lines * region * rng.uniform(0.25, 0.5)


def sketch_image(
    cat: str, rng: Rng, cfg: ViewsConfig, synth: SynthConfig
) -> tuple[Image.Image, Arr]:
    """A grey pencil sketch of the silhouette of `cat` on white paper.

    2-4 overlapping passes of the contour, each displaced by a smooth field, with varying
    pressure and gaps; hatching over part of the object.

    Returns:
        ``(image, mask)``: RGB image (grey values, size x size) and the silhouette.
    """
    mask = _silhouette(cat, rng, cfg, synth)
    s = mask.shape[0]
    dark = _hatching(mask, rng) if rng.random() < 0.7 else np.zeros((s, s))
    for _ in range(rng.integers(2, 5)):
        band = _outline(_warp(mask, rng, 0.012 * s, s / 5), max(2, round(0.014 * s)))
        pressure = np.clip(0.7 + 0.2 * _noise(rng, s, s, s / 6), 0.3, 0.95)
        gaps = _noise(rng, s, s, s / 10) > -1.2
        dark = 1 - (1 - dark) * (1 - band * gaps * pressure)
    paper = 0.97 + 0.02 * rng.standard_normal((s, s))
    grey = (paper * (1 - dark))[..., None].repeat(3, axis=-1)
    return _image(grey, cfg.size), _small_mask(mask, cfg.size)


# ------------------------------------------------------------------------ writing
Job = tuple[str, str, int]  # (view, corruption, severity) or (view, "", class id)


def _val_sources(src: Path, per_class: int) -> list[tuple[int, int, str]]:
    """(class id, index, path) of the first `per_class` val images of every class."""
    sources = []
    for c, cat in enumerate(CATEGORIES):
        folder = src / "val" / category_wnid(cat)
        files = sorted(folder.glob("*.png"))
        if not files:
            raise FileNotFoundError(f"views --src: no val images for {cat} in {folder}")
        sources += [(c, k, str(p)) for k, p in enumerate(files[:per_class])]
    return sources


def _write_in_c(job: Job, cfg: ViewsConfig, root: Path, sources: list) -> int:
    """Write one (corruption, severity) of ImageNet-C for every source image."""
    _, name, severity = job
    for c, k, path in sources:
        folder = root / "imagenet-c" / name / str(severity) / category_wnid(CATEGORIES[c])
        folder.mkdir(parents=True, exist_ok=True)
        seed = corruptions.corruption_seed(cfg.seed, name, severity, c, k)
        image = corruptions.corrupt(Image.open(path).convert("RGB"), name, severity, seed)
        image.save(folder / Path(path).name, format="PNG")
    return len(sources)


def _write_cue_conflict(c: int, cfg: ViewsConfig, synth: SynthConfig, root: Path) -> int:
    """Write the cue-conflict images of shape category `c`."""
    folder = root / "cue-conflict" / CATEGORIES[c]
    folder.mkdir(parents=True, exist_ok=True)
    plan = [p for p in cue_conflict_plan(cfg) if p[0] == CATEGORIES[c]]
    for shape, texture, i, j in plan:
        image, _ = cue_conflict_image(shape, texture, i, cfg, synth)
        image.save(folder / cue_conflict_name(shape, texture, i, j), format="PNG")
    return len(plan)


def _draw(
    view: str, cat: str, k: int, rng: Rng, cfg: ViewsConfig, synth: SynthConfig
) -> tuple[Image.Image, str]:
    """Image k of `cat` in an A / R / sketch view, and its file name."""
    if view == "imagenet-a":
        return adversarial_image(cat, rng, cfg, synth)[0], f"{cat}_{k:05d}.png"
    if view == "imagenet-r":
        style = STYLES[k % len(STYLES)]  # IN-R names files <rendition>_<n>
        return rendition_image(cat, style, rng, cfg, synth)[0], f"{style}_{k}.png"
    return sketch_image(cat, rng, cfg, synth)[0], f"sketch_{k}.png"


def _run_job(job: Job, cfg: ViewsConfig, synth: SynthConfig, root: Path, sources: list) -> int:
    """Write the images of one job; return how many."""
    view, _, c = job
    if view == "imagenet-c":
        return _write_in_c(job, cfg, root, sources)
    if view == "cue-conflict":
        return _write_cue_conflict(c, cfg, synth, root)
    counts = {"imagenet-a": cfg.a_per_class, "imagenet-r": cfg.r_per_class}
    folder = root / view / category_wnid(CATEGORIES[c])
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(counts.get(view, cfg.sketch_per_class)):
        image, name = _draw(view, CATEGORIES[c], k, _rng(cfg, view, c, k), cfg, synth)
        image.save(folder / name, format="PNG")
    return counts.get(view, cfg.sketch_per_class)


def _jobs(view: str, cfg: ViewsConfig) -> list[Job]:
    if view == "imagenet-c":
        return [(view, c, s) for c in cfg.corruptions for s in corruptions.SEVERITIES]
    return [(view, "", CATEGORIES.index(c)) for c in view_categories(view)]


def _write_views(
    cfg: ViewsConfig, synth: SynthConfig, src: Path, root: Path, views: tuple[str, ...],
    workers: int,
) -> tuple[dict[str, int], dict[str, float]]:  # fmt: skip
    """Write the views one after the other, each one's jobs in parallel; counts, seconds."""
    sources = _val_sources(src, cfg.c_per_class) if "imagenet-c" in views else []
    counts, seconds = {}, {}
    spawn = get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=spawn) if workers > 1 else nullcontext() as pool:
        for view in views:
            start, args = time.perf_counter(), (cfg, synth, root, sources)
            (root / view).mkdir(parents=True, exist_ok=True)
            jobs = _jobs(view, cfg)
            if pool is None:
                done = (_run_job(job, *args) for job in jobs)
            else:
                done = (f.result() for f in [pool.submit(_run_job, job, *args) for job in jobs])
            counts[view] = sum(progress(done, view, total=len(jobs), unit="job"))
            seconds[view] = round(time.perf_counter() - start, 2)
    return counts, seconds


def _identity(cfg: ViewsConfig, synth: SynthConfig, src: Path, views: tuple[str, ...]) -> dict:
    """What the views are a function of (compared on reuse; no paths, no timings)."""
    meta_path = src / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"views --src: {src} is not a generated dataset (no meta.json)")
    source = json.loads(meta_path.read_text(encoding="utf-8"))
    identity = {
        "views": list(views), "views_config": asdict(cfg), "synth_config": config_json(synth),
        "source": {"generator": source.get("generator"), "config": source.get("config")},
    }  # fmt: skip
    return json.loads(json.dumps(identity))  # tuples become lists, as read back


def _build_meta(identity: dict, views: tuple[str, ...], counts: dict, seconds: dict) -> dict:
    """The meta.json content (identity, counts, classes and seconds per view, IN-C details)."""
    classes = {v: [{"name": c, "wnid": category_wnid(c)} for c in view_categories(v)]
               for v in views}  # fmt: skip
    in_c = {
        "corruptions": identity["views_config"]["corruptions"],
        "severities": list(corruptions.SEVERITIES),
        "at_224": sorted(corruptions.AT_224),
        "libraries": corruptions.package_versions(),
    }
    return {
        "generator": GENERATOR_VERSION, "description": DESCRIPTION, "config": identity,
        "counts": counts, "classes": classes,
        "seconds": seconds, "imagenet_c": in_c if "imagenet-c" in views else None,
    }  # fmt: skip


def generate_views(
    src: Path,
    out: Path,
    cfg: ViewsConfig,
    synth: SynthConfig,
    views: tuple[str, ...] = VIEWS,
    workers: int = 1,
) -> dict:
    """Write the evaluation views of a generated dataset to `out`, atomically.

    Everything goes to the sibling ``.<name>.tmp-<pid>`` first, meta.json last, then the
    folder is renamed to `out`; if `out` already holds these exact views, nothing is redone.

    Args:
        src: A generated dataset (``val/<wnid>/*.png`` and ``meta.json``), the IN-C source.
        out: Target folder: one sub-folder per view plus meta.json.
        cfg: Sizes of the views.
        synth: Generator config of the rendered views (object scale; canvases become square
            ``cfg.size``), normally the source dataset's own.
        views: Which of :data:`VIEWS` to write.
        workers: Processes to write with (1: in-process; spawned, so scripts need the usual
            ``if __name__ == "__main__":`` guard).

    Returns:
        The meta.json content: generator, config (views, synth and source configs), counts,
        classes (name, wnid) and seconds per view, IN-C details (library versions).

    Raises:
        FileExistsError: `out` exists with different views.
        FileNotFoundError: `src` is not a generated dataset.
    """
    views = tuple(views)
    if unknown := sorted(set(views) - set(VIEWS)):
        raise ValueError(f"unknown views {unknown}; expected some of {VIEWS}")
    src, out = Path(src), Path(out)
    identity = _identity(cfg, synth, src, views)

    def build(tmp: Path) -> dict:
        counts, seconds = _write_views(cfg, synth, src, tmp, views, workers)
        return _build_meta(identity, views, counts, seconds)

    return atomic_dir(out, build,
                      lambda: existing_meta(out, identity, GENERATOR_VERSION, "views folder"))


def _synth_config(src: Path) -> SynthConfig:
    """The SynthConfig stored in a generated dataset's meta.json (lists become tuples)."""
    meta_path = src / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"views --src: {src} is not a generated dataset (no meta.json)")
    config = json.loads(meta_path.read_text(encoding="utf-8"))["config"]
    return SynthConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})


def main(argv: list[str] | None = None) -> int:
    """CLI for ``python -m pixmim data views`` (argv is what follows ``data views``).

    Args:
        argv: e.g. ``["--src", "data/synth", "--out", "data/views", "--seed", "0"]``.

    Returns:
        Process exit status (0 on success, 1 if `--out` holds different views).
    """
    d = ViewsConfig()
    p = argparse.ArgumentParser(
        prog="python -m pixmim data views", description="Generate the evaluation views."
    )
    p.add_argument("--src", type=Path, required=True, help="generated dataset (val/, meta.json)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    sizes = {"seed": "views seed",
             "c_per_class": "val images per class corrupted for ImageNet-C (x 15 x 5)",
             "a_per_class": "ImageNet-A-like images per class",
             "r_per_class": "ImageNet-R-like images per class",
             "sketch_per_class": "ImageNet-Sketch-like images per class",
             "cue_per_shape": "cue-conflict images per shape category",
             "size": "side in px of the A/R/Sketch/cue-conflict images"}
    for name, help_ in sizes.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name),
                       help=f"{help_} (%(default)s)")
    p.add_argument("--views", default=",".join(VIEWS),
                   help="comma-separated subset of views (%(default)s)")
    p.add_argument("--workers", type=int, default=1, help="writing processes (%(default)s)")
    args = vars(p.parse_args(argv))
    src, out, workers = args.pop("src"), args.pop("out"), args.pop("workers")
    views = tuple(v for v in args.pop("views").split(",") if v)
    start = time.perf_counter()
    try:
        meta = generate_views(src, out, ViewsConfig(**args), _synth_config(src), views, workers)
    except FileExistsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    counts = " ".join(f"{v}={n}" for v, n in meta["counts"].items())
    print(f"views: {out} {counts} seed={args['seed']} ({time.perf_counter() - start:.1f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
