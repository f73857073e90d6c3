"""Stage ``robustness``: a fine-tuned classifier on ImageNet-C, -A, -R and -Sketch (Table 4).

Inputs (``eval.*`` roots; a root left unset is skipped and listed in ``skipped``):

* ImageNet-C ``<root>/<corruption>/<1..5>/<wnid>/*``: images are pre-made at the network size
  (224 px), so only a centre crop is applied (a different size is first rescaled, never
  cropped to a fraction of the image). Per corruption x severity top-1 error (fraction),
  the mCE (% of AlexNet; Hendrycks & Dietterich 2019) and the unnormalised mean error (%).
* ImageNet-A / -R ``<root>/<wnid>/*``: top-1 (%) over the 200 subset classes (logits sliced).
* ImageNet-Sketch ``<root>/<wnid>/*``: plain 1000-way top-1 (%).

The MLflow run is tagged with the fine-tune run (``finetune_run_id``, ``mlflow.parentRunId``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image
from torchvision import transforms as T
from torchvision.datasets import ImageFolder

from pixmim import registry
from pixmim.config import JobConfig
from pixmim.data.imagenet_meta import imagenet_wnids
from pixmim.data.transforms import BICUBIC, Crop, build_eval_transform
from pixmim.engine import distributed
from pixmim.evaluation import metrics as M
from pixmim.stages.common import (
    batches,
    complete,
    finetune_tags,
    load_model,
    run_main,
    tracked,
)

SETS = registry.stage("robustness").params["eval_sets"]  # the sets it declares


class ShorterSideTo:
    """Resize the shorter side to ``size`` (bicubic) unless it already is that size."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, img: Image.Image) -> Image.Image:
        return img if min(img.size) == self.size else T.Resize(self.size, BICUBIC)(img)


def imagenet_c_transform(img_size: int) -> Crop:
    """Centre crop only (ImageNet-C is pre-made at 224 px), then normalise."""
    return Crop([ShorterSideTo(img_size), T.CenterCrop(img_size)])


def labelled_folder(root: str | Path, transform, wnids: list[str], key: str) -> ImageFolder:
    """``<root>/<wnid>/*`` whose targets are positions of the folder names in ``wnids``."""
    if not Path(root).is_dir():
        raise FileNotFoundError(f"{key}: folder not found: {root}")
    ds = ImageFolder(str(root), transform=transform)
    ds.target_transform = M.folder_targets(ds.classes, wnids, key).__getitem__
    return ds


def top1(model, ds, cfg, device, desc: str, indices: list[int] | None = None) -> float:
    """Top-1 (%) of ``model`` on ``ds`` (argmax over ``indices`` only, if given)."""
    hits = sum(M.top1_hits(lg, y, indices) for lg, y in batches(model, ds, cfg, device, desc))
    return 100.0 * hits / len(ds)


def check_imagenet_c(root: Path) -> list[str]:
    """Fail early unless all 15 corruptions x 5 severities exist; return ignored folders."""
    if not root.is_dir():
        raise FileNotFoundError(f"eval.imagenet_c: folder not found: {root}")
    missing = [f"{c}/{s}" for c in M.CORRUPTIONS for s in range(1, M.NUM_SEVERITIES + 1)
               if not (root / c / str(s)).is_dir()]
    if missing:
        raise ValueError(f"eval.imagenet_c: {root} lacks corruption/severity folders "
                         f"{missing[:6]}{' ...' if len(missing) > 6 else ''}")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in M.CORRUPTIONS)


def open_imagenet_c(root: Path, img_size: int) -> dict[str, Any]:
    """The 15 x 5 ImageNet-C folders as datasets (checked before any inference)."""
    ignored = check_imagenet_c(root)
    tf, wnids = imagenet_c_transform(img_size), imagenet_wnids()
    sets = {(c, s): labelled_folder(root / c / str(s), tf, wnids, "eval.imagenet_c")
            for c in M.CORRUPTIONS for s in range(1, M.NUM_SEVERITIES + 1)}
    return {"sets": sets, "ignored": ignored}


def eval_imagenet_c(model, data: dict[str, Any], cfg: JobConfig, device) -> dict[str, Any]:
    errors: dict[str, list[float]] = {c: [] for c in M.CORRUPTIONS}
    for (c, s), ds in data["sets"].items():
        errors[c].append(1.0 - top1(model, ds, cfg, device, f"IN-C {c} {s}") / 100.0)
    return {"mce": M.mce(errors), "imagenet_c_unnormalized_ce": M.unnormalized_ce(errors),
            "imagenet_c_ce": M.normalized_ce(errors), "imagenet_c_errors": errors,
            "imagenet_c_ignored_folders": data["ignored"],
            "n": sum(len(ds) for ds in data["sets"].values())}


def open_subset(name: str) -> Callable[[Path, int], ImageFolder]:
    """``<root>/<wnid>/*`` of a 200-class subset, targets = positions in the subset list."""
    return lambda root, img_size: labelled_folder(
        root, build_eval_transform(img_size), M.subset_wnids(name), f"eval.{name}")


def eval_subset(name: str) -> Callable[..., dict[str, Any]]:
    """Top-1 on a 200-class subset (``imagenet_a`` / ``imagenet_r``): sliced logits."""
    return lambda model, ds, cfg, device: {
        f"{name}_top1": top1(model, ds, cfg, device, name, M.subset_indices(name)), "n": len(ds)}


def open_sketch(root: Path, img_size: int) -> ImageFolder:
    return labelled_folder(root, build_eval_transform(img_size), imagenet_wnids(),
                           "eval.imagenet_sketch")


def eval_sketch(model, ds: ImageFolder, cfg: JobConfig, device) -> dict[str, Any]:
    return {"imagenet_sketch_top1": top1(model, ds, cfg, device, "imagenet_sketch"),
            "n": len(ds)}


# test set -> (open: (root, img_size) -> data, evaluate: (model, data, cfg, device) -> dict)
EVALUATORS: dict[str, tuple[Callable, Callable]] = {
    "imagenet_c": (open_imagenet_c, eval_imagenet_c),
    "imagenet_a": (open_subset("imagenet_a"), eval_subset("imagenet_a")),
    "imagenet_r": (open_subset("imagenet_r"), eval_subset("imagenet_r")),
    "imagenet_sketch": (open_sketch, eval_sketch),
}
# Every key metrics.json holds, None when its test set is skipped.
RESULT_KEYS = ("mce", "imagenet_c_unnormalized_ce", "imagenet_c_ce", "imagenet_c_errors",
               "imagenet_c_ignored_folders", "imagenet_a_top1", "imagenet_r_top1",
               "imagenet_sketch_top1")


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The MLflow view: top-level numbers plus ``imagenet_c_error/<corruption>/<severity>``."""
    out = {k: v for k, v in metrics.items() if isinstance(v, float)}
    for c, errs in (metrics.get("imagenet_c_errors") or {}).items():
        out.update({f"imagenet_c_error/{c}/{s}": e for s, e in enumerate(errs, 1)})
    return out


def run(cfg: JobConfig, out: Path) -> dict[str, Any]:
    dist = distributed.setup(cfg.train.device)
    model = load_model(cfg, dist)
    tags = finetune_tags(Path(cfg.finetune_dir))
    t0 = time.perf_counter()
    roots = {name: getattr(cfg.eval, name) for name in SETS}
    skipped = {name: f"eval.{name} is not set" for name, root in roots.items() if root is None}
    # open (and check) every test set before the first forward pass
    data = {name: EVALUATORS[name][0](Path(root), cfg.data.img_size)
            for name, root in roots.items() if root is not None}
    results: dict[str, Any] = dict.fromkeys(RESULT_KEYS)
    counts = {}
    with tracked(cfg, out, dist, tags) as tracker:
        for name, d in data.items():
            res = EVALUATORS[name][1](model, d, cfg, dist.device)
            counts[name] = res.pop("n")
            results.update(res)
    metrics = {
        "stage": "robustness", "experiment": cfg.experiment,
        "mlflow_run_id": tracker.run_id if tracker else None,
        "finetune_run_id": tags.get("finetune_run_id", ""),
        **results, "n_images": counts, "skipped": skipped, "wall_s": time.perf_counter() - t0,
    }
    if tracker:
        tracker.log_metrics(scalar_metrics(metrics), step=0)
    return complete(out, metrics, tracker, cfg, dist)


def main(argv: list[str] | None = None) -> int:
    return run_main("robustness", run, argv)
