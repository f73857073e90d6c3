"""Stage ``shape_bias``: a fine-tuned classifier on the Geirhos cue-conflict stimuli (Fig. 8).

Each stimulus (square, ``<root>/<shape>/<shape><i>-<texture><j>.png``) is resized to the
network size (no crop) and normalised; the softmax is mapped to 16 categories by the mean
probability of each category's ImageNet indices (model-vs-human). Writes ``metrics.json``
(``shape_bias``, ``per_category``, counts; ``null`` where undefined, with the reason) and
``decisions.csv`` (file, shape, texture, decision).
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from pixmim.config import JobConfig
from pixmim.data.transforms import BICUBIC, Crop
from pixmim.engine import distributed
from pixmim.evaluation import shape_bias as SB
from pixmim.io import atomic_write
from pixmim.stages.common import (
    batches,
    complete,
    finetune_tags,
    load_model,
    run_main,
    tracked,
)


class Stimuli(Dataset):
    """The cue-conflict images as ``(img [3, S, S], index)``, resized to a square."""

    def __init__(self, files: list[Path], img_size: int) -> None:
        self.files = files
        self.transform = Crop([T.Resize((img_size, img_size), interpolation=BICUBIC)])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.files[i]) as img:
            return self.transform(img.convert("RGB")), i


def write_decisions(path: Path, root: Path, rows: list[tuple[Path, str, str, str]]) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["file", "shape", "texture", "decision"])
            w.writerows([(p.relative_to(root).as_posix(), s, t, d) for p, s, t, d in rows])

    atomic_write(path, write)


def summarize(shape: list[str], texture: list[str], decision: list[str]) -> dict[str, Any]:
    """The metrics of one model's decisions; ``nan`` values become ``None`` (JSON null)."""
    s_hits, t_hits = SB.cue_hits(shape, texture, decision)
    bias = SB.shape_bias(shape, texture, decision)
    per_cat = SB.shape_bias_per_category(shape, texture, decision)
    out = {
        "shape_bias": None if math.isnan(bias) else bias,
        "per_category": {c: None if math.isnan(v) else v for c, v in per_cat.items()},
        "n_images": len(shape),
        "n_dropped_same_cue": sum(s == t for s, t in zip(shape, texture, strict=True)),
        "n_shape_hits": s_hits, "n_texture_hits": t_hits,
    }
    if math.isnan(bias):
        out["shape_bias_undefined"] = ("no decision matched the shape or the texture of any "
                                       "cue-conflict image (0/0)")
    return out


def run(cfg: JobConfig, out: Path) -> dict[str, Any]:
    if cfg.eval.cue_conflict is None:
        raise ValueError("eval.cue_conflict: the shape_bias stage needs the cue-conflict folder")
    root = Path(cfg.eval.cue_conflict)
    files = SB.list_stimuli(root)
    if cfg.eval.max_batches:  # a dress rehearsal's cap: the stimuli of the batches read
        files = files[:cfg.eval.max_batches * cfg.eval.batch_size]
    cues = [SB.parse_cue_conflict_name(f) for f in files]
    dist = distributed.setup(cfg.train.device)
    model = load_model(cfg, dist)
    tags = finetune_tags(Path(cfg.finetune_dir))
    t0 = time.perf_counter()
    with tracked(cfg, out, dist, tags) as tracker:
        decision: list[str] = []
        for logits, _ in batches(model, Stimuli(files, cfg.data.img_size), cfg, dist.device,
                                 "cue-conflict"):
            decision += SB.probabilities_to_16(logits.softmax(-1))
        shape, texture = [s for s, _ in cues], [t for _, t in cues]
        write_decisions(out / "decisions.csv", root,
                        [(f, s, t, d) for f, (s, t), d in zip(files, cues, decision, strict=True)])
        if tracker:
            tracker.log_artifact(out / "decisions.csv")
    metrics = {
        "stage": "shape_bias", "experiment": cfg.experiment,
        "mlflow_run_id": tracker.run_id if tracker else None,
        "finetune_run_id": tags.get("finetune_run_id", ""),
        **summarize(shape, texture, decision), "wall_s": time.perf_counter() - t0,
    }
    if tracker:
        scalars = {"n_shape_hits": metrics["n_shape_hits"],
                   "n_texture_hits": metrics["n_texture_hits"]}
        if metrics["shape_bias"] is not None:
            scalars["shape_bias"] = metrics["shape_bias"]
        scalars.update({f"shape_bias/{c}": v for c, v in metrics["per_category"].items()
                        if v is not None})
        tracker.log_metrics(scalars, step=0)
    return complete(out, metrics, tracker, cfg, dist)


def main(argv: list[str] | None = None) -> int:
    return run_main("shape_bias", run, argv)

