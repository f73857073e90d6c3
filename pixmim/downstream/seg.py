"""ADE20K semantic segmentation with UperNet (mmsegmentation 1.x), PixMIM Sec. 5 / Table 12.

Importing this module registers, in mmseg's registries:

* the dense classes of every encoder family (``MODULES`` of ``pixmim/families/<family>/
  nets.py``: the plain ViT's ``PixMIMSegViT`` through mmseg's ``Feature2Pyramid``, ConvViT's
  pyramid straight into the UperNet head); a job's backbone and neck are its family's
  ``segmentation``;
* ``PixMIMScenes``: the embedded ADE20K-layout scenes with their own class list
  (``classes.json`` in the data root); a root without it is read as ``ADE20KDataset``,
  so the same config reads the real dataset by changing the root only.

:func:`build_config` writes the job's config on top of mmseg's own base configs
(``mmseg::_base_/models/upernet_mae.py``, ``datasets/ade20k.py``, ``default_runtime.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pixmim.config import JobConfig
from pixmim.downstream import common

common.setup()

from mmseg.datasets import BaseSegDataset  # noqa: E402
from mmseg.registry import DATASETS, MODELS  # noqa: E402

from pixmim import families  # noqa: E402

common.register()


common.register_families(MODELS)


EMBEDDED_MARKER = "classes.json"


class ScenesSegDataset(BaseSegDataset):
    """ADE20K-layout scenes with the class list of ``<data_root>/classes.json``."""

    def __init__(self, data_root: str, **kwargs: Any) -> None:
        meta = json.loads((Path(data_root) / EMBEDDED_MARKER).read_text(encoding="utf-8"))
        kwargs.setdefault("metainfo", dict(classes=tuple(meta["classes"]),
                                           palette=[list(p) for p in meta["palette"]]))
        super().__init__(data_root=data_root, img_suffix=".jpg", seg_map_suffix=".png",
                         reduce_zero_label=bool(meta.get("reduce_zero_label", True)), **kwargs)


if "PixMIMScenes" not in DATASETS.module_dict:
    DATASETS.register_module(name="PixMIMScenes", module=ScenesSegDataset)

BASE = ["mmseg::_base_/models/upernet_mae.py", "mmseg::_base_/datasets/ade20k.py",
        "mmseg::_base_/default_runtime.py"]


def dataset_type(root: str) -> tuple[str, int]:
    """(mmseg dataset type, number of classes) for a data root."""
    marker = Path(root) / EMBEDDED_MARKER
    if marker.is_file():
        return "PixMIMScenes", len(json.loads(marker.read_text(encoding="utf-8"))["classes"])
    if not (Path(root) / "images" / "training").is_dir():
        raise FileNotFoundError(f"dense.root {root}: no ADE20K layout (images/training) there")
    return "ADE20KDataset", 150


def _backbone(cfg: JobConfig, pretrained: str | None) -> tuple[dict, dict | None, list[int]]:
    """(backbone, neck, channels per pyramid level): the method's encoder family's."""
    common.register_family(MODELS, families.of(cfg.method))
    return families.nets_of(cfg.method).segmentation(cfg, cfg.arch, pretrained)


def build_config(cfg: JobConfig, work_dir: Path, seed: int, pretrained: str | None) -> Path:
    """Write the mmseg config of one seed's run into ``work_dir/config.py``; return its path."""
    d = cfg.dense
    if d.root is None:
        raise ValueError("dense.root: the segmentation stage needs the ADE20K root")
    ds_type, num_classes = dataset_type(d.root)
    backbone, neck, chans = _backbone(cfg, pretrained)
    crop = (d.crop_size, d.crop_size)
    stride = max(1, round(d.crop_size * 2 / 3))  # mmseg MAE: slide 512 / stride 341
    train_pipeline = [
        dict(type="LoadImageFromFile"),
        dict(type="LoadAnnotations", reduce_zero_label=True),
        dict(type="RandomResize", scale=tuple(d.scale), ratio_range=tuple(d.ratio_range),
             keep_ratio=True),
        dict(type="RandomCrop", crop_size=crop, cat_max_ratio=0.75),
        dict(type="RandomFlip", prob=0.5),
        dict(type="PhotoMetricDistortion"),
        dict(type="PackSegInputs"),
    ]
    test_pipeline = [
        dict(type="LoadImageFromFile"),
        dict(type="Resize", scale=tuple(d.scale), keep_ratio=True),
        dict(type="LoadAnnotations", reduce_zero_label=True),
        dict(type="PackSegInputs"),
    ]

    batch = common.per_process_batch(d, common.world_size())  # per process, per micro-batch

    def loader(split: str, train: bool) -> dict:
        return dict(
            batch_size=batch if train else 1, num_workers=d.num_workers,
            persistent_workers=d.num_workers > 0,
            sampler=dict(type="InfiniteSampler" if train else "DefaultSampler", shuffle=train),
            dataset=dict(type=ds_type, data_root=str(d.root), **common.dataset_keys(d),
                         data_prefix=dict(img_path=f"images/{split}",
                                          seg_map_path=f"annotations/{split}"),
                         pipeline=train_pipeline if train else test_pipeline,
                         **({} if train else common.eval_indices(d))))

    head = d.head_channels
    # Average the loss over labelled pixels only (mmseg recommends it; its default averages
    # over all pixels, which starves scenes whose "other" pixels dominate).
    loss = dict(type="CrossEntropyLoss", use_sigmoid=False, avg_non_ignore=True)
    model = dict(
        data_preprocessor=dict(size=crop), pretrained=None,
        backbone=dict(_delete_=True, **backbone),
        decode_head=dict(in_channels=chans, channels=head, num_classes=num_classes,
                         loss_decode=dict(loss, loss_weight=1.0)),
        auxiliary_head=dict(in_channels=chans[2], channels=max(head // 2, 16),
                            num_classes=num_classes, loss_decode=dict(loss, loss_weight=0.4)),
        test_cfg=dict(mode="slide", crop_size=crop, stride=(stride, stride)))
    model["neck"] = neck
    body: dict[str, Any] = {
        "model": model,
        "train_dataloader": loader("training", True),
        "val_dataloader": loader("validation", False),
        "test_dataloader": loader("validation", False),
        "val_evaluator": dict(type="IoUMetric", iou_metrics=["mIoU"]),
        "test_evaluator": dict(type="IoUMetric", iou_metrics=["mIoU"]),
        **common.schedule_body(d, seed, work_dir),
    }
    body["default_hooks"]["visualization"] = dict(type="SegVisualizationHook", draw=False)
    return common.write_config(work_dir / "config.py", BASE, ["pixmim.downstream.seg"], body)


def run_seed(cfg: JobConfig, work_dir: Path, seed: int, pretrained: str | None,
             **runner: Any) -> dict[str, Any]:
    """Train, validate and test one seed through mmengine's Runner (resumes from work_dir);
    ``runner``: :func:`common.run`'s ``name``, ``log`` and ``stop``."""
    return common.run(build_config(cfg, work_dir, seed, pretrained), work_dir, **runner)
