"""The toy k-NN stage (declared in ``tests.plugins.knn_probe``): ``run`` and ``main``.

k-nearest-neighbour top-1 on the frozen encoder's features: each validation image takes
the majority label of its ``k`` most cosine-similar training images.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pixmim.config import JobConfig
from pixmim.data.datasets import build_dataset
from pixmim.data.transforms import build_eval_transform
from pixmim.engine import distributed
from pixmim.engine.loop import make_loader
from pixmim.stages.common import complete, load_encoder, parent_tags, run_main, tracked


@torch.no_grad()
def features(encoder, loader, device) -> tuple[torch.Tensor, torch.Tensor]:
    feats, labels = [], []
    for x, y, *_ in loader:
        feats.append(F.normalize(encoder.forward_probe_features(x.to(device)).float(), dim=1))
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def run(cfg: JobConfig, out: Path) -> dict[str, Any]:
    dist = distributed.setup(cfg.train.device)
    pre_dir, d, k = Path(cfg.pretrain_dir), cfg.data, int(cfg.options["k"])
    encoder = load_encoder(cfg, pre_dir).to(dist.device)
    sets = {split: build_dataset(d.root, split, build_eval_transform(d.img_size),
                                 d.synth_index_map) for split in ("train", "val")}
    t0 = time.perf_counter()
    pre_run, tags = parent_tags(pre_dir, "pretrain")
    with tracked(cfg, out, dist, tags) as tracker:
        train_f, train_y = features(encoder, make_loader(sets["train"], cfg.train, train=False,
                                                         dist=dist), dist.device)
        val_f, val_y = features(encoder, make_loader(sets["val"], cfg.train, train=False,
                                                     dist=dist), dist.device)
        nearest = (val_f @ train_f.T).topk(min(k, len(train_y)), dim=1).indices
        pred = torch.mode(train_y[nearest], dim=1).values
        metrics = {"stage": cfg.stage, "experiment": cfg.experiment,
                   "mlflow_run_id": tracker.run_id if tracker else None,
                   "pretrain_run_id": pre_run, "k": k,
                   "top1": 100.0 * (pred == val_y).float().mean().item(),
                   "wall_s": time.perf_counter() - t0}
        if tracker:
            tracker.log_metrics({"top1": metrics["top1"]}, step=0)
        return complete(out, metrics, tracker, cfg, dist)


def main(argv: list[str] | None = None) -> int:
    return run_main("knn_probe", run, argv)
