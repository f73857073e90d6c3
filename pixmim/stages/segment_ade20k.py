"""Stage ``segment_ade20k``: UperNet on ADE20K through mmsegmentation (PixMIM Sec. 5).

The pretrained encoder (with a zero-initialised relative position bias per block; ConvMAE:
its stages) is fine-tuned end to end with UperNet + an FCN auxiliary head, layer-wise lr
decay and AdamW (Tables 12/13), once per seed; ``miou`` is the mean over the seeds (the paper
averages two runs). Writes ``metrics.json`` (``miou``, ``aacc``, ``macc``, per seed) and the
generated mmseg config of each seed (``mm_config_seed<s>.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pixmim.config import JobConfig
from pixmim.stages.common import run_main
from pixmim.stages.dense import import_task, mean, run_dense


def summarize(per_seed: list[dict[str, float]]) -> dict[str, Any]:
    """mmseg's IoUMetric reports percentages: mIoU, aAcc, mAcc."""
    return {"miou": mean(per_seed, "mIoU"), "aacc": mean(per_seed, "aAcc"),
            "macc": mean(per_seed, "mAcc"), "miou_per_seed": [r["mIoU"] for r in per_seed]}


def run(cfg: JobConfig, out: Path) -> dict[str, Any]:
    return run_dense(cfg, out, import_task("pixmim.downstream.seg"), cfg.dense.seeds, summarize)


def main(argv: list[str] | None = None) -> int:
    return run_main("segment_ade20k", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())

# The registry's declaration. Cost: 512 px crops, (512/224)^2 = 5.2x the tokens of a
# pretraining image, trained end to end (an assumption).
STAGES = [dict(
    name="segment_ade20k", help="UperNet on ADE20K (mmsegmentation)", rule="dense",
    job="dense", section="segmentation", data="scenes", columns={"miou": ("miou", "mIoU")},
    cost=dict(kind="iters", relative=16.0),
)]
