"""The real datasets' on-disk layouts, and the check of each configured root (torch-free).

Each dataset root of ``config.data`` has one declared layout (:mod:`pixmim.data.layouts`:
what the project's loaders read there). :func:`check_root` compares a folder with it by listing the
class level only (never the images under 1.28M files), and returns one line per problem
naming the config key and the path, e.g. ``data.coco_root: /datasets/coco: no
annotations/instances_train2017.json``. The Snakefile calls :func:`check_targets` at DAG
build with the requested targets (:func:`pixmim.workflow.targets.cli_targets`), so only the
roots those targets' jobs read are checked (``data.check_roots: false`` turns it off). The
fixture generator (:mod:`pixmim.data.generate.fixtures`) writes these same layouts.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

from pixmim import registry
from pixmim.data.imagenet_meta import imagenet_wnids
from pixmim.data.layouts import (
    ADE20K_SPLITS,
    COCO_ANN,
    COCO_SPLITS,
    IMAGE_SUFFIXES,
    IMAGENET_SPLITS,
)
from pixmim.workflow.catalogue import dense_task, experiments, plugins
from pixmim.workflow.jobs import EVAL_SETS, dense_root, image_root
from pixmim.workflow.targets import requested

WNID = re.compile(r"n\d{8}")

def _dirs(path: Path) -> list[str]:
    with os.scandir(path) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


def _first_file(path: Path, suffixes: tuple[str, ...] = (), look: int = 100) -> str | None:
    """The name of a file in ``path`` (ending in one of ``suffixes``, if given) among the
    first ``look`` entries the listing yields, or None."""
    with os.scandir(path) as it:
        for _, e in zip(range(look), it, strict=False):
            if e.is_file() and not e.name.startswith(".") \
                    and (not suffixes or e.name.lower().endswith(suffixes)):
                return e.name
    return None


def _images_in(path: Path, what: str) -> list[str]:
    """Problems of a class folder expected to hold image files directly."""
    if _first_file(path, IMAGE_SUFFIXES) is None:
        return [f"{what}: no image files ({', '.join(IMAGE_SUFFIXES[:3])}, ...) in "
                f"{path.name}/"]
    return []


def _wnid_folders(path: Path, allowed: list[str], label: str, count: int | None = None
                  ) -> list[str]:
    """Problems of a folder of wnid class folders drawn from ``allowed``."""
    names = _dirs(path)
    if not names:
        return ["no class folders (expected <wnid>/ folders such as n01440764/)"]
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        return [f"{len(unknown)} folder(s) not among the {label} wnids: {unknown[:3]}"]
    out = []
    if count is not None and len(names) != count:
        out.append(f"{len(names)} class folders, data.num_classes is {count}")
    return out + _images_in(path / names[0], "class folder")


def imagenet(path: Path, num_classes: int) -> list[str]:
    """``train/`` and ``val/`` each with ``num_classes`` ImageNet-1k wnid folders."""
    out = []
    for split in IMAGENET_SPLITS:
        if not (path / split).is_dir():
            out.append(f"no {split}/ folder")
            continue
        out += [f"{split}/: {p}" for p in
                _wnid_folders(path / split, imagenet_wnids(), "ImageNet-1k", num_classes)]
    return out


def masks(path: Path) -> list[str]:
    """``<split>/<wnid>/*.png``: at least the training split's masks."""
    split = path / "train"
    if not split.is_dir():
        return ["no train/ folder (masks are read as <split>/<wnid>/<stem>.png)"]
    names = _dirs(split)
    if not names or not all(WNID.fullmatch(n) for n in names):
        return ["train/: no <wnid>/ mask folders"]
    if _first_file(split / names[0], (".png",)) is None:
        return [f"train/{names[0]}/: no .png masks"]
    return []


def image_folder(path: Path) -> list[str]:
    """A pretraining ImageFolder: ``train/<category>/`` (labels unused: any names)."""
    if not (path / "train").is_dir():
        return ["no train/ folder"]
    names = _dirs(path / "train")
    if not names:
        return ["train/: no category folders"]
    return [f"train/: {p}" for p in _images_in(path / "train" / names[0], "category folder")]


def ade20k(path: Path) -> list[str]:
    """ADEChallengeData2016: images and annotations of both splits, each image's label map."""
    top = [f"no {d}/ folder" for d in ("images", "annotations") if not (path / d).is_dir()]
    if top:
        return top
    out = []
    for split in ADE20K_SPLITS:
        img, ann = path / "images" / split, path / "annotations" / split
        for folder in (img, ann):
            if not folder.is_dir():
                out.append(f"no {folder.relative_to(path).as_posix()}/")
        if img.is_dir() and ann.is_dir():
            first = _first_file(img, (".jpg",))
            if first is None:
                out.append(f"images/{split}/ holds no images")
            elif not (ann / f"{Path(first).stem}.png").is_file():
                out.append(f"annotations/{split}/ has no {Path(first).stem}.png for "
                           f"images/{split}/{first}")
    return out


def coco(path: Path) -> list[str]:
    """COCO 2017: both image folders and both instances JSONs."""
    out = [f"no {s}/ folder" for s in COCO_SPLITS if not (path / s).is_dir()]
    return out + [f"no {COCO_ANN.format(s)}" for s in COCO_SPLITS
                  if not (path / COCO_ANN.format(s)).is_file()]


def imagenet_c(path: Path) -> list[str]:
    """The 15 corruptions x severities 1-5, each of wnid folders."""
    # numpy (pixmim.evaluation): deferred, imported only where a real root is checked, so
    # that the DAG build and `budget` start without it
    from pixmim.evaluation.metrics import CORRUPTIONS, NUM_SEVERITIES

    missing = [f"{c}/{s}" for c in CORRUPTIONS for s in range(1, NUM_SEVERITIES + 1)
               if not (path / c / str(s)).is_dir()]
    if missing:
        more = f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
        return [f"no corruption/severity folders {missing[:3]}{more}"]
    first = path / CORRUPTIONS[0] / "1"
    return [f"{CORRUPTIONS[0]}/1/: {p}" for p in
            _wnid_folders(first, imagenet_wnids(), "ImageNet-1k")]


def subset(name: str) -> Any:
    """ImageNet-A / -R: ``<wnid>/`` folders among the set's 200 wnids."""
    def check(path: Path) -> list[str]:
        from pixmim.evaluation.metrics import subset_wnids  # numpy: deferred (above)

        return _wnid_folders(path, subset_wnids(name), name.replace("_", "-"))
    return check


def sketch(path: Path) -> list[str]:
    """ImageNet-Sketch: ``<wnid>/`` folders (the archive unpacks to ``sketch/<wnid>/``)."""
    if not _dirs(path) == ["sketch"]:
        return _wnid_folders(path, imagenet_wnids(), "ImageNet-1k")
    return [f"the wnid folders are under sketch/: set the key to {path / 'sketch'}"]


def cue_conflict(path: Path) -> list[str]:
    """Geirhos' ``<category>/<shape><i>-<texture><j>.png`` over the 16 categories."""
    # numpy: deferred (imagenet_c)
    from pixmim.evaluation.shape_bias import CATEGORIES, parse_cue_conflict_name

    names = _dirs(path)
    unknown = sorted(set(names) - set(CATEGORIES))
    if not names or unknown:
        return [f"expected the 16 category folders ({', '.join(CATEGORIES[:3])}, ...), "
                f"found {unknown[:3] or 'none'}"]
    first = _first_file(path / names[0], IMAGE_SUFFIXES)
    if first is None:
        return [f"{names[0]}/: no stimuli"]
    try:
        parse_cue_conflict_name(path / names[0] / first)
    except ValueError as err:
        return [f"{names[0]}/{first}: not <shape><i>-<texture><j>.png ({err})"]
    return []


# layout kind -> check(path, **params) -> problems
CHECKS = {"imagenet": imagenet, "masks": masks, "image_folder": image_folder,
          "ade20k": ade20k, "coco": coco, "imagenet_c": imagenet_c,
          "imagenet_a": subset("imagenet_a"), "imagenet_r": subset("imagenet_r"),
          "imagenet_sketch": sketch, "cue_conflict": cue_conflict}


# config key -> layout kind (a key of CHECKS); data.pretrain_roots.<name>: image_folder
KINDS = {"data.root": "imagenet", "data.masks_root": "masks", "data.ade20k_root": "ade20k",
         "data.coco_root": "coco",
         **{f"data.eval_roots.{k}": k for k in ("imagenet_c", "imagenet_a", "imagenet_r",
                                                "imagenet_sketch", "cue_conflict")}}


def kind_of(key: str) -> str:
    """The layout kind of a root's config key."""
    return "image_folder" if key.startswith("data.pretrain_roots.") else KINDS[key]


@functools.lru_cache(maxsize=64)
def _check(kind: str, path: str, num_classes: int | None) -> tuple[str, ...]:
    root = Path(path)
    if not root.exists():
        return ("folder not found",)
    if not root.is_dir():
        return ("not a folder",)
    params = {"num_classes": num_classes} if kind == "imagenet" else {}
    try:
        return tuple(CHECKS[kind](root, **params))
    except OSError as err:  # unreadable: permissions, a broken mount
        return (f"cannot list it ({err.strerror or err})",)


def check_root(key: str, path: str | Path, num_classes: int | None = None) -> list[str]:
    """One line per problem of the root ``path`` of config ``key`` (its layout:
    :func:`kind_of`); ``num_classes``: data.num_classes, the class count of data.root."""
    return [f"{key}: {path}: {p}" for p in _check(kind_of(key), str(path), num_classes)]


# ---------------------------------------------------------------- which jobs read which roots
def job_roots(config: dict[str, Any], exp: str, stage: str,
              exps: dict[str, dict[str, Any]] | None = None) -> dict[str, str]:
    """The real dataset roots one job reads: config key -> path. Empty for generated data
    (``data.source: synth``) and for a root left null."""
    data = config["data"]
    exps = experiments(config) if exps is None else exps
    if data["source"] == "synth" or exp not in exps:
        return {}
    spec = registry.stage(stage, plugins(config))
    dataset = exps[exp]["dataset"]
    if spec.consumes is None and exps[exp].get("checkpoint"):
        return {}  # a released checkpoint's import reads no images
    out: dict[str, str | None] = {}
    if spec.data == "images":
        pretraining = spec.consumes is None
        root = image_root(config, dataset, pretraining)
        if dataset != "default" and pretraining:
            out[f"data.pretrain_roots.{dataset}"] = root
        else:
            out["data.root"] = root
        if pretraining and exps[exp]["crop"] == "bg":
            out["data.masks_root"] = data.get("masks_root")
    elif spec.data == "views":
        roots = data.get("eval_roots") or {}
        for name in spec.params.get("eval_sets", tuple(EVAL_SETS)):
            out[f"data.eval_roots.{name}"] = roots.get(name)
    elif spec.data == "scenes":
        out[f"data.{dense_task(config, stage)}_root"] = dense_root(config, stage)
    return {k: v for k, v in out.items() if v}


def target_problems(config: dict[str, Any], targets: list[str] | set[str]) -> list[str]:
    """The problems of every real root the jobs of ``targets`` read (one line each)."""
    req = requested(config, targets)
    roots: dict[str, str] = {}
    exps = experiments(config)
    for exp, stage in sorted(req.jobs):
        roots.update(job_roots(config, exp, stage, exps))
    if "coverage" in req.analyses:
        roots.update(coverage_roots(config))
    out = []
    for key, path in sorted(roots.items()):
        out += check_root(key, path, config["data"]["num_classes"])
    return out


def coverage_roots(config: dict[str, Any]) -> dict[str, str]:
    """The coverage analysis (Figure 6): data.root and its masks (real data only)."""
    data = config["data"]
    if data["source"] == "synth":
        return {}
    out = {"data.root": data.get("root"), "data.masks_root": data.get("masks_root")}
    return {k: v for k, v in out.items() if v}


def check_targets(config: dict[str, Any], targets: list[str] | set[str]) -> None:
    """For the Snakefile: stop (a SystemExit, one line per problem) when a root the requested
    targets read is missing or not in its layout; ``data.check_roots: false`` skips it."""
    if not config["data"].get("check_roots", True):
        return
    problems = target_problems(config, targets)
    if problems:
        raise SystemExit("\n".join(problems))

