"""Fixture datasets in the real datasets' own on-disk layouts: ``data fixtures --out DIR``.

Tiny (one small image per class and split; ~10 MB, seconds) but laid out, named and
labelled as the real ones, so a configuration whose ``data`` roots point here reads them
through the same loaders as a cluster run reads ImageNet & co. (the crops upscale). The
layouts are those of :mod:`pixmim.data.layouts`; :mod:`pixmim.workflow.roots` checks them
and every root passes that check. Under ``DIR``:

* ``imagenet/{train,val}/<wnid>/`` (``data.root``): the 1000 ImageNet-1k wnids, files named
  as ImageNet's (``n01440764_10026.JPEG``, ``ILSVRC2012_val_00000001.JPEG``); the odd
  files ImageNet holds are there too: a greyscale JPEG, a CMYK JPEG, a PNG named ``.JPEG``.
* ``imagenet-masks/<split>/<wnid>/<stem>.png`` (``data.masks_root``): 255 = foreground.
* ``places365/train/<category>/*.jpg`` (``data.pretrain_roots.places365``): 365 category
  folders (a few of Places365's names, the rest numbered stand-ins).
* ``ade20k/ADEChallengeData2016/{images,annotations}/{training,validation}/``
  (``data.ade20k_root``): ``ADE_train_%08d.jpg`` and label PNGs, 0 = other, 1..150 classes.
* ``coco/{train,val}2017/%012d.jpg`` and ``coco/annotations/instances_{train,val}2017.json``
  (``data.coco_root``): the 80 categories with their ids, polygons, and crowd regions as
  uncompressed RLE (``iscrowd: 1``).
* ``imagenet-c/<corruption>/<1..5>/<wnid>/`` (224 px), ``imagenet-a``, ``imagenet-r``
  (``<wnid>/`` over their 200 wnids), ``imagenet-sketch/<wnid>/`` (1000): the
  ``data.eval_roots`` keys.
* ``cue-conflict/<category>/<shape><i>-<texture><j>.png``: the real Geirhos stimuli when
  ``--stimuli`` names a folder of them (CC-BY-4.0: its licence file is copied along), else
  generated stand-ins (:func:`pixmim.data.generate.views.cue_conflict_image`).

Each root gets a ``meta.json`` (generator, root) and a ``fingerprint.json``, so the runs
that read it record where their numbers came from.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pixmim.data import layouts as L
from pixmim.data.generate.corruptions import CORRUPTIONS, SEVERITIES
from pixmim.data.generate.synth import CATEGORIES, SynthConfig
from pixmim.data.generate.views import ViewsConfig, cue_conflict_image, cue_conflict_name
from pixmim.data.imagenet_meta import imagenet_wnids, subset_wnids
from pixmim.io import atomic_dir, existing_meta
from pixmim.report.provenance import write_fingerprint

GENERATOR_VERSION = "pixmim-fixtures/1"
# what a table note says of data made by this generator (meta.json "description")
DESCRIPTION = ("fixture datasets in the real layouts (one image per class: they check that the "
               "pipeline runs; their numbers mean nothing)")
GEIRHOS = Path(__file__).resolve().parents[3].parent / "shared/data/geirhos-stimuli"
# config key -> folder under DIR (the rehearsal's overlay points each key at its folder)
ROOTS = {
    "data.root": "imagenet", "data.masks_root": "imagenet-masks",
    "data.pretrain_roots.places365": "places365",
    "data.ade20k_root": "ade20k/ADEChallengeData2016", "data.coco_root": "coco",
    "data.eval_roots.imagenet_c": "imagenet-c", "data.eval_roots.imagenet_a": "imagenet-a",
    "data.eval_roots.imagenet_r": "imagenet-r",
    "data.eval_roots.imagenet_sketch": "imagenet-sketch",
    "data.eval_roots.cue_conflict": "cue-conflict",
}
# (w, h) cycled over the images: ImageNet's are of every aspect, the crops upscale them
SIZES = ((100, 75), (75, 100), (96, 96), (120, 64), (64, 90))
ADE_SIZES = ((683, 512), (512, 683), (640, 480), (512, 384))  # ADE20K: ~512 px short side
ADE_CLASSES = 150  # ADE20K SceneParsing: 150 classes, 0 = "other" (reduce_zero_label)
COCO_SIZES = ((640, 480), (480, 640), (640, 427), (500, 375))  # COCO: 640 px long side
IMAGENET_C_SIZE = 224  # ImageNet-C is made at 224 x 224 (Hendrycks & Dietterich 2019)
PLACES365 = ("airfield", "airplane_cabin", "airport_terminal", "alcove", "alley",
             "amphitheater", "amusement_arcade", "amusement_park")  # its first category names
PLACES365_CLASSES = 365
# COCO 2017's 80 categories: id -> (name, supercategory); ids run to 90 with gaps
# (instances_val2017.json "categories"; Lin et al. 2014)
COCO_CATEGORIES = {
    1: ("person", "person"), 2: ("bicycle", "vehicle"), 3: ("car", "vehicle"),
    4: ("motorcycle", "vehicle"), 5: ("airplane", "vehicle"), 6: ("bus", "vehicle"),
    7: ("train", "vehicle"), 8: ("truck", "vehicle"), 9: ("boat", "vehicle"),
    10: ("traffic light", "outdoor"), 11: ("fire hydrant", "outdoor"),
    13: ("stop sign", "outdoor"), 14: ("parking meter", "outdoor"), 15: ("bench", "outdoor"),
    16: ("bird", "animal"), 17: ("cat", "animal"), 18: ("dog", "animal"),
    19: ("horse", "animal"), 20: ("sheep", "animal"), 21: ("cow", "animal"),
    22: ("elephant", "animal"), 23: ("bear", "animal"), 24: ("zebra", "animal"),
    25: ("giraffe", "animal"), 27: ("backpack", "accessory"), 28: ("umbrella", "accessory"),
    31: ("handbag", "accessory"), 32: ("tie", "accessory"), 33: ("suitcase", "accessory"),
    34: ("frisbee", "sports"), 35: ("skis", "sports"), 36: ("snowboard", "sports"),
    37: ("sports ball", "sports"), 38: ("kite", "sports"), 39: ("baseball bat", "sports"),
    40: ("baseball glove", "sports"), 41: ("skateboard", "sports"),
    42: ("surfboard", "sports"), 43: ("tennis racket", "sports"), 44: ("bottle", "kitchen"),
    46: ("wine glass", "kitchen"), 47: ("cup", "kitchen"), 48: ("fork", "kitchen"),
    49: ("knife", "kitchen"), 50: ("spoon", "kitchen"), 51: ("bowl", "kitchen"),
    52: ("banana", "food"), 53: ("apple", "food"), 54: ("sandwich", "food"),
    55: ("orange", "food"), 56: ("broccoli", "food"), 57: ("carrot", "food"),
    58: ("hot dog", "food"), 59: ("pizza", "food"), 60: ("donut", "food"),
    61: ("cake", "food"), 62: ("chair", "furniture"), 63: ("couch", "furniture"),
    64: ("potted plant", "furniture"), 65: ("bed", "furniture"),
    67: ("dining table", "furniture"), 70: ("toilet", "furniture"), 72: ("tv", "electronic"),
    73: ("laptop", "electronic"), 74: ("mouse", "electronic"), 75: ("remote", "electronic"),
    76: ("keyboard", "electronic"), 77: ("cell phone", "electronic"),
    78: ("microwave", "appliance"), 79: ("oven", "appliance"), 80: ("toaster", "appliance"),
    81: ("sink", "appliance"), 82: ("refrigerator", "appliance"), 84: ("book", "indoor"),
    85: ("clock", "indoor"), 86: ("vase", "indoor"), 87: ("scissors", "indoor"),
    88: ("teddy bear", "indoor"), 89: ("hair drier", "indoor"), 90: ("toothbrush", "indoor"),
}
ADE_IMAGES = {"training": 4, "validation": 2}
COCO_IMAGES = {"train2017": 4, "val2017": 2}
IN_C_WNIDS = 3  # wnid folders per corruption and severity (the real set: 1000)


# ------------------------------------------------------------------ pictures
def picture(rng: np.random.Generator, w: int, h: int) -> tuple[Image.Image, np.ndarray]:
    """A smooth random background with one ellipse object: (RGB image, mask [h, w] bool)."""
    grid = rng.uniform(0, 255, (3, 4, 3)).astype(np.uint8)
    img = np.array(Image.fromarray(grid).resize((w, h), Image.BILINEAR))
    cx, cy = rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.65) * h
    rx, ry = rng.uniform(0.15, 0.35) * w, rng.uniform(0.15, 0.35) * h
    yy, xx = np.mgrid[:h, :w]
    mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
    img[mask] = rng.integers(0, 256, 3, dtype=np.uint8)
    return Image.fromarray(img), mask


def _jpeg(img: Image.Image, path: Path, fmt: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt, quality=90) if fmt == "JPEG" else img.save(path, format=fmt)


# ------------------------------------------------------------------ the roots
def write_imagenet(out: Path, masks: Path, rng: np.random.Generator) -> dict:
    """``train/`` and ``val/`` over the 1000 wnids, and each image's mask."""
    odd = {1: "greyscale", 2: "cmyk", 3: "png"}  # ImageNet's odd train files, by class index
    val = 0
    for c, wnid in enumerate(imagenet_wnids()):
        for split in L.IMAGENET_SPLITS:
            w, h = SIZES[(c + (split == "val")) % len(SIZES)]
            img, mask = picture(rng, w, h)
            if split == "train":
                stem, kind = f"{wnid}_{10026 + c}", odd.get(c)
            else:
                val += 1
                stem, kind = f"ILSVRC2012_val_{val:08d}", None
            path = out / split / wnid / f"{stem}.JPEG"
            if kind == "greyscale":
                _jpeg(img.convert("L"), path)
            elif kind == "cmyk":
                _jpeg(img.convert("CMYK"), path)
            elif kind == "png":  # a PNG under a .JPEG name (as n02105855_2933.JPEG)
                _jpeg(img, path, "PNG")
            else:
                _jpeg(img, path)
            m = masks / split / wnid / f"{stem}.png"
            m.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask.astype(np.uint8) * 255).save(m)
    return {"classes": 1000, "train": 1000, "val": val, "odd_train_files": odd}


def write_places365(out: Path, rng: np.random.Generator) -> dict:
    names = list(PLACES365) + [f"scene_{i:03d}" for i in range(PLACES365_CLASSES
                                                                 - len(PLACES365))]
    for c, name in enumerate(names):
        w, h = SIZES[c % len(SIZES)]
        _jpeg(picture(rng, w, h)[0], out / "train" / name / f"{1:08d}.jpg")
    return {"categories": len(names)}


def _polygon(rng: np.random.Generator, w: int, h: int, n: int = 6) -> list[float]:
    """A star-shaped polygon inside the canvas: [x0, y0, x1, y1, ...]."""
    cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
    r = rng.uniform(0.1, 0.25) * min(w, h)
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = r * rng.uniform(0.6, 1.0, n)
    pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
    return [round(float(v), 2) for v in pts.ravel()]


def write_ade20k(out: Path, rng: np.random.Generator) -> dict:
    """ADE_{train,val}_%08d.jpg with label PNGs: 0 = other, polygons of classes 1..150."""
    for split, n in ADE_IMAGES.items():
        tag = "train" if split == "training" else "val"
        for i in range(n):
            w, h = ADE_SIZES[i % len(ADE_SIZES)]
            img = picture(rng, w, h)[0]
            label = Image.new("L", (w, h), 0)
            draw, pen = ImageDraw.Draw(label), ImageDraw.Draw(img)
            for _ in range(3):
                cls = int(rng.integers(1, ADE_CLASSES + 1))
                poly = _polygon(rng, w, h)
                draw.polygon(poly, fill=cls)
                pen.polygon(poly, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
            stem = f"ADE_{tag}_{i + 1:08d}"
            _jpeg(img, out / "images" / split / f"{stem}.jpg")
            (out / "annotations" / split).mkdir(parents=True, exist_ok=True)
            label.save(out / "annotations" / split / f"{stem}.png")
    return dict(ADE_IMAGES)


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE of a bool mask [h, w]: run lengths in column-major order,
    starting with a run of zeros (``{"size": [h, w], "counts": [...]}``)."""
    flat = mask.T.ravel().astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    if flat[0]:
        runs = [0, *runs]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(r) for r in runs]}


def write_coco(out: Path, rng: np.random.Generator) -> dict:
    """Images and instances JSONs: two polygon objects and one crowd region per image."""
    ids = sorted(COCO_CATEGORIES)
    cats = [{"id": i, "name": COCO_CATEGORIES[i][0], "supercategory": COCO_CATEGORIES[i][1]}
            for i in ids]
    image_id, ann_id, counts = 0, 0, {}
    for split, n in COCO_IMAGES.items():
        images, anns = [], []
        for i in range(n):
            image_id += 1
            w, h = COCO_SIZES[i % len(COCO_SIZES)]
            img = picture(rng, w, h)[0]
            pen = ImageDraw.Draw(img)
            for crowd in (0, 0, 1):
                ann_id += 1
                cat = int(rng.choice(ids))
                if crowd:  # a crowd region: a block, as uncompressed RLE
                    x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
                    mask = np.zeros((h, w), bool)
                    mask[y0:y0 + h // 4, x0:x0 + w // 4] = True
                    seg: dict | list = uncompressed_rle(mask)
                    bbox = [float(x0), float(y0), float(w // 4), float(h // 4)]
                    area = float(mask.sum())
                    pen.rectangle([x0, y0, x0 + w // 4 - 1, y0 + h // 4 - 1], fill=(90, 90, 90))
                else:
                    poly = _polygon(rng, w, h)
                    xs, ys = poly[0::2], poly[1::2]
                    seg = [poly]
                    bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
                    area = 0.5 * abs(float(np.dot(xs, np.roll(ys, 1))
                                           - np.dot(ys, np.roll(xs, 1))))
                    pen.polygon(poly, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
                anns.append({"id": ann_id, "image_id": image_id, "category_id": cat,
                             "segmentation": seg, "area": round(area, 2),
                             "bbox": [round(v, 2) for v in bbox], "iscrowd": crowd})
            name = f"{image_id:012d}.jpg"
            _jpeg(img, out / split / name)
            images.append({"id": image_id, "file_name": name, "height": h, "width": w,
                           "license": 1})
        ann = out / L.COCO_ANN.format(split)
        ann.parent.mkdir(parents=True, exist_ok=True)
        ann.write_text(json.dumps({
            "info": {"description": f"PixMIM Bench COCO-layout fixture ({GENERATOR_VERSION})"},
            "licenses": [{"id": 1, "name": "CC-BY-4.0", "url": ""}],
            "images": images, "annotations": anns, "categories": cats}), encoding="utf-8")
        counts[split] = {"images": len(images), "annotations": len(anns)}
    return counts


def write_imagenet_c(out: Path, rng: np.random.Generator) -> dict:
    wnids = imagenet_wnids()[:IN_C_WNIDS]
    for c in CORRUPTIONS:
        for s in SEVERITIES:
            for k, wnid in enumerate(wnids):
                img = picture(rng, IMAGENET_C_SIZE, IMAGENET_C_SIZE)[0]
                _jpeg(img, out / c / str(s) / wnid / f"ILSVRC2012_val_{k + 1:08d}.JPEG")
    return {"corruptions": len(CORRUPTIONS), "severities": len(SEVERITIES), "wnids": len(wnids)}


def write_wnid_set(out: Path, wnids: list[str], suffix: str, prefix: str,
                   rng: np.random.Generator) -> dict:
    """``<wnid>/<prefix>_0<suffix>``: one image per wnid."""
    for c, wnid in enumerate(wnids):
        w, h = SIZES[c % len(SIZES)]
        _jpeg(picture(rng, w, h)[0], out / wnid / f"{prefix}_0{suffix}")
    return {"wnids": len(wnids)}


def write_cue_conflict(out: Path, stimuli: Path | None) -> dict:
    """The real stimuli (``stimuli/cue-conflict`` and the licence) or generated stand-ins."""
    if stimuli is not None and (stimuli / "cue-conflict").is_dir():
        shutil.copytree(stimuli / "cue-conflict", out)
        for name in ("DATASET_LICENSE", "README.md"):
            if (stimuli / name).is_file():
                shutil.copy2(stimuli / name, out / name)
        return {"source": "geirhos", "images": sum(1 for _ in out.glob("*/*.png"))}
    cfg, synth = ViewsConfig(), SynthConfig()
    for k, shape in enumerate(CATEGORIES):
        texture = CATEGORIES[(k + 1) % len(CATEGORIES)]
        img = cue_conflict_image(shape, texture, 1, cfg, synth)[0]
        _jpeg(img, out / shape / cue_conflict_name(shape, texture, 1, 1), "PNG")
    return {"source": "generated", "images": len(CATEGORIES)}


def _build(tmp: Path, seed: int, stimuli: Path | None) -> dict:
    rng = np.random.default_rng(seed)
    folders = {k: tmp / v for k, v in ROOTS.items()}
    wnids = imagenet_wnids()
    written = {
        "imagenet": write_imagenet(folders["data.root"], folders["data.masks_root"], rng),
        "places365": write_places365(folders["data.pretrain_roots.places365"], rng),
        "ade20k": write_ade20k(folders["data.ade20k_root"], rng),
        "coco": write_coco(folders["data.coco_root"], rng),
        "imagenet-c": write_imagenet_c(folders["data.eval_roots.imagenet_c"], rng),
        "imagenet-a": write_wnid_set(folders["data.eval_roots.imagenet_a"],
                                     subset_wnids("imagenet_a"), ".jpg", "a", rng),
        "imagenet-r": write_wnid_set(folders["data.eval_roots.imagenet_r"],
                                     subset_wnids("imagenet_r"), ".jpg", "art", rng),
        "imagenet-sketch": write_wnid_set(folders["data.eval_roots.imagenet_sketch"], wnids,
                                          ".JPEG", "sketch", rng),
        "cue-conflict": write_cue_conflict(folders["data.eval_roots.cue_conflict"], stimuli),
    }
    for key, folder in folders.items():  # each root: who made it, and its fingerprint
        (folder / "meta.json").write_text(json.dumps(
            {"generator": GENERATOR_VERSION, "description": DESCRIPTION,
             "config": {"seed": seed, "root": ROOTS[key]}}, indent=2) + "\n", encoding="utf-8")
        write_fingerprint(folder)
    return {"generator": GENERATOR_VERSION, "description": DESCRIPTION,
            "config": _config(seed, stimuli),
            "roots": ROOTS, "written": written}


def _config(seed: int, stimuli: Path | None) -> dict:
    """The settings a fixtures folder is a function of (its meta.json ``config``)."""
    real = stimuli is not None and (Path(stimuli) / "cue-conflict").is_dir()
    return {"seed": seed, "cue_conflict": "geirhos" if real else "generated"}


def generate(out: Path, seed: int = 0, stimuli: Path | None = GEIRHOS) -> dict:
    """Write every fixture root under ``out`` atomically; return the meta."""
    out = Path(out)
    return atomic_dir(out, lambda tmp: _build(tmp, seed, stimuli),
                      lambda: existing_meta(out, _config(seed, stimuli), GENERATOR_VERSION,
                                            "fixtures folder"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m pixmim data fixtures",
        description="Write tiny datasets in the real datasets' on-disk layouts (ImageNet, "
                    "its masks, Places365, ADE20K, COCO, ImageNet-C/-A/-R/-Sketch, "
                    "cue-conflict), one root per data config key.")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="image seed (%(default)s)")
    p.add_argument("--stimuli", type=Path, default=GEIRHOS,
                   help="folder of the Geirhos stimuli (cue-conflict/, DATASET_LICENSE); "
                        "absent: generated stand-ins (%(default)s)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    try:
        generate(args.out, args.seed, args.stimuli)
    except FileExistsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"fixtures: {args.out} ({len(ROOTS)} roots, seed {args.seed}, "
          f"{time.perf_counter() - start:.1f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
