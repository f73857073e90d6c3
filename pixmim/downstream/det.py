"""COCO detection and instance segmentation with Mask R-CNN (mmdet 3.x), PixMIM Tables 14/15.

Importing this module registers, in mmdet's registries:

* the dense classes of every encoder family (``MODULES`` of ``pixmim/families/<family>/
  nets.py``: the plain ViT's ViTDet (Li et al. 2022) and simple feature pyramid, which
  mmdet's wheel does not ship, ConvViT's pyramid into mmdet's ``FPN``); a job's backbone
  and neck are its family's ``detection``;
* ``LN2d``: timm's ``LayerNorm2d`` as a norm layer for the heads (ViTDet's 4conv1fc box head
  and mask head use LayerNorm).

:func:`build_config` writes the job's config on top of mmdet's own base configs
(``mmdet::_base_/models/mask-rcnn_r50_fpn.py``, ``datasets/coco_instance.py``,
``default_runtime.py``) with ViTDet's large-scale jitter. The class list is read from the
annotation file, so the real COCO (80 classes, in CocoDataset's order) and the embedded
COCO-layout scenes (16) use the same config with another root.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pixmim.config import JobConfig
from pixmim.downstream import common

common.setup()

from mmdet.registry import MODELS  # noqa: E402
from timm.layers import LayerNorm2d  # noqa: E402

from pixmim import families  # noqa: E402

common.register()
if "LN2d" not in MODELS.module_dict:
    MODELS.register_module(name="LN2d", module=LayerNorm2d)


common.register_families(MODELS)


BASE = ["mmdet::_base_/models/mask-rcnn_r50_fpn.py", "mmdet::_base_/datasets/coco_instance.py",
        "mmdet::_base_/default_runtime.py"]
ANN = "annotations/instances_{}2017.json"


def classes_of(root: str, split: str = "val") -> tuple[str, ...]:
    """Category names of ``<root>/annotations/instances_<split>2017.json``, by id."""
    path = Path(root) / ANN.format(split)
    if not path.is_file():
        raise FileNotFoundError(f"dense.root {root}: no COCO annotation file {path}")
    cats = json.loads(path.read_text(encoding="utf-8"))["categories"]
    return tuple(c["name"] for c in sorted(cats, key=lambda c: c["id"]))


def _backbone(cfg: JobConfig, pretrained: str | None, fpn_channels: int) -> tuple[dict, dict]:
    """(backbone, neck): the method's encoder family's."""
    common.register_family(MODELS, families.of(cfg.method))
    return families.nets_of(cfg.method).detection(cfg, cfg.arch, pretrained, fpn_channels)


def build_config(cfg: JobConfig, work_dir: Path, seed: int, pretrained: str | None) -> Path:
    """Write the mmdet config of one run into ``work_dir/config.py``; return its path."""
    d = cfg.dense
    if d.root is None:
        raise ValueError("dense.root: the detection stage needs the COCO root")
    classes = classes_of(d.root)
    ch = d.head_channels
    backbone, neck = _backbone(cfg, pretrained, ch)
    size = (d.crop_size, d.crop_size)
    ln = dict(type="LN2d")
    # Large-scale jitter (ViTDet, Sec. 4): rescale 0.1-2.0 of the input size, crop, pad.
    train_pipeline = [
        dict(type="LoadImageFromFile"),
        dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
        dict(type="RandomFlip", prob=0.5),
        dict(type="RandomResize", scale=size, ratio_range=tuple(d.ratio_range), keep_ratio=True),
        dict(type="RandomCrop", crop_type="absolute_range", crop_size=size, recompute_bbox=True,
             allow_negative_crop=True),
        dict(type="FilterAnnotations", min_gt_bbox_wh=(1e-2, 1e-2)),
        dict(type="PackDetInputs"),
    ]
    test_pipeline = [
        dict(type="LoadImageFromFile"),
        # No Pad here: mmdet's Pad rewrites img_shape, so boxes in the padding survive
        # clipping and crash the mask paste; the backbone takes any multiple of 32.
        dict(type="Resize", scale=size, keep_ratio=True),
        dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
        dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape",
                                              "scale_factor")),
    ]

    batch = common.per_process_batch(d, common.world_size())  # per process, per micro-batch

    def loader(split: str, train: bool) -> dict:
        return dict(
            batch_size=batch if train else 1, num_workers=d.num_workers,
            persistent_workers=d.num_workers > 0,
            dataset=dict(data_root=str(d.root), ann_file=ANN.format(split),
                         **common.dataset_keys(d),
                         data_prefix=dict(img=f"{split}2017/"), metainfo=dict(classes=classes),
                         pipeline=train_pipeline if train else test_pipeline,
                         **({} if train else dict(test_mode=True, **common.eval_indices(d)))))

    evaluator = dict(type="CocoMetric", ann_file=str(Path(d.root) / ANN.format("val")),
                     metric=["bbox", "segm"], format_only=False)
    n = len(classes)
    model = dict(
        data_preprocessor=dict(pad_size_divisor=32,
                               batch_augments=[dict(type="BatchFixedSizePad", size=size,
                                                    pad_mask=True)]),
        backbone=dict(_delete_=True, **backbone),
        neck=neck,
        rpn_head=dict(in_channels=ch, feat_channels=ch, num_convs=2),  # ViTDet: 2 RPN convs
        roi_head=dict(
            bbox_roi_extractor=dict(out_channels=ch),
            bbox_head=dict(type="Shared4Conv1FCBBoxHead", in_channels=ch, conv_out_channels=ch,
                           norm_cfg=ln, num_classes=n),
            mask_roi_extractor=dict(out_channels=ch),
            mask_head=dict(in_channels=ch, conv_out_channels=ch, norm_cfg=ln, num_classes=n)),
        train_cfg=dict(rpn_proposal=dict(nms_pre=2 * d.proposals, max_per_img=d.proposals),
                       rcnn=dict(sampler=dict(num=d.rois_per_image))),
        test_cfg=dict(rpn=dict(nms_pre=d.proposals, max_per_img=d.proposals),
                      rcnn=dict(score_thr=d.score_thr)))
    body: dict[str, Any] = {
        "model": model,
        "train_dataloader": loader("train", True),
        "val_dataloader": loader("val", False),
        "test_dataloader": loader("val", False),
        "val_evaluator": evaluator,
        "test_evaluator": evaluator,
        **common.schedule_body(d, seed, work_dir),
    }
    return common.write_config(work_dir / "config.py", BASE, ["pixmim.downstream.det"], body)


def run_seed(cfg: JobConfig, work_dir: Path, seed: int, pretrained: str | None,
             **runner: Any) -> dict[str, Any]:
    """Train, validate and test one seed through mmengine's Runner (resumes from work_dir);
    ``runner``: :func:`common.run`'s ``name``, ``log`` and ``stop``."""
    return common.run(build_config(cfg, work_dir, seed, pretrained), work_dir, **runner)
