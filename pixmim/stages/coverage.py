"""Stage ``coverage``: object coverage J(F) of the pretraining crops (PixMIM Fig. 6).

``python -m pixmim coverage --root DATA_ROOT --masks MASKS_ROOT --img-size 64 --patch-size 8
--mask-ratio 0.75 --repeats 4 --seed 0 --out DIR`` measures, for every image of one split
with a foreground mask (``<masks>/<split>/<wnid>/<name>.png``, L 0/255) and ``repeats``
seeded draws, the share of the foreground each crop keeps, without and with MAE's random
masking (:mod:`pixmim.analysis.coverage`), and writes ``coverage.csv`` (``crop, masking,
J_mean, J_std, n``), ``metrics.json`` and ``coverage.png``. Needs no model and no config
file: its inputs are the dataset and these geometric settings.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pixmim.analysis import coverage as cv
from pixmim.data.transforms import CROPS
from pixmim.io import write_json, write_text
from pixmim.progress import progress
from pixmim.report import plots

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def find_pairs(root: Path, masks: Path, split: str) -> list[tuple[Path, Path]]:
    """(image, mask) pairs of ``root/split/<class>/*``, sorted; images without a mask skipped."""
    folder = root / split
    if not folder.is_dir():
        raise FileNotFoundError(f"--root: split folder not found: {folder}")
    pairs = []
    for img in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS):
        mask = masks / split / img.relative_to(folder).with_suffix(".png")
        if mask.is_file():
            pairs.append((img, mask))
    if not pairs:
        raise FileNotFoundError(f"--masks: no masks under {masks / split} for {folder}")
    return pairs


def load_foreground(img: Path, mask: Path) -> np.ndarray:
    """[H, W] bool foreground at the image's size (a mask of another size: nearest resize)."""
    with Image.open(img) as im:
        size = im.size  # header only
    m = Image.open(mask).convert("L")
    if m.size != size:
        m = m.resize(size, Image.Resampling.NEAREST)
    return np.asarray(m) > 127


def run(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    pairs = find_pairs(Path(args.root), Path(args.masks), args.split)[: args.limit or None]
    crops = {name: CROPS[name](args.img_size) for name in args.crops}
    values: dict[tuple[str, bool], list[float]] = {
        (name, masked): [] for name in crops for masked in (False, True)}
    skipped = 0
    for index, (img, mask) in enumerate(progress(pairs, "coverage", unit="image")):
        fg = load_foreground(img, mask)
        if not fg.any():
            skipped += 1
            continue
        for repeat in range(args.repeats):
            seed = cv.draw_seed(args.seed, repeat, index)
            for name, crop in crops.items():
                plain, masked = cv.image_coverage(crop, fg, args.patch_size, args.mask_ratio, seed)
                values[(name, False)].append(plain)
                values[(name, True)].append(masked)
    rows = cv.summarise(values)
    out = Path(args.out)
    write_text(out / "coverage.csv", plots.to_csv(rows))
    plots.plot_coverage(out / "coverage.csv", out / "coverage.png", 1 - args.mask_ratio)
    metrics = {
        "stage": "coverage", "rows": rows, "n_images": len(pairs) - skipped,
        "n_skipped_empty": skipped, "split": args.split, "img_size": args.img_size,
        "patch_size": args.patch_size, "mask_ratio": args.mask_ratio, "repeats": args.repeats,
        "seed": args.seed, "root": str(args.root), "masks": str(args.masks),
        "upper_bound_masked": int(((args.img_size // args.patch_size) ** 2) * (
            1 - args.mask_ratio)) / (args.img_size // args.patch_size) ** 2,
        "paper": {k: {"no_mask": a / 100, "mask": b / 100} for k, (a, b) in plots.PAPER.items()},
        "wall_s": time.perf_counter() - t0,
    }
    write_json(out / "metrics.json", metrics)
    return metrics


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pixmim coverage")
    p.add_argument("--root", required=True, help="ImageFolder root holding <split>/<wnid>/*")
    p.add_argument("--masks", default="",
                   help="masks root: <masks>/<split>/<wnid>/<name>.png (default <root>/masks)")
    p.add_argument("--img-size", type=int, required=True, help="network input size (px)")
    p.add_argument("--patch-size", type=int, required=True, help="mask unit on the output (px)")
    p.add_argument("--mask-ratio", type=float, default=0.75, help="MAE Sec. 4: 0.75")
    p.add_argument("--repeats", type=int, default=1, help="seeded draws per image")
    p.add_argument("--seed", type=int, default=0, help="seed of the crop and mask draws")
    p.add_argument("--split", default="train", help="split folder (default: train)")
    p.add_argument("--crops", default=",".join(CROPS), type=lambda s: s.split(","),
                   help=f"comma-separated crops (default: {','.join(CROPS)})")
    p.add_argument("--limit", type=int, default=0, help="use the first N images (0: all)")
    p.add_argument("--out", required=True, help="output folder")
    args = p.parse_args(argv)
    args.masks = args.masks or str(Path(args.root) / "masks")  # the synth dataset's layout
    unknown = [c for c in args.crops if c not in CROPS]
    if unknown:
        p.error(f"--crops: unknown {unknown}; registered: {sorted(CROPS)}")
    if args.repeats < 1 or not 0 <= args.mask_ratio < 1 or args.img_size % args.patch_size:
        p.error("need --repeats >= 1, 0 <= --mask-ratio < 1, --patch-size dividing --img-size")
    return args


def main(argv: list[str] | None = None) -> int:
    metrics = run(parse(argv))
    print("[coverage] " + ", ".join(
        f"{r['crop']}{'+mask' if r['masking'] else ''}={100 * r['J_mean']:.1f}%"
        for r in metrics["rows"]), file=sys.stderr)
    return 0
