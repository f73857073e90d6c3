"""Driver of the data-parallel equivalence tests: trains the segmentation config that
:func:`pixmim.downstream.seg.build_config` writes, through :func:`pixmim.downstream.common.run`,
as one process (``python tests/downstream/dp_seg.py ...``) or under
``python -m torch.distributed.run --standalone --nproc_per_node 2``.

What the tests need exact, and what the driver changes in the written config for it (the
code paths of the data-parallel run are the stage's):

* augmentation: the pipeline draws from each process's global RNG, so a process's k-th
  image gets the draws the one-process run gave another image. The driver resizes every
  image to the crop (no random resize, crop, flip or photometric draw).
* the loss: mmseg averages the cross-entropy over the labelled pixels of each process, and
  DDP averages those means; equal to the whole batch's mean only when every process has as
  many labelled pixels. The driver's data labels every pixel (``reduce_zero_label`` off,
  "other" a class).
* dropout in the heads (``dropout_ratio``): 0 (each process would draw its own masks).
* the sampler: seeded (``seed=0``); mmengine's InfiniteSampler deals one shuffled stream
  out by rank, so the processes' batches together are the one-process batch.
* BatchNorm (the UperNet recipe's SyncBN) stays: on CPU processes it is
  :class:`~pixmim.downstream.common.GlooSyncBatchNorm`. ``--norm gn`` swaps it for
  GroupNorm, for the accumulation test (BatchNorm over two micro-batches of 2 is not
  BatchNorm over 4).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from pixmim.config import DenseConfig, JobConfig, from_dict
from pixmim.engine import distributed


def job(root: str, batch: int, accum: int, iters: int) -> JobConfig:
    dense = {"root": root, "iters": iters, "val_interval": iters, "batch_size": batch,
             "crop_size": 64, "scale": [192, 64], "head_channels": 16, "num_workers": 0,
             "warmup_iters": 2, "runs": 1, "drop_path": 0.0, "lr": 1e-3}
    cfg = from_dict(JobConfig, {"experiment": "mae-base_dp", "stage": "segment_ade20k",
                                "method": "mae", "arch": "vit_cpu_patch8_64"})
    return dataclasses.replace(cfg, dense=from_dict(DenseConfig, {**dense, "accum_steps": accum}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--accum", type=int, default=1)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--norm", choices=["bn", "gn"], default="bn")
    a = p.parse_args()
    info = distributed.setup("cpu")  # as run_dense does before the Runner
    from pixmim.downstream import common, seg

    work = Path(a.work)
    path = seg.build_config(job(a.root, a.batch, a.accum, a.iters), work, 0, a.ckpt)
    c = common.load_config(path)  # its dump below without yapf
    ds = c.train_dataloader.dataset
    ds.pipeline = [dict(type="LoadImageFromFile"),
                   dict(type="LoadAnnotations", reduce_zero_label=False),
                   dict(type="Resize", scale=(64, 64), keep_ratio=False),
                   dict(type="PackSegInputs")]
    c.train_dataloader.sampler.seed = 0
    for key in ("val_dataloader", "test_dataloader"):
        c[key].dataset.pipeline[2].reduce_zero_label = False
    for head in (c.model.decode_head, c.model.auxiliary_head):
        head.dropout_ratio = 0.0
    if a.norm == "gn":
        for part in (c.model.decode_head, c.model.auxiliary_head, c.model.neck):
            part.norm_cfg = dict(type="GN", num_groups=4, requires_grad=True)
    mine = path.with_name(f"config_rank{info.rank}.py")
    c.dump(str(mine))
    common.run(mine, work)
    distributed.teardown(info)


if __name__ == "__main__":
    main()
