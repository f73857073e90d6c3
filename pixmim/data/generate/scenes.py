"""Synthetic scenes: several synth-shapes objects per image, in ADE20K and COCO layouts.

Each scene is a class-independent background with 2-4 objects drawn from the SAME
silhouette and texture families as :mod:`pixmim.data.generate.synth` (so a backbone pretrained on
synth transfers), composited in order so that later objects occlude earlier ones. One
render per scene is written twice, in the on-disk layouts that the OpenMMLab dataset
classes read, so downstream configs change their ``data_root`` and the class metainfo:

* ``ade20k/``: the ADEChallengeData2016 layout read by mmseg's ``ADE20KDataset``
  (``images/{training,validation}/*.jpg``, ``annotations/{training,validation}/*.png``;
  single-channel labels, 0 = "other", dropped by ``reduce_zero_label``; k+1 = category k).
* ``coco/``: the COCO 2017 layout read by mmdet's ``CocoDataset``
  (``{train,val}2017/*.jpg``, ``annotations/instances_{train,val}2017.json``; instance
  masks as compressed RLE, Lin et al. 2014, "Microsoft COCO", cocodataset.org/#format-data).

mmseg's ``ADE20KDataset`` accepts only subsets of its 150 names as ``metainfo`` classes, so
a 16-class seg config uses ``BaseSegDataset`` (``img_suffix=".jpg"``,
``seg_map_suffix=".png"``, ``reduce_zero_label=True``, classes/palette from
``ade20k/classes.json``); mmdet's ``CocoDataset`` needs ``metainfo=dict(classes=...)`` with
the 16 names in COCO-id order (``meta.json`` "coco_categories").

Instances are the VISIBLE pixels after occlusion. An object whose visible area would be
below ``min_visible_fraction`` of the canvas or ``min_visible_px`` is dropped BEFORE
drawing (decided top-down, so the image, label map and annotations always agree).

Torch-free (numpy + Pillow + pycocotools), deterministic: scene i of split s uses
``np.random.default_rng([seed, s, i])``.
"""

from __future__ import annotations

import argparse
import colorsys
import io
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from pixmim.data.generate.synth import (
    _BRIGHT_BAND,
    _DARK_BAND,
    _SHAPES,
    _TEXTURE_AMP,
    CATEGORIES,
    SPLITS,
    Part,
    _background,
    _colourise,
    _rasterise,
    _silhouette,
    _texture,
)  # fmt: skip
from pixmim.io import atomic_dir, existing_meta
from pixmim.progress import progress

GENERATOR_VERSION = "pixmim-scenes/1"
# what a table note says of data made by this generator (meta.json "description")
DESCRIPTION = "generated multi-object scenes in ADE20K and COCO layouts (16 classes)"

# Standard COCO 2017 ids, names and supercategories (instances_*2017.json "categories";
# the 80-class list at cocodataset.org/#explore, ids 1-90 with gaps). All 16 synth
# categories are COCO classes; "person" (id 1) has no synth counterpart.
COCO_CATEGORIES: dict[str, tuple[int, str]] = {
    "bicycle": (2, "vehicle"), "car": (3, "vehicle"), "airplane": (5, "vehicle"),
    "truck": (8, "vehicle"), "boat": (9, "vehicle"), "bird": (16, "animal"),
    "cat": (17, "animal"), "dog": (18, "animal"), "elephant": (22, "animal"),
    "bear": (23, "animal"), "bottle": (44, "kitchen"), "knife": (49, "kitchen"),
    "chair": (62, "furniture"), "keyboard": (76, "electronic"), "oven": (79, "appliance"),
    "clock": (85, "indoor"),
}  # fmt: skip

# Per split: (ADE20K folder, COCO folder).
_FOLDERS = {"train": ("training", "train2017"), "val": ("validation", "val2017")}
_MAX_OVERHANG = 0.3  # fraction of an object's bbox allowed past each canvas edge
_JPEG_QUALITY = 95


@dataclass(frozen=True)
class SceneConfig:
    """Parameters of the scenes dataset (all fields have defaults)."""

    seed: int = 0  # scene i of split s uses rng([seed, s, i])
    train: int = 64  # training scenes
    val: int = 16  # validation scenes
    height: int = 64  # canvas height in px (fixed for the dataset)
    width: int = 96  # canvas width in px
    min_objects: int = 2  # objects drawn per scene, before dropping hidden ones
    max_objects: int = 4
    # Object size (geometric mean of its bbox sides, times synth's per-category factor)
    # relative to the canvas's shorter side.
    object_scale: tuple[float, float] = (0.25, 0.55)
    min_visible_fraction: float = 0.02  # drop objects with less visible canvas area ...
    min_visible_px: int = 16  # ... or fewer visible pixels

    def __post_init__(self) -> None:
        """Reject configs that cannot produce a dataset."""
        if min(self.train, self.val) < 0 or min(self.height, self.width) < 16:
            raise ValueError(f"invalid SceneConfig sizes: {self}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(f"invalid SceneConfig object counts: {self}")
        lo, hi = self.object_scale
        if not 0.0 < lo <= hi:
            raise ValueError(f"invalid SceneConfig object_scale: {self}")


def palette() -> list[list[int]]:
    """One distinct RGB colour per category (evenly spaced hues), for label visualisation."""
    n = len(CATEGORIES)
    rgb = [colorsys.hsv_to_rgb(k / n, 0.75 if k % 2 else 0.55, 0.95) for k in range(n)]
    return [[round(255 * c) for c in col] for col in rgb]


def _place(parts: list[Part], cat: str, cfg: SceneConfig, rng: np.random.Generator) -> list[Part]:
    """Scale a silhouette to ~object_scale x the short side; random centre, may be cut."""
    pts = np.concatenate([p for p, _ in parts])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    size = hi - lo
    target = rng.uniform(*cfg.object_scale) * _SHAPES[cat][1] * min(cfg.height, cfg.width)
    scale = min(target / math.sqrt(size[0] * size[1]), cfg.width / size[0], cfg.height / size[1])
    bw, bh = size * scale
    cx = rng.uniform(bw / 2 - _MAX_OVERHANG * bw, cfg.width - bw / 2 + _MAX_OVERHANG * bw)
    cy = rng.uniform(bh / 2 - _MAX_OVERHANG * bh, cfg.height - bh / 2 + _MAX_OVERHANG * bh)
    offset = np.array([cx, cy]) - (lo + hi) / 2 * scale
    return [(p * scale + offset, filled) for p, filled in parts]


def render_scene(
    rng: np.random.Generator, cfg: SceneConfig
) -> tuple[Image.Image, np.ndarray, list[tuple[int, np.ndarray]]]:
    """Render one scene.

    Args:
        rng: Random generator; consumed.
        cfg: Dataset configuration (canvas size, object count and size ranges).

    Returns:
        ``(image, label, instances)``: RGB image of size (W, H); label map [H, W] uint8
        (0 = background, k+1 = category k); instances as ``(k, visible mask [H, W] bool)``
        in drawing order (bottom first), disjoint, each at least the minimum visible area.
    """
    h, w, short = cfg.height, cfg.width, min(cfg.height, cfg.width)
    # synth's luminance bands: all objects in one band, the background in the other.
    obj_band, bg_band = (_BRIGHT_BAND, _DARK_BAND)[:: 1 if rng.random() < 0.5 else -1]
    bg = _background(h, w, rng.uniform(*bg_band), short, np.random.default_rng(rng.integers(2**63)))
    objects = []  # (k, alpha, mask, rng for the texture), bottom first
    for _ in range(rng.integers(cfg.min_objects, cfg.max_objects + 1)):
        k = int(rng.integers(len(CATEGORIES)))
        obj_rng = np.random.default_rng(rng.integers(2**63))
        parts = _place(_silhouette(CATEGORIES[k], obj_rng), CATEGORIES[k], cfg, obj_rng)
        objects.append((k, *_rasterise(parts, w, h), obj_rng))
    min_px = max(cfg.min_visible_px, cfg.min_visible_fraction * h * w)
    covered, kept = np.zeros((h, w), bool), []
    for obj in reversed(objects):  # top-down: visibility depends only on kept objects above
        visible = obj[2] & ~covered
        if visible.sum() >= min_px:
            kept.append((obj, visible))
            covered |= obj[2]
    rgb, label, instances = bg, np.zeros((h, w), np.uint8), []
    for (k, alpha, _, obj_rng), visible in reversed(kept):
        pattern = _texture(CATEGORIES[k], h, w, short, obj_rng)
        amp = obj_rng.uniform(*_TEXTURE_AMP)
        lum = obj_rng.uniform(*obj_band) + amp * 2.0 * (pattern - pattern.mean())
        obj = _colourise(lum, pattern, obj_rng.uniform(0.15, 0.4), obj_rng)
        rgb = alpha[..., None] * obj + (1.0 - alpha[..., None]) * rgb
        label[visible] = k + 1
        instances.append((k, visible))
    return Image.fromarray(np.round(rgb * 255.0).astype(np.uint8)), label, instances


# ----------------------------------------------------------------------- dataset
def _coco_annotation(k: int, mask: np.ndarray, image_id: int) -> dict:
    """COCO instance annotation (without its id) for one visible mask."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return {
        "image_id": image_id,
        "category_id": COCO_CATEGORIES[CATEGORIES[k]][0],
        "bbox": [float(x0), float(y0), float(xs.max() - x0 + 1), float(ys.max() - y0 + 1)],
        "area": float(mask.sum()),
        "iscrowd": 0,
        "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode()},
    }


def _dirs(root: Path, split: str) -> tuple[Path, Path, Path]:
    """(ADE20K image, ADE20K annotation, COCO image) folders of a split."""
    ade, coco = _FOLDERS[split]
    return root / "ade20k/images" / ade, root / "ade20k/annotations" / ade, root / "coco" / coco


def _write_chunk(cfg: SceneConfig, root: Path, split_id: int, start: int, stop: int) -> tuple:
    """Render scenes [start, stop) of a split into both layouts.

    Returns:
        ``(annotations, pixel_counts)``: COCO annotations without ids, in scene order, and
        label-value pixel counts [17].
    """
    img_dir, ann_dir, coco_dir = _dirs(root, SPLITS[split_id])
    annotations, counts = [], np.zeros(len(CATEGORIES) + 1, np.int64)
    for index in range(start, stop):
        image, label, instances = render_scene(
            np.random.default_rng([cfg.seed, split_id, index]), cfg
        )
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=_JPEG_QUALITY)
        name = f"scene_{index:05d}"
        for folder in (img_dir, coco_dir):
            (folder / f"{name}.jpg").write_bytes(buf.getvalue())
        Image.fromarray(label).save(ann_dir / f"{name}.png", format="PNG")
        annotations += [_coco_annotation(k, m, index + 1) for k, m in instances]
        counts += np.bincount(label.ravel(), minlength=len(counts))
    return annotations, counts


def _coco_json(cfg: SceneConfig, split_id: int, annotations: list[dict]) -> dict:
    """The instances_<split>2017.json content (no timestamps: byte-identical reruns)."""
    count = cfg.train if SPLITS[split_id] == "train" else cfg.val
    images = [
        {"id": i + 1, "file_name": f"scene_{i:05d}.jpg", "height": cfg.height, "width": cfg.width}
        for i in range(count)
    ]
    categories = sorted(
        ({"id": cid, "name": n, "supercategory": s} for n, (cid, s) in COCO_CATEGORIES.items()),
        key=lambda c: c["id"],
    )
    return {
        "info": {"description": f"PixMIM synthetic scenes ({GENERATOR_VERSION})", "version": "1"},
        "licenses": [],
        "images": images,
        "annotations": [{"id": i + 1, **a} for i, a in enumerate(annotations)],
        "categories": categories,
    }


def _write_all(cfg: SceneConfig, root: Path, workers: int, chunk: int = 16) -> dict:
    """Write both layouts for all splits; return {split: (instances, pixel counts [17])}."""
    for folder in [*(d for split in SPLITS for d in _dirs(root, split)), root / "coco/annotations"]:
        folder.mkdir(parents=True)
    sizes = {"train": cfg.train, "val": cfg.val}
    jobs = [(s, i, min(i + chunk, sizes[split])) for s, split in enumerate(SPLITS)
            for i in range(0, sizes[split], chunk)]  # fmt: skip
    spawn = get_context("spawn")
    results = []
    with (ProcessPoolExecutor(workers, mp_context=spawn) if workers > 1 else nullcontext() as pool,
          progress(desc="scenes", total=cfg.train + cfg.val, unit="scene") as bar):
        pending = [pool.submit(_write_chunk, cfg, root, *j) if pool else None for j in jobs]
        for job, fut in zip(jobs, pending, strict=True):
            results.append(fut.result() if fut else _write_chunk(cfg, root, *job))
            bar.update(job[2] - job[1])
    out = {}
    for s, split in enumerate(SPLITS):
        mine = [r for job, r in zip(jobs, results, strict=True) if job[0] == s]
        anns = [a for r in mine for a in r[0]]
        counts = sum((r[1] for r in mine), np.zeros(len(CATEGORIES) + 1, np.int64))
        text = json.dumps(_coco_json(cfg, s, anns)) + "\n"
        name = f"instances_{_FOLDERS[split][1]}.json"
        (root / "coco" / "annotations" / name).write_text(text, encoding="utf-8")
        out[split] = (len(anns), counts)
    classes = {"classes": list(CATEGORIES), "palette": palette(), "reduce_zero_label": True}
    (root / "ade20k" / "classes.json").write_text(json.dumps(classes) + "\n", encoding="utf-8")
    return out


def _build_meta(cfg: SceneConfig, written: dict) -> dict:
    """Summary written as meta.json (deterministic: no timestamps or timings)."""
    names = ("other", *CATEGORIES)
    freq = {
        split: {n: round(float(c) / max(int(counts.sum()), 1), 6)
                for n, c in zip(names, counts, strict=True)}
        for split, (_, counts) in written.items()
    }
    return {
        "generator": GENERATOR_VERSION,
        "description": DESCRIPTION,
        "config": _config_json(cfg),
        "counts": {"train": cfg.train, "val": cfg.val},
        "instances": {split: n for split, (n, _) in written.items()},
        "pixel_frequency": freq,  # label-map pixel fraction per class ("other" = 0)
        # In id order = json order: mmdet's metainfo "classes" must be these names.
        "coco_categories": dict(sorted(((c, i) for c, (i, _) in COCO_CATEGORIES.items()),
                                       key=lambda t: t[1])),
        "layout": "ade20k/{images,annotations}/{training,validation}/scene_<i:05d>.{jpg,png}; "
        "coco/{train,val}2017/scene_<i:05d>.jpg; coco/annotations/instances_{train,val}2017.json",
    }


def _config_json(cfg: SceneConfig) -> dict:
    """The config as stored in meta.json (tuples become lists)."""
    return json.loads(json.dumps(asdict(cfg)))


def generate(cfg: SceneConfig, out: Path, workers: int = 1) -> dict:
    """Write both layouts to `out` atomically and return the summary (also in meta.json).

    Args:
        cfg: Dataset configuration.
        out: Target folder (gets ``ade20k/``, ``coco/``, ``meta.json``); if it already holds
            this exact config, nothing is regenerated.
        workers: Processes to render with (1: in-process); spawned, as in synth.

    Returns:
        The meta.json content: generator version, config, scene and instance counts per
        split, per-class label pixel frequencies per split.

    Raises:
        FileExistsError: `out` exists with a different config or is not a scenes dataset.
    """
    out = Path(out)
    return atomic_dir(out, lambda tmp: _build_meta(cfg, _write_all(cfg, tmp, workers)),
                      lambda: existing_meta(out, _config_json(cfg), GENERATOR_VERSION,
                                            "scenes dataset"))


def main(argv: list[str] | None = None) -> int:
    """CLI for ``python -m pixmim data scenes`` (argv is what follows ``data scenes``).

    Returns:
        Process exit status (0 on success, 1 if `--out` holds a different dataset).
    """
    d = SceneConfig()
    parser = argparse.ArgumentParser(
        prog="python -m pixmim data scenes",
        description="Generate multi-object scenes in ADE20K and COCO layouts.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output dataset folder")
    fields = {"seed": "dataset seed", "train": "training scenes", "val": "validation scenes",
              "height": "canvas height in px", "width": "canvas width in px",
              "min_objects": "fewest objects drawn per scene",
              "max_objects": "most objects drawn per scene"}
    for name, help_ in fields.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name),
                            help=f"{help_} (%(default)s)")
    parser.add_argument("--object-scale", type=float, nargs=2, default=d.object_scale,
                        metavar=("LO", "HI"),
                        help="object size range relative to the canvas's shorter side")
    parser.add_argument("--workers", type=int, default=1, help="rendering processes (%(default)s)")
    args = parser.parse_args(argv)
    cfg = SceneConfig(**{name: getattr(args, name) for name in fields},
                      object_scale=tuple(args.object_scale))
    start = time.perf_counter()
    try:
        meta = generate(cfg, args.out, workers=args.workers)
    except FileExistsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    counts, inst = meta["counts"], meta["instances"]
    print(
        f"scenes: {args.out} train={counts['train']} val={counts['val']} "
        f"instances={inst['train']}/{inst['val']} size={cfg.height}x{cfg.width} "
        f"seed={cfg.seed} ({time.perf_counter() - start:.1f}s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
