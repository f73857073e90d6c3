"""Driver of the two-process detection test: one seed of the COCO-layout scenes through
:func:`pixmim.downstream.det.run_seed` (under torchrun: every rank), each rank's test metrics
to ``<work>/metrics_rank<r>.json``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pixmim.config import JobConfig, from_dict
from pixmim.engine import distributed


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--ckpt", required=True)
    a = p.parse_args()
    info = distributed.setup("cpu")  # as run_dense does before the Runner
    from pixmim.downstream import det

    cfg = from_dict(JobConfig, {
        "experiment": "mae-base_dp", "stage": "detect_coco", "method": "mae",
        "arch": "vit_cpu_patch8_64",
        "dense": dict(root=a.root, iters=2, val_interval=2, batch_size=2, crop_size=96,
                      window_size=4, head_channels=16, num_workers=0, warmup_iters=1, runs=1)})
    work = Path(a.work)
    result = det.run_seed(cfg, work, 0, a.ckpt)
    (work / f"metrics_rank{info.rank}.json").write_text(json.dumps(result["metrics"]))
    distributed.teardown(info)


if __name__ == "__main__":
    main()
