"""Synthetic shapes: a tiny, procedurally generated, deterministic image dataset.

Sixteen object classes named after the Geirhos et al. (2019) shape-bias categories
("ImageNet-trained CNNs are biased towards texture", ICLR 2019; the 16-class
ImageNet of the model-vs-human toolbox). Every image shows ONE large object whose
class is carried by two separable cues:

* shape: a parametric silhouette family per category (a crude drawing of the thing),
* texture: a procedural texture family per category filling the silhouette,

on a class-independent background. :func:`render` takes the shape and the texture
category separately, so a cue-conflict view (shape of one class, texture of another)
uses the same code. Object and background sit in separated luminance bands, so the
silhouette survives a strong low-pass filter while the texture does not.

Torch-free on purpose (numpy + Pillow only): the dataset is built before any model code
runs, on a 2-core CPU laptop, without downloads.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from pixmim.data.imagenet_meta import imagenet_names, imagenet_wnids
from pixmim.io import atomic_dir, existing_meta
from pixmim.progress import progress

GENERATOR_VERSION = "pixmim-synth-shapes/1"
# what a table note says of data made by this generator (meta.json "description")
DESCRIPTION = "the embedded synthetic-shapes dataset (16 classes)"

# The 16 shape-bias categories, sorted (Geirhos et al. 2019 / model-vs-human).
CATEGORIES: tuple[str, ...] = (
    "airplane", "bear", "bicycle", "bird", "boat", "bottle", "car", "cat",
    "chair", "clock", "dog", "elephant", "keyboard", "knife", "oven", "truck",
)  # fmt: skip

# One ImageNet-1k index per category, taken from the model-vs-human
# `human_categories` lists; lemmas checked against timm's imagenet_synset_to_lemma.txt.
IMAGENET_INDEX: dict[str, int] = {
    "airplane": 404,  # n02690373 airliner
    "bear": 294,  # n02132136 brown bear, bruin, Ursus arctos
    "bicycle": 444,  # n02835271 bicycle-built-for-two, tandem bicycle, tandem
    "bird": 15,  # n01558993 robin, American robin, Turdus migratorius
    "boat": 472,  # n02951358 canoe
    "bottle": 440,  # n02823428 beer bottle
    "car": 817,  # n04285008 sports car, sport car
    "cat": 281,  # n02123045 tabby, tabby cat
    "chair": 559,  # n03376595 folding chair
    "clock": 409,  # n02708093 analog clock
    "dog": 207,  # n02099601 golden retriever
    "elephant": 386,  # n02504458 African elephant, Loxodonta africana
    "keyboard": 508,  # n03085013 computer keyboard, keypad
    "knife": 499,  # n03041632 cleaver, meat cleaver, chopper
    "oven": 766,  # n04111531 rotisserie
    "truck": 867,  # n04467665 trailer truck, tractor trailer, trucking rig, rig, ...
}

SPLITS: tuple[str, ...] = ("train", "val")  # split_id = position in this tuple

_SUPERSAMPLE = 4  # silhouettes are drawn at 4x and box-filtered down
_MAX_ROTATION_DEG = 25.0  # object rotation range (+/-)
_PART_JITTER = 0.15  # relative jitter of every part proportion
_ASPECT_JITTER = 0.12  # relative horizontal stretch of the whole silhouette
_MAX_OVERHANG = 0.12  # fraction of the object bbox allowed past each canvas edge
_BRIGHT_BAND = (0.64, 0.78)  # mean luminance of the bright layer (object or background)
_DARK_BAND = (0.20, 0.34)  # mean luminance of the dark layer
_TEXTURE_AMP = (0.13, 0.2)  # +/- luminance swing of the object texture
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 luma weights
_TEXTURE_DOMAIN = 0x7465_7874  # "text": the texture-binding draws' own seed stream
# Fields added after datasets were first generated, with the value that reproduces those
# datasets: left out of meta.json at that value, so older datasets are still recognised.
_NEUTRAL = {"texture_class_bound": 1.0}


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of the synthetic-shapes dataset (all fields have defaults)."""

    seed: int = 0  # dataset seed; each image uses rng([seed, split_id, class_id, index])
    train_per_class: int = 64  # training images per category
    val_per_class: int = 16  # validation images per category
    short_side: int = 80  # canvas shorter side in px
    aspect: tuple[float, float] = (1.0, 1.5)  # long/short ratio range; orientation random
    # Object bbox size (geometric mean of its sides, times a per-category factor) relative
    # to the short side, clamped to the canvas. (0.7, 1.1) gives a mean foreground fraction
    # of ~0.25 (per image ~0.11-0.50); (0.35, 0.7) would give only ~0.11.
    object_scale: tuple[float, float] = (0.7, 1.1)
    # Probability that an image's texture is its own class's family; otherwise the texture
    # category is drawn uniformly from all 16, independently of the class (a nuisance cue).
    # 1 is the dataset as it always was (byte-identical images); 0: texture carries nothing.
    texture_class_bound: float = 1.0

    def __post_init__(self) -> None:
        """Reject configs that cannot produce a dataset."""
        if min(self.train_per_class, self.val_per_class) < 0 or self.short_side < 16:
            raise ValueError(f"invalid SynthConfig sizes: {self}")
        lo_a, hi_a = self.aspect
        lo_s, hi_s = self.object_scale
        if not (1.0 <= lo_a <= hi_a and 0.0 < lo_s <= hi_s):
            raise ValueError(f"invalid SynthConfig ranges: {self}")
        if not 0.0 <= self.texture_class_bound <= 1.0:
            raise ValueError(f"invalid SynthConfig texture_class_bound (not in [0, 1]): {self}")


def category_wnid(cat: str) -> str:
    """Return the ImageNet wnid bound to a synthetic category.

    Args:
        cat: One of :data:`CATEGORIES`.

    Returns:
        The WordNet id of ``IMAGENET_INDEX[cat]``, e.g. ``"n02690373"``.
    """
    if cat not in IMAGENET_INDEX:
        raise KeyError(f"unknown synthetic category {cat!r}; expected one of {CATEGORIES}")
    return imagenet_wnids()[IMAGENET_INDEX[cat]]


# --------------------------------------------------------------------------- geometry
# A silhouette is a list of parts (polygon, filled); filled=False cuts a hole.
# Shape coordinates: x to the right (objects face +x), y downwards, roughly [-1, 1].
Part = tuple[np.ndarray, bool]
Jitter = Callable[[float], float]


def _poly(*pts: tuple[float, float]) -> np.ndarray:
    return np.asarray(pts, dtype=float)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return _poly((x0, y0), (x1, y0), (x1, y1), (x0, y1))


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 40) -> np.ndarray:
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _bar(p: tuple[float, float], q: tuple[float, float], width: float) -> np.ndarray:
    """Thick line segment from p to q as a quad."""
    a, b = np.asarray(p, float), np.asarray(q, float)
    d = (b - a) / max(float(np.hypot(*(b - a))), 1e-9)
    n = np.array([-d[1], d[0]]) * width / 2
    return np.stack([a + n, b + n, b - n, a - n])


def _arc(cx: float, cy: float, r: float, a0: float, a1: float, width: float) -> np.ndarray:
    """Thick circular arc between angles a0 and a1 (degrees)."""
    t = np.radians(np.linspace(a0, a1, 20))
    ring = np.stack([np.cos(t), np.sin(t)], axis=1)
    outer = (cx, cy) + ring * (r + width / 2)
    inner = (cx, cy) + ring[::-1] * (r - width / 2)
    return np.concatenate([outer, inner])


def _wheel(cx: float, cy: float, r: float) -> list[Part]:
    """Tyre with a hub: disc, hole, hub."""
    return [
        (_ellipse(cx, cy, r, r), True),
        (_ellipse(cx, cy, 0.5 * r, 0.5 * r), False),
        (_ellipse(cx, cy, 0.22 * r, 0.22 * r), True),
    ]


# --------------------------------------------------------------------- silhouettes
def _shape_airplane(j: Jitter) -> list[Part]:
    """Top view: fuselage, swept wings, swept tailplane."""
    half, fw, span, sweep, chord = j(0.95), j(0.11), j(0.85), j(0.35), j(0.3)
    parts = [(_ellipse(0.0, 0.0, half, fw), True)]
    tail_x, tail_span = -0.72 * half, j(0.33)
    for s in (-1, 1):
        wing = _poly(
            (0.25, 0),
            (0.25 - sweep, s * span),
            (0.1 - sweep - chord / 2, s * span),
            (0.25 - chord, 0),
        )
        tail = _poly(
            (tail_x, 0),
            (tail_x - 0.15, s * tail_span),
            (tail_x - 0.26, s * tail_span),
            (-0.95 * half, 0),
        )
        parts += [(wing, True), (tail, True)]
    return parts


def _shape_bear(j: Jitter) -> list[Part]:
    """Side view: bulky body with shoulder hump, round head and ear, snout, thick legs."""
    leg_w, leg_y = j(0.21), j(0.8)
    parts = [
        (_ellipse(-0.1, 0.0, j(0.68), j(0.4)), True),
        (_ellipse(0.25, -0.2, j(0.35), j(0.28)), True),
        (_ellipse(0.68, -0.18, j(0.24), j(0.22)), True),
        (_ellipse(0.9, -0.08, j(0.14), j(0.1)), True),
        (_ellipse(0.6, -0.38, j(0.08), j(0.08)), True),
    ]
    for x in (-0.6, -0.33, 0.22, 0.48):
        parts.append((_rect(x - leg_w / 2, 0.1, x + leg_w / 2, leg_y), True))
    return parts


def _shape_bicycle(j: Jitter) -> list[Part]:
    """Side view: two rings, diamond frame, saddle and handlebar."""
    r, t, w = j(0.4), j(0.2), j(0.13)
    rear, front, crank = (-0.58, 0.38), (0.58, 0.38), (0.0, 0.38)
    seat, head = (-0.1, -0.28), (0.42, -0.28)
    parts: list[Part] = []
    for cx, cy in (rear, front):
        parts += [
            (_ellipse(cx, cy, r + t / 2, r + t / 2), True),
            (_ellipse(cx, cy, r - t / 2, r - t / 2), False),
        ]
    for p, q in (
        (rear, seat),
        (rear, crank),
        (crank, seat),
        (seat, head),
        (crank, head),
        (head, front),
        (seat, (-0.15, -0.45)),
        (head, (0.38, -0.55)),
    ):
        parts.append((_bar(p, q, w), True))
    parts += [(_rect(-0.32, -0.52, 0.02, -0.42), True), (_rect(0.3, -0.6, 0.55, -0.5), True)]
    return parts


def _shape_bird(j: Jitter) -> list[Part]:
    """Perched songbird: round body, head, beak, wedge tail, thin legs."""
    by, hr = j(0.34), j(0.25)
    body = _ellipse(0.0, 0.0, j(0.52), by)
    body = body @ np.array([[0.94, -0.34], [0.34, 0.94]])  # tilt ~20 deg, tail down
    parts = [
        (body, True),
        (_ellipse(0.42, -0.3, hr, hr), True),
        (_poly((0.6, -0.38), (0.6 + j(0.25), -0.3), (0.6, -0.22)), True),
        (_poly((-0.4, 0.15), (-0.95, 0.5), (-0.85, 0.62), (-0.3, 0.32)), True),
    ]
    for x in (-0.02, 0.14):
        parts.append((_bar((x, 0.2), (x, j(0.75)), 0.06), True))
    return parts


def _shape_boat(j: Jitter) -> list[Part]:
    """Sailboat: trapezoid hull, mast, main sail and jib."""
    top, keel, mast = 0.45, 0.45 + j(0.32), -j(0.95)
    return [
        (_poly((-0.95, top), (0.95, top), (0.65, keel), (-0.68, keel)), True),
        (_bar((0.0, top), (0.0, mast), 0.06), True),
        (_poly((-0.05, mast + 0.05), (-0.05, 0.38), (-j(0.75), 0.38)), True),
        (_poly((0.06, mast + 0.15), (0.06, 0.38), (j(0.6), 0.38)), True),
    ]


def _shape_bottle(j: Jitter) -> list[Part]:
    """Upright bottle: body, curved shoulder, neck and lip (mirror-symmetric)."""
    bw, nw, sh, neck_top = j(0.34), j(0.12), j(-0.1), -j(0.85)
    t = np.linspace(0.0, 1.0, 10)
    shoulder = np.stack([nw + (bw - nw) * np.cos(t * np.pi / 2), sh - (sh + 0.5) * t], axis=1)
    right = np.concatenate(
        [
            [[bw - 0.04, 1.0], [bw, 0.94]],
            shoulder,
            [[nw, neck_top], [nw + 0.03, neck_top], [nw + 0.03, neck_top - 0.08]],
        ]
    )
    left = right[::-1] * [-1, 1]
    return [(np.concatenate([right, left]), True)]


def _shape_car(j: Jitter) -> list[Part]:
    """Side view of a low sports car: body with sloped bonnet and cabin, windows, wheels."""
    roof, r = -j(0.38), j(0.21)
    body = _poly(
        (-0.95, 0.35),
        (-0.97, 0.0),
        (-0.6, -0.06),
        (-0.3, roof),
        (0.2, roof),
        (0.5, -0.06),
        (0.97, 0.04),
        (0.95, 0.35),
    )
    window = _poly((-0.27, roof + 0.07), (0.16, roof + 0.07), (0.38, -0.1), (-0.5, -0.1))
    parts = [(body, True), (window, False), (_rect(-0.07, roof, -0.01, -0.08), True)]
    return parts + _wheel(-0.56, 0.36, r) + _wheel(0.58, 0.36, r)


def _shape_cat(j: Jitter) -> list[Part]:
    """Sitting cat seen from the front: pear body, round head, pointed ears, curled tail."""
    hx, ear = j(0.3), j(0.42)
    parts = [(_ellipse(0.0, 0.35, j(0.42), 0.58), True), (_ellipse(0.0, -0.42, hx, j(0.27)), True)]
    for s in (-1, 1):
        parts.append((_poly((s * 0.3, -0.45), (s * 0.24, -0.45 - ear), (s * 0.04, -0.62)), True))
    parts.append((_arc(0.4, 0.6, 0.32, 140, -70, 0.14), True))
    return parts


def _shape_chair(j: Jitter) -> list[Part]:
    """Side view of a chair: back post with backrest panel, thick seat, legs, stretcher."""
    seat_y, w, front = j(0.05), j(0.17), j(0.5)
    parts = [
        (_bar((-0.45, -0.95), (-0.55, 0.95), w), True),
        (_rect(-0.54, -0.95, -0.24, -j(0.3)), True),
        (_rect(-0.5, seat_y - 0.1, front + 0.08, seat_y + 0.1), True),
        (_bar((front, seat_y), (front + 0.08, 0.95), w), True),
        (_bar((-0.5, 0.55), (front + 0.05, 0.55), 0.7 * w), True),
    ]
    return parts


def _shape_clock(j: Jitter, rng: np.random.Generator) -> list[Part]:
    """Clock face: solid disc with a rim groove, hour ticks and two hands cut out, hub."""
    rim = 1.0 - j(0.14)
    parts = [(_ellipse(0, 0, 1.0, 1.0, 64), True), (_arc(0, 0, rim, 0, 360, 0.06), False)]
    for k in range(12):
        a, major = math.radians(30 * k), k % 3 == 0
        r0, r1 = rim - 0.08, rim - 0.08 - (0.22 if major else 0.12)
        p, q = (r0 * math.cos(a), r0 * math.sin(a)), (r1 * math.cos(a), r1 * math.sin(a))
        parts.append((_bar(p, q, 0.1 if major else 0.06), False))
    for length, width in ((0.45, 0.14), (0.66, 0.09)):
        a = rng.uniform(0, 2 * np.pi)
        parts.append((_bar((0, 0), (length * math.cos(a), length * math.sin(a)), width), False))
    return [*parts, (_ellipse(0, 0, 0.1, 0.1), True)]


def _shape_dog(j: Jitter) -> list[Part]:
    """Side view of a dog: slim body, long legs, raised neck and head, snout, ear, tail."""
    leg_y, lw = j(0.78), j(0.1)
    parts = [
        (_ellipse(0.0, -0.05, j(0.55), j(0.2)), True),
        (_bar((0.42, -0.1), (0.62, -0.45), 0.2), True),
        (_ellipse(0.66, -0.5, j(0.18), 0.15), True),
        (_ellipse(0.88, -0.43, j(0.16), 0.075), True),
        (_ellipse(0.6, -0.38, 0.065, j(0.14)), True),
        (_bar((-0.5, -0.12), (-0.82, -j(0.45)), 0.08), True),
    ]
    for x0, x1 in ((-0.42, -0.5), (-0.28, -0.3), (0.3, 0.34), (0.42, 0.5)):
        parts.append((_bar((x0, 0.0), (x1, leg_y), lw), True))
    return parts


def _shape_elephant(j: Jitter) -> list[Part]:
    """Side view of an elephant: big body, head, large ear, hanging trunk, column legs."""
    leg_w, trunk = j(0.19), j(0.75)
    parts = [
        (_ellipse(-0.15, -0.1, j(0.62), j(0.42)), True),
        (_ellipse(0.5, -0.3, 0.27, 0.27), True),
        (_ellipse(0.36, -0.22, j(0.2), j(0.32)), True),
        (_bar((0.68, -0.25), (0.82, 0.15), 0.17), True),
        (_bar((0.82, 0.15), (0.86, trunk), 0.1), True),
        (_bar((-0.75, -0.15), (-0.86, 0.35), 0.05), True),
    ]
    for x in (-0.58, -0.34, 0.06, 0.3):
        parts.append((_rect(x - leg_w / 2, 0.1, x + leg_w / 2, 0.82), True))
    return parts


def _shape_keyboard(j: Jitter) -> list[Part]:
    """Wide flat keyboard: frame, rows of keys and a space bar."""
    h, cols, rows = j(0.36), 12, 4
    parts = [(_rect(-1, -h, 1, h), True), (_rect(-0.93, -h + 0.07, 0.93, h - 0.07), False)]
    kx, ky = 1.86 / cols, (2 * h - 0.14) / (rows + 1)
    g = min(kx, ky) * 0.1  # half the gap between keys
    for r in range(rows):
        y0 = -h + 0.07 + r * ky
        for c in range(cols):
            x0 = -0.93 + c * kx
            parts.append((_rect(x0 + g, y0 + g, x0 + kx - g, y0 + ky - g), True))
    y0 = -h + 0.07 + rows * ky
    return [*parts, (_rect(-0.45, y0 + g, 0.45, y0 + ky - g), True)]


def _shape_knife(j: Jitter) -> list[Part]:
    """Cleaver-like kitchen knife: broad blade curving to a point, bolster, riveted handle."""
    bh, tip = j(0.55), j(0.98)
    t = np.linspace(0.0, 1.0, 12)
    edge = np.stack([-0.15 + (tip + 0.15) * t, -0.2 + bh * np.sqrt(1 - t**2)], axis=1)
    blade = np.concatenate([[[-0.15, -0.22], [tip, -0.22]], edge[::-1]])
    handle = _rect(-0.95, -0.24, -0.2, -0.24 + j(0.22))
    parts = [(blade, True), (_rect(-0.24, -0.27, -0.12, 0.1), True), (handle, True)]
    for x in (-0.78, -0.5):
        parts.append((_ellipse(x, -0.14, 0.035, 0.035), False))
    return parts


def _shape_oven(j: Jitter) -> list[Part]:
    """Oven front: box, control panel with knobs, handle slot, window with a spit, feet."""
    hw, wx = j(0.75), j(0.55)
    parts = [
        (_rect(-hw, -0.85, hw, 0.85), True),
        (_rect(-hw, -0.55, hw, -0.5), False),
        (_rect(-wx, -0.3, wx, 0.6), False),
        (_rect(-wx * 0.9, -0.43, wx * 0.9, -0.37), False),
        (_bar((-wx, 0.15), (wx, 0.15), 0.07), True),
    ]
    for x in np.linspace(-0.55, 0.55, 4) * hw:
        parts.append((_ellipse(float(x), -0.7, 0.08, 0.08), False))
    feet = [(_rect(-hw, 0.85, -hw + 0.15, 0.97), True), (_rect(hw - 0.15, 0.85, hw, 0.97), True)]
    return parts + feet


def _shape_truck(j: Jitter) -> list[Part]:
    """Side view of a semi truck: trailer box, cab with window, several wheels."""
    top, r = -j(0.62), j(0.15)
    cab = _poly((0.42, -0.4), (0.74, -0.4), (0.95, -0.04), (0.95, 0.33), (0.42, 0.33))
    window = _poly((0.5, -0.33), (0.7, -0.33), (0.84, -0.08), (0.5, -0.08))
    parts = [
        (_rect(-0.95, top, 0.36, 0.3), True),
        (_rect(0.3, 0.2, 0.45, 0.33), True),
        (cab, True),
        (window, False),
    ]
    for x in (-0.78, -0.45, 0.12, 0.72):
        parts += _wheel(x, 0.42, r)
    return parts


# Category -> (silhouette family, size factor). The factors (measured over 40 seeds)
# roughly equalise the mean foreground area across categories, so that object area is
# not a class cue; sparse or elongated shapes are drawn larger.
_SHAPES: dict[str, tuple[Callable[..., list[Part]], float]] = {
    "airplane": (_shape_airplane, 1.24), "bear": (_shape_bear, 0.91),
    "bicycle": (_shape_bicycle, 1.05), "bird": (_shape_bird, 1.12),
    "boat": (_shape_boat, 1.0), "bottle": (_shape_bottle, 1.04),
    "car": (_shape_car, 1.1), "cat": (_shape_cat, 1.0),
    "chair": (_shape_chair, 1.39), "clock": (_shape_clock, 0.82),
    "dog": (_shape_dog, 1.23), "elephant": (_shape_elephant, 0.9),
    "keyboard": (_shape_keyboard, 1.1), "knife": (_shape_knife, 1.39),
    "oven": (_shape_oven, 1.06), "truck": (_shape_truck, 0.88),
}  # fmt: skip


def _silhouette(cat: str, rng: np.random.Generator) -> list[Part]:
    """Sample one silhouette: jittered part proportions, aspect stretch, flip, rotation."""

    def jitter(v: float) -> float:
        return v * rng.uniform(1 - _PART_JITTER, 1 + _PART_JITTER)

    fn = _SHAPES[cat][0]
    parts = fn(jitter, rng) if cat == "clock" else fn(jitter)
    flip = -1.0 if rng.random() < 0.5 else 1.0
    stretch = rng.uniform(1 - _ASPECT_JITTER, 1 + _ASPECT_JITTER)
    a = math.radians(rng.uniform(-_MAX_ROTATION_DEG, _MAX_ROTATION_DEG))
    rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    return [((pts * [flip * stretch, 1.0]) @ rot, filled) for pts, filled in parts]


def _place(
    parts: list[Part],
    w: int,
    h: int,
    size_factor: float,
    cfg: SynthConfig,
    rng: np.random.Generator,
) -> list[Part]:
    """Scale and translate a silhouette onto a w x h canvas (pixel coordinates)."""
    pts = np.concatenate([p for p, _ in parts])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    size = hi - lo
    scale = rng.uniform(*cfg.object_scale) * size_factor * cfg.short_side
    scale = min(scale / math.sqrt(size[0] * size[1]), w / size[0], h / size[1])
    bw, bh = size * scale
    cx = rng.uniform(bw / 2 - _MAX_OVERHANG * bw, w - bw / 2 + _MAX_OVERHANG * bw)
    cy = rng.uniform(bh / 2 - _MAX_OVERHANG * bh, h - bh / 2 + _MAX_OVERHANG * bh)
    offset = np.array([cx, cy]) - (lo + hi) / 2 * scale
    return [(p * scale + offset, filled) for p, filled in parts]


def _rasterise(parts: list[Part], w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw the parts supersampled and box-filter them down.

    Returns:
        ``(alpha, mask)``: soft coverage in [0, 1] for compositing and the bool mask
        (coverage >= 0.5), both [h, w]. Coverage further than 1 px from the mask
        (sub-pixel slivers) is dropped, so the image shows nothing the mask lacks.
    """
    ss = _SUPERSAMPLE
    canvas = Image.new("L", (w * ss, h * ss), 0)
    draw = ImageDraw.Draw(canvas)
    for pts, filled in parts:
        draw.polygon([tuple(xy) for xy in (pts * ss).tolist()], fill=255 if filled else 0)
    small = canvas.resize((w, h), Image.Resampling.BOX)
    mask = np.asarray(small) >= 128
    near = np.asarray(Image.fromarray(mask).filter(ImageFilter.MaxFilter(3)))
    return np.where(near, np.asarray(small, dtype=np.float32) / 255.0, 0.0), mask


# ------------------------------------------------------------------------ textures
# Each family maps rotated pixel coordinates (u, v) and a period p (px) to [0, 1].
Rng, Arr = np.random.Generator, np.ndarray
Texture = Callable[[Rng, Arr, Arr, float], Arr]


def _square(t: np.ndarray, sharp: float = 4.0) -> np.ndarray:
    """Anti-aliased square wave of phase t (cycles), in [0, 1]."""
    return np.clip(0.5 + sharp * np.sin(2 * np.pi * t), 0.0, 1.0)


def _lines(t: np.ndarray, p: float, width: float) -> np.ndarray:
    """Thin lines at integer t, `width` px wide for period p px, anti-aliased."""
    d = np.abs(t - np.round(t)) * p
    return np.clip(width / 2 - d + 0.5, 0.0, 1.0)


def _lowfreq(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth noise with feature size ~cell px, normalised to zero mean, unit std."""
    gh, gw = max(2, round(h / cell) + 2), max(2, round(w / cell) + 2)
    grid = Image.fromarray(rng.random((gh, gw)).astype(np.float32))
    field = np.asarray(grid.resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
    return (field - field.mean()) / (field.std() + 1e-6)


def _tex_stripes(rng: Rng, u: Arr, v: Arr, p: float) -> Arr:
    return _square(u / p)


def _tex_dots(rng: Rng, u: Arr, v: Arr, p: float) -> Arr:
    q = 1.3 * p
    du, dv = u / q - np.round(u / q), v / q - np.round(v / q)
    return np.clip((0.32 - np.hypot(du, dv)) * q + 0.5, 0.0, 1.0)


def _tex_checker(rng: Rng, u: Arr, v: Arr, p: float) -> Arr:
    q = 2.2 * p
    return 0.5 + 0.5 * np.tanh(3 * np.sin(2 * np.pi * u / q)) * np.tanh(
        3 * np.sin(2 * np.pi * v / q)
    )


def _tex_rings(rng: Rng, u: Arr, v: Arr, p: float) -> Arr:
    c = rng.uniform(-40, 40, size=2)
    return _square(np.hypot(u - u.mean() - c[0], v - v.mean() - c[1]) / p)


def _tex_zigzag(rng: Rng, u: Arr, v: Arr, p: float) -> Arr:
    q = 1.6 * p
    tri = np.abs((u / q) % 2.0 - 1.0)  # triangle wave along u
    return _square((v + 0.9 * q * tri) / p)


def _tex_crosshatch(rng: Rng, u: Arr, v: Arr, p: float) -> Arr:
    return np.maximum(_lines(u / p, p, 2.0), _lines(v / p, p, 2.0))


def _tex_blobs(rng: Rng, u: Arr, v: Arr, p: float) -> Arr:
    n = _lowfreq(rng, *u.shape, cell=1.4 * p)
    return 1.0 / (1.0 + np.exp(-4.0 * n))


def _tex_waves(rng: Rng, u: Arr, v: Arr, p: float) -> Arr:
    q = 2.5 * p
    return 0.5 + 0.5 * np.sin(2 * np.pi * (u + 0.5 * q * np.sin(2 * np.pi * v / q)) / p)


def _tex_hex(rng: Rng, u: Arr, v: Arr, p: float) -> Arr:
    q, r3 = 1.3 * p, math.sqrt(3)
    # Offset position relative to the nearest centre of two interleaved rectangular
    # lattices (1 x sqrt3, shifted by half a cell): together a hexagonal lattice.
    ax, ay = (u / q) % 1.0 - 0.5, (v / q) % r3 - r3 / 2
    bx, by = (u / q - 0.5) % 1.0 - 0.5, (v / q - r3 / 2) % r3 - r3 / 2
    near_a = ax**2 + ay**2 < bx**2 + by**2
    gx, gy = np.abs(np.where(near_a, ax, bx)), np.abs(np.where(near_a, ay, by))
    edge = 0.5 - np.maximum(0.5 * gx + 0.5 * r3 * gy, gx)  # distance to the cell border
    return 1.0 - np.clip(1.0 - edge * q, 0.0, 1.0)


def _tex_grid(rng: Rng, u: Arr, v: Arr, p: float) -> Arr:
    return np.maximum(_lines(u / p, p, 2.2), _lines(v / p, p, 2.2))


def _tex_speckle(rng: Rng, u: Arr, v: Arr, p: float) -> Arr:
    h, w = u.shape
    grain = rng.random((h // 2 + 1, w // 2 + 1)) < 0.4
    return np.repeat(np.repeat(grain, 2, axis=0), 2, axis=1)[:h, :w].astype(np.float32)


def _tex_scales(rng: Rng, u: Arr, v: Arr, p: float) -> Arr:
    q = 1.5 * p
    row = np.floor(v / q)
    lu = (u / q + 0.5 * (row % 2)) % 1.0 - 0.5
    lv = (v / q) % 1.0
    return np.clip(np.hypot(lu, lv) * 1.5, 0.0, 1.0)


def _tex_bricks(rng: Rng, u: Arr, v: Arr, p: float) -> Arr:
    row = np.floor(v / p)
    mortar = np.maximum(_lines(v / p, p, 1.6), _lines(u / (2 * p) + 0.5 * (row % 2), 2 * p, 1.6))
    return 1.0 - mortar


def _tex_plaid(rng: Rng, u: Arr, v: Arr, p: float) -> Arr:
    q = 2.4 * p
    bands = 0.5 * (_square(u / q, 2.0) + _square(v / q, 2.0))
    return np.maximum(0.8 * bands, _lines(u / q + 0.25, q, 1.2) + _lines(v / q + 0.25, q, 1.2))


def _tex_spiral(rng: Rng, u: Arr, v: Arr, p: float) -> Arr:
    du, dv = u - u.mean() + rng.uniform(-25, 25), v - v.mean() + rng.uniform(-25, 25)
    arms = 3 + rng.integers(0, 3)
    return _square(np.hypot(du, dv) / (1.5 * p) + arms * np.arctan2(dv, du) / (2 * np.pi))


def _tex_crosses(rng: Rng, u: Arr, v: Arr, p: float) -> Arr:
    q = 1.6 * p
    du, dv = np.abs(u / q - np.round(u / q)) * q, np.abs(v / q - np.round(v / q)) * q
    arm, half = 0.3 * q, 1.1
    bar_h = (du < arm) & (dv < half)
    bar_v = (dv < arm) & (du < half)
    return (bar_h | bar_v).astype(np.float32)


# Category -> (texture family, family orientation in degrees). Orientation is jittered
# by +/-10 deg per image; it matters only for the anisotropic families.
_TEXTURES: dict[str, tuple[Texture, float]] = {
    "airplane": (_tex_stripes, 35.0), "bear": (_tex_blobs, 0.0),
    "bicycle": (_tex_checker, 0.0), "bird": (_tex_scales, 0.0),
    "boat": (_tex_waves, 90.0), "bottle": (_tex_dots, 0.0),
    "car": (_tex_zigzag, 0.0), "cat": (_tex_hex, 0.0),
    "chair": (_tex_bricks, 0.0), "clock": (_tex_spiral, 0.0),
    "dog": (_tex_speckle, 0.0), "elephant": (_tex_crosshatch, 45.0),
    "keyboard": (_tex_plaid, 0.0), "knife": (_tex_rings, 0.0),
    "oven": (_tex_crosses, 0.0), "truck": (_tex_grid, 0.0),
}  # fmt: skip


def _texture(cat: str, h: int, w: int, short: int, rng: np.random.Generator) -> np.ndarray:
    """Sample one texture of the given category's family, values in [0, 1], shape [h, w]."""
    fn, angle = _TEXTURES[cat]
    a = math.radians(angle + rng.uniform(-10.0, 10.0))
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    x, y = x + rng.uniform(0, 50), y + rng.uniform(0, 50)  # random phase
    u, v = x * math.cos(a) + y * math.sin(a), -x * math.sin(a) + y * math.cos(a)
    period = short * rng.uniform(0.085, 0.12)
    return fn(rng, u, v, period)


def _hue(rng: np.random.Generator) -> np.ndarray:
    """A random zero-luma RGB tint direction."""
    c = 0.5 + 0.5 * np.cos(2 * np.pi * (rng.random() + np.array([0.0, 1 / 3, 2 / 3])))
    return c - c @ _LUMA


def _colourise(lum: Arr, mix: Arr, sat: float, rng: Rng) -> Arr:
    """Luminance field -> RGB, tinted between two random hues according to mix."""
    t0, t1 = _hue(rng), _hue(rng)
    tint = mix[..., None] * t1 + (1.0 - mix[..., None]) * t0
    return np.clip(lum[..., None] + sat * tint, 0.0, 1.0)


def _background(h: int, w: int, mean: float, short: int, rng: np.random.Generator) -> np.ndarray:
    """Class-independent background: gradient + low-frequency noise + faint grating."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32) / short
    a = rng.uniform(0, 2 * np.pi)
    ramp = x * math.cos(a) + y * math.sin(a)
    ramp = (ramp - ramp.mean()) * rng.uniform(0.0, 0.12)
    noise = _lowfreq(rng, h, w, cell=short * rng.uniform(0.25, 0.6)) * rng.uniform(0.02, 0.05)
    b = rng.uniform(0, 2 * np.pi)
    grating = np.sin(2 * np.pi * (x * math.cos(b) + y * math.sin(b)) / rng.uniform(0.15, 0.4))
    lum = mean + ramp + noise + grating * rng.uniform(0.0, 0.03)
    mix = np.clip(0.5 + ramp * 4, 0.0, 1.0)
    return _colourise(lum, mix, rng.uniform(0.05, 0.25), rng)


def render(
    shape_cat: str, texture_cat: str, rng: np.random.Generator, cfg: SynthConfig
) -> tuple[Image.Image, np.ndarray]:
    """Render one image: the silhouette of `shape_cat` filled with the texture of `texture_cat`.

    The rng is split into independent streams for layout, shape, texture and background, so
    ``render(a, b, rng_s)`` and ``render(a, c, rng_s)`` (same seed) share canvas, mask and
    background and differ only in the texture inside the object (cue-conflict views).

    Args:
        shape_cat: Category providing the silhouette (one of :data:`CATEGORIES`).
        texture_cat: Category providing the texture (one of :data:`CATEGORIES`).
        rng: Random generator; consumed.
        cfg: Dataset configuration (canvas size, aspect and object-scale ranges).

    Returns:
        ``(image, mask)``: an RGB image of size (W, H) and a bool foreground mask [H, W].
    """
    if shape_cat not in _SHAPES or texture_cat not in _TEXTURES:
        raise KeyError(f"unknown category in ({shape_cat!r}, {texture_cat!r}); use {CATEGORIES}")
    streams = rng.integers(2**63, size=4)  # independent layout/shape/texture/background
    layout, shape_rng, tex_rng, bg_rng = (np.random.default_rng(s) for s in streams)
    s = cfg.short_side
    long = round(s * layout.uniform(*cfg.aspect))
    w, h = (long, s) if layout.random() < 0.5 else (s, long)
    bright, dark = layout.uniform(*_BRIGHT_BAND), layout.uniform(*_DARK_BAND)
    obj_mean, bg_mean = (bright, dark) if layout.random() < 0.5 else (dark, bright)
    parts = _place(_silhouette(shape_cat, shape_rng), w, h, _SHAPES[shape_cat][1], cfg, shape_rng)
    alpha, mask = _rasterise(parts, w, h)
    pattern = _texture(texture_cat, h, w, s, tex_rng)
    obj_lum = obj_mean + tex_rng.uniform(*_TEXTURE_AMP) * 2.0 * (pattern - pattern.mean())
    obj = _colourise(obj_lum, pattern, tex_rng.uniform(0.15, 0.4), tex_rng)
    bg = _background(h, w, bg_mean, s, bg_rng)
    rgb = alpha[..., None] * obj + (1.0 - alpha[..., None]) * bg
    image = Image.fromarray(np.round(rgb * 255.0).astype(np.uint8))
    return image, mask


# ----------------------------------------------------------------------- dataset
def _image_name(cat: str, index: int) -> str:
    return f"{cat}_{index:05d}.png"


def texture_category(cfg: SynthConfig, split_id: int, class_id: int, index: int) -> str:
    """The texture category of one image: its own class's with probability
    ``cfg.texture_class_bound``, else uniform over :data:`CATEGORIES` (own class included).

    Drawn from a stream of its own (``[seed, split_id, class_id, index, _TEXTURE_DOMAIN]``),
    never from the image's rng, so shape, layout and background do not depend on the knob
    and 1.0 leaves every image as it was. Both draws are made for every image, so the images
    unbound at a value stay unbound at every lower value (nested sweeps).
    """
    own = CATEGORIES[class_id]
    if cfg.texture_class_bound >= 1.0:
        return own
    draw = np.random.default_rng([cfg.seed, split_id, class_id, index, _TEXTURE_DOMAIN])
    unbound, other = draw.random() >= cfg.texture_class_bound, draw.integers(len(CATEGORIES))
    return CATEGORIES[int(other)] if unbound else own


def _write_class(cfg: SynthConfig, root: Path, split_id: int, class_id: int) -> list[float]:
    """Render and save every image of one (split, class); return foreground fractions."""
    split, cat = SPLITS[split_id], CATEGORIES[class_id]
    count = cfg.train_per_class if split == "train" else cfg.val_per_class
    img_dir = root / split / category_wnid(cat)
    mask_dir = root / "masks" / split / category_wnid(cat)
    img_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    fractions = []
    for index in range(count):
        rng = np.random.default_rng([cfg.seed, split_id, class_id, index])
        image, mask = render(cat, texture_category(cfg, split_id, class_id, index), rng, cfg)
        name = _image_name(cat, index)
        image.save(img_dir / name, format="PNG")
        Image.fromarray(mask.astype(np.uint8) * 255).save(mask_dir / name, format="PNG")
        fractions.append(float(mask.mean()))
    return fractions


def _write_all(cfg: SynthConfig, root: Path, workers: int) -> dict[tuple[int, int], list[float]]:
    """Write all splits and classes, optionally in `workers` spawned processes."""
    jobs = [(s, c) for s in range(len(SPLITS)) for c in range(len(CATEGORIES))]
    if workers <= 1:
        return {job: _write_class(cfg, root, *job) for job in progress(jobs, "synth", unit="class")}
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = {job: pool.submit(_write_class, cfg, root, *job) for job in jobs}
        return {job: fut.result()
                for job, fut in progress(futures.items(), "synth", total=len(jobs), unit="class")}


def _build_meta(cfg: SynthConfig, fractions: dict[tuple[int, int], list[float]]) -> dict:
    """Summary written as meta.json (deterministic: no timestamps or timings)."""
    names = imagenet_names()
    categories = [
        {
            "name": c,
            "wnid": category_wnid(c),
            "imagenet_index": IMAGENET_INDEX[c],
            "lemma": names[IMAGENET_INDEX[c]],
        }
        for c in CATEGORIES
    ]
    per_split = {
        split: [f for (s, _), fs in sorted(fractions.items()) if s == sid for f in fs]
        for sid, split in enumerate(SPLITS)
    }
    per_split["all"] = [f for fs in per_split.values() for f in fs]
    return {
        "generator": GENERATOR_VERSION,
        "description": DESCRIPTION,
        "config": config_json(cfg),
        "categories": categories,
        "counts": {split: len(fs) for split, fs in per_split.items()},
        "mean_foreground_fraction": {
            split: round(float(np.mean(fs)), 4) if fs else None for split, fs in per_split.items()
        },
        "layout": "<split>/<wnid>/<cat>_<index:05d>.png; masks/<split>/<wnid>/<same> (L 0/255)",
    }


def config_json(cfg: SynthConfig) -> dict:
    """The config as stored in meta.json (tuples become lists; a later field at its
    neutral value, :data:`_NEUTRAL`, left out, as a dataset made before it holds it)."""
    out = json.loads(json.dumps(asdict(cfg)))
    return {k: v for k, v in out.items() if k not in _NEUTRAL or v != _NEUTRAL[k]}


def generate(cfg: SynthConfig, out: Path, workers: int = 1) -> dict:
    """Write the dataset to `out` atomically and return its summary (also in meta.json).

    Everything is written to the sibling ``.<name>.tmp-<pid>`` first, meta.json last, and
    the folder is then renamed to `out`; a partial dataset is never visible at `out`.

    Args:
        cfg: Dataset configuration.
        out: Target folder; if it already holds this exact config, nothing is regenerated.
        workers: Processes to render with (1: in-process). Workers are spawned, so a
            calling script needs the usual ``if __name__ == "__main__":`` guard.

    Returns:
        The meta.json content: generator version, config, categories (wnid, ImageNet index,
        lemma), per-split counts and mean foreground fractions.

    Raises:
        FileExistsError: `out` exists with a different config or is not a synth dataset.
    """
    out = Path(out)
    return atomic_dir(out, lambda tmp: _build_meta(cfg, _write_all(cfg, tmp, workers)),
                      lambda: existing_meta(out, config_json(cfg), GENERATOR_VERSION,
                                            "synth dataset"))


def main(argv: list[str] | None = None) -> int:
    """CLI for ``python -m pixmim data synth`` (argv is what follows ``data synth``).

    Args:
        argv: Arguments, e.g. ``["--out", "data/synth", "--seed", "0"]``; None: sys.argv.

    Returns:
        Process exit status (0 on success, 1 if `--out` holds a different dataset).
    """
    d = SynthConfig()
    parser = argparse.ArgumentParser(
        prog="python -m pixmim data synth", description="Generate the synthetic-shapes dataset."
    )
    parser.add_argument("--out", type=Path, required=True, help="output dataset folder")
    parser.add_argument("--seed", type=int, default=d.seed, help="dataset seed (%(default)s)")
    parser.add_argument("--train-per-class", type=int, default=d.train_per_class,
                        help="training images per class (%(default)s)")
    parser.add_argument("--val-per-class", type=int, default=d.val_per_class,
                        help="validation images per class (%(default)s)")
    parser.add_argument("--short-side", type=int, default=d.short_side,
                        help="canvas shorter side in px (%(default)s)")
    parser.add_argument("--texture-class-bound", type=float, default=d.texture_class_bound,
                        help="probability that an image's texture is its class's (%(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="rendering processes (%(default)s)")
    args = parser.parse_args(argv)
    cfg = SynthConfig(
        seed=args.seed,
        train_per_class=args.train_per_class,
        val_per_class=args.val_per_class,
        short_side=args.short_side,
        texture_class_bound=args.texture_class_bound,
    )
    start = time.perf_counter()
    try:
        meta = generate(cfg, args.out, workers=args.workers)
    except FileExistsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    counts, fg = meta["counts"], meta["mean_foreground_fraction"]["all"]
    print(
        f"synth: {args.out} train={counts['train']} val={counts['val']} "
        f"classes={len(CATEGORIES)} seed={cfg.seed} mean_fg={fg} "
        f"({time.perf_counter() - start:.1f}s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
