"""Stage ``detect_coco``: Mask R-CNN on COCO through mmdet, ViTDet style (PixMIM Sec. 5).

The pretrained ViT becomes a ViTDet backbone (window attention, a few global blocks,
relative position) with a simple feature pyramid and LayerNorm heads; ConvMAE's stages feed
mmdet's FPN. Trained end to end with layer-wise lr decay (Tables 14/15), then evaluated
with COCO's box and mask AP. Writes ``metrics.json`` (``ap_box``, ``ap_mask`` and the AP50
/ AP75 / size breakdowns, in points; ``chance_ap_box`` / ``chance_ap_mask``: the
image-independent guess of ``detection_chance``) and the generated mmdet config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pixmim.config import JobConfig
from pixmim.evaluation.chance import detection_chance
from pixmim.stages.common import run_main
from pixmim.stages.dense import import_task, run_dense

# CocoMetric keys (fractions) -> ours (points, as the paper reports AP).
KEYS = {"coco/bbox_mAP": "ap_box", "coco/bbox_mAP_50": "ap_box_50",
        "coco/bbox_mAP_75": "ap_box_75", "coco/segm_mAP": "ap_mask",
        "coco/segm_mAP_50": "ap_mask_50", "coco/segm_mAP_75": "ap_mask_75"}


def summarize(per_seed: list[dict[str, float]]) -> dict[str, Any]:
    """AP in points. A model with no detection above the score threshold has AP 0 (COCO's
    metric returns nothing at all then; we say so in ``no_detections``)."""
    out: dict[str, Any] = {}
    for src, dst in KEYS.items():
        out[dst] = sum(100.0 * r.get(src, 0.0) for r in per_seed) / len(per_seed)
    out["no_detections"] = [not any(k in r for k in KEYS) for r in per_seed]
    return out


def run(cfg: JobConfig, out: Path) -> dict[str, Any]:
    det = import_task("pixmim.downstream.det")
    # the best image-independent guess on the test split
    chance = detection_chance(Path(cfg.dense.root) / det.ANN.format("val"))
    return run_dense(cfg, out, det, cfg.dense.seeds(cfg.train.seed), summarize, chance)


def main(argv: list[str] | None = None) -> int:
    return run_main("detect_coco", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
