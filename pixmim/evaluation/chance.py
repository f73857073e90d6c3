"""Chance levels of the segmentation metrics (torch-free): what a model that ignores the image
scores, so a dense result can be read against it.

The reference is mmseg's ``IoUMetric`` on label maps loaded with ``reduce_zero_label``
(value 0 = "other" and 255 are ignored; value v > 0 is class v - 1): per class
``IoU = |pred & gt| / |pred | gt|`` over the labelled pixels of the whole split, a class with
an empty union is NaN and left out of the mean. The best image-independent prediction paints
every pixel with the most frequent class k: its IoU is ``n_k / N`` (the union is every
labelled pixel), every other class present scores 0, so

    chance mIoU = max_k n_k / N / (number of classes present),  chance aAcc = max_k n_k / N.

Both in percent, as mmseg reports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

IGNORE = 255  # mmseg's ignore_index


def label_counts(ann_dir: str | Path, reduce_zero_label: bool = True) -> np.ndarray:
    """Labelled pixels per class [C] over every ``*.png`` label map in ``ann_dir`` (after
    ``reduce_zero_label``: raw value v > 0 counts for class v - 1; 0 and 255 are ignored)."""
    files = sorted(Path(ann_dir).glob("*.png"))
    if not files:
        raise FileNotFoundError(f"{ann_dir}: no *.png label maps")
    counts = np.zeros(256, np.int64)
    for f in files:
        counts += np.bincount(np.asarray(Image.open(f)).ravel(), minlength=256)[:256]
    counts[IGNORE] = 0
    if reduce_zero_label:
        counts = counts[1:IGNORE]
    return counts


def constant_prediction(counts: Sequence[int]) -> dict[str, float]:
    """mIoU and aAcc (percent) of the best constant prediction, from labelled pixels per
    class; ``present`` is the number of classes in the mean."""
    n = np.asarray(counts, np.float64)
    total, present = n.sum(), int((n > 0).sum())
    if total <= 0:
        raise ValueError("no labelled pixels: chance levels are undefined")
    best = float(n.max() / total)
    return {"miou": 100.0 * best / present, "aacc": 100.0 * best, "present": present}


def segmentation_chance(ann_dir: str | Path, reduce_zero_label: bool = True) -> dict[str, float]:
    """Chance mIoU / aAcc (percent) of the label maps in ``ann_dir``."""
    return constant_prediction(label_counts(ann_dir, reduce_zero_label))


def detection_chance(ann_file: str | Path) -> dict[str, float]:
    """COCO box and mask AP (points) of an image-independent guess: on every image, the
    whole canvas as one detection per category, scored by the category's share of the
    split's instances (the best image-independent ranking). Scored by pycocotools' COCOeval,
    the evaluator behind mmdet's ``CocoMetric``; an empty split is an error."""
    import contextlib
    import io

    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
    anns = gt.loadAnns(gt.getAnnIds())
    if not anns:
        raise ValueError(f"{ann_file}: no instances: chance levels are undefined")
    share = {c: 0 for c in gt.getCatIds()}
    for a in anns:
        share[a["category_id"]] += 1
    dets = []
    for img in gt.loadImgs(gt.getImgIds()):
        h, w = img["height"], img["width"]
        rle = mask_utils.encode(np.asfortranarray(np.ones((h, w), np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        for cat, n in share.items():
            dets.append({"image_id": img["id"], "category_id": cat, "bbox": [0, 0, w, h],
                         "segmentation": rle, "score": n / len(anns)})
    out = {}
    with contextlib.redirect_stdout(io.StringIO()):
        res = gt.loadRes(dets)
        for kind, key in (("bbox", "ap_box"), ("segm", "ap_mask")):
            ev = COCOeval(gt, res, kind)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            out[key] = max(0.0, 100.0 * float(ev.stats[0]))
    return out
