"""Stage ``segment_ade20k``: UperNet on ADE20K through mmsegmentation (PixMIM Sec. 5).

The pretrained encoder (with a zero-initialised relative position bias per block; ConvMAE:
its stages) is fine-tuned end to end with UperNet + an FCN auxiliary head, layer-wise lr
decay and AdamW (Tables 12/13), ``dense.runs`` times; ``miou`` is the mean over the runs (the
paper averages two). Writes ``metrics.json`` (``miou``, ``aacc``, ``macc``, per seed) and the
generated mmseg config of each seed (``mm_config_seed<s>.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pixmim.config import JobConfig
from pixmim.evaluation.chance import segmentation_chance
from pixmim.stages.common import run_main
from pixmim.stages.dense import import_task, mean, run_dense


def summarize(per_seed: list[dict[str, float]]) -> dict[str, Any]:
    """mmseg's IoUMetric reports percentages: mIoU, aAcc, mAcc."""
    return {"miou": mean(per_seed, "mIoU"), "aacc": mean(per_seed, "aAcc"),
            "macc": mean(per_seed, "mAcc"), "miou_per_seed": [r["mIoU"] for r in per_seed]}


def run(cfg: JobConfig, out: Path) -> dict[str, Any]:
    seg = import_task("pixmim.downstream.seg")
    # the best image-independent prediction on the test split, for the table's note
    chance = segmentation_chance(Path(cfg.dense.root) / "annotations" / "validation")
    return run_dense(cfg, out, seg, cfg.dense.seeds(cfg.train.seed), summarize,
                     {"miou": chance["miou"], "aacc": chance["aacc"]})


def main(argv: list[str] | None = None) -> int:
    return run_main("segment_ade20k", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())

