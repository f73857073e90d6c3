"""``data fixtures``: tiny datasets in the real layouts, read by the project's own loaders.

Expected counts come from the datasets: ImageNet-1k's 1000 wnids, the 200 of ImageNet-A
and -R (timm's lists), ImageNet-C's 15 corruptions x 5 severities (Hendrycks & Dietterich
2019), COCO's 80 categories with ids up to 90 (mmdet's CocoDataset.METAINFO names them),
ADE20K's 150 classes with 0 = other (mmseg's ADE20KDataset, reduce_zero_label).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixmim.data.generate.fixtures import ROOTS, uncompressed_rle, write_cue_conflict
from pixmim.workflow.roots import check_root

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("key", sorted(ROOTS))
def test_every_root_passes_its_layout_check(fixture_roots, key):
    assert check_root(key, fixture_roots / ROOTS[key], 1000) == []
    meta = json.loads((fixture_roots / ROOTS[key] / "meta.json").read_text())
    assert meta["generator"].startswith("pixmim-fixtures/")
    assert (fixture_roots / ROOTS[key] / "fingerprint.json").is_file()


def test_cli_writes_the_roots_atomically_and_small(tmp_path):
    out = tmp_path / "fx"
    res = subprocess.run([sys.executable, "-m", "pixmim", "data", "fixtures", "--out", str(out),
                          "--stimuli", str(tmp_path / "none")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fx"]  # no temp folder left
    assert {str(Path(v).parts[0]) for v in ROOTS.values()} <= {p.name for p in out.iterdir()}
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    assert size < 60e6, size
    # the same settings again: nothing rewritten; other settings: refused, one line
    again = subprocess.run([sys.executable, "-m", "pixmim", "data", "fixtures", "--out",
                            str(out), "--stimuli", str(tmp_path / "none"), "--seed", "1"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "different config" in again.stderr


def test_imagenet_train_and_val_read_as_imagenet_labels(fixture_roots):
    from pixmim.data.datasets import build_dataset
    from pixmim.data.imagenet_meta import imagenet_wnids
    from pixmim.data.loading import UInt8Crop
    from pixmim.data.transforms import build_eval_transform, build_pretrain_transform

    root, wnids = fixture_roots / "imagenet", imagenet_wnids()
    val = build_dataset(root, "val", build_eval_transform(224))
    assert len(val) == len(val.classes) == 1000
    img, label = val[500]
    assert tuple(img.shape) == (3, 224, 224)
    assert label == wnids.index(Path(val.samples[500][0]).parent.name)
    # the odd train files (greyscale, CMYK, PNG named .JPEG) through both decode paths,
    # and the background crop with its foreground masks
    train = build_dataset(root, "train", UInt8Crop(build_pretrain_transform("bg", 224)),
                          masks_root=fixture_roots / "imagenet-masks")
    assert len(train) == 1000
    modes = {Image.open(train.samples[i][0]).mode for i in (1, 2)}
    assert modes == {"L", "CMYK"} and Image.open(train.samples[3][0]).format == "PNG"
    pil = build_dataset(root, "train", build_eval_transform(224))
    for i in (0, 1, 2, 3):
        x, _, _ = train[(i, 7)]
        assert x.dtype.is_floating_point is False and tuple(x.shape) == (3, 224, 224)
        assert tuple(pil[i][0].shape) == (3, 224, 224)


def test_places365_reads_for_pretraining_without_imagenet_labels(fixture_roots):
    from pixmim.data.datasets import build_dataset
    from pixmim.data.loading import UInt8Crop
    from pixmim.data.transforms import build_pretrain_transform

    root = fixture_roots / "places365"
    ds = build_dataset(root, "train", UInt8Crop(build_pretrain_transform("src", 224)),
                       imagenet_labels=False)
    assert len(ds.classes) == 365 and tuple(ds[(0, 1)][0].shape) == (3, 224, 224)
    with pytest.raises(ValueError, match="non-ImageNet class folders"):
        build_dataset(root, "train", None)  # why pretraining must not ask for ImageNet labels
    # the pretraining stage's own training set on Places365 (Table 6), at the paper's 224
    from pixmim.config import JobConfig, from_dict
    from pixmim.stages.pretrain import training_set

    cfg = from_dict(JobConfig, {"experiment": "mae-pixel-rrc_800e_places365",
                                "stage": "pretrain", "method": "mae",
                                "data": {"root": str(root), "img_size": 224},
                                "variant": {"target": "pixel", "crop": "rrc"}})
    ds = training_set(cfg)
    assert len(ds) == 365 and tuple(ds[(5, 3)][0].shape) == (3, 224, 224)


def test_robustness_and_shape_bias_readers(fixture_roots):
    from pixmim.evaluation import shape_bias as SB
    from pixmim.stages import robustness as R

    c = R.open_imagenet_c(fixture_roots / "imagenet-c", 224)
    assert len(c["sets"]) == 15 * 5 and c["ignored"] == []
    x, y = next(iter(c["sets"].values()))[0]
    assert tuple(x.shape) == (3, 224, 224) and y == 0  # the first wnid: index 0
    for name in ("imagenet_a", "imagenet_r"):
        ds = R.open_subset(name)(fixture_roots / name.replace("_", "-"), 224)
        assert len(ds) == len(ds.classes) == 200
    sketch = R.open_sketch(fixture_roots / "imagenet-sketch", 224)
    assert len(sketch.classes) == 1000
    files = SB.list_stimuli(fixture_roots / "cue-conflict")
    cues = [SB.parse_cue_conflict_name(f) for f in files]
    assert {s for s, _ in cues} == set(SB.CATEGORIES)


def test_cue_conflict_real_stimuli_keep_their_licence(fixture_roots):
    out = fixture_roots / "cue-conflict"
    meta = json.loads((fixture_roots / "meta.json").read_text())
    if meta["config"]["cue_conflict"] != "geirhos":
        pytest.skip("no Geirhos stimuli beside the checkout: stand-ins were generated")
    assert (out / "DATASET_LICENSE").is_file()
    assert len(list(out.glob("*/*.png"))) == 160  # 10 per category in the shared subset


def test_cue_conflict_stand_ins_without_the_stimuli(tmp_path):
    from pixmim.evaluation import shape_bias as SB

    assert write_cue_conflict(tmp_path / "cc", None)["source"] == "generated"
    assert check_root("data.eval_roots.cue_conflict", tmp_path / "cc") == []
    assert len(SB.list_stimuli(tmp_path / "cc")) == 16


def test_coco_json_loads_in_pycocotools_with_polygons_and_crowd_rle(fixture_roots):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    for split in ("train2017", "val2017"):
        coco = COCO(str(fixture_roots / "coco" / "annotations" / f"instances_{split}.json"))
        ids = sorted(coco.getCatIds())
        assert len(ids) == 80 and ids[0] == 1 and ids[-1] == 90  # COCO's gappy ids
        anns = coco.loadAnns(coco.getAnnIds())
        crowd = [a for a in anns if a["iscrowd"]]
        poly = [a for a in anns if not a["iscrowd"]]
        assert crowd and poly
        for a in crowd:
            assert isinstance(a["segmentation"]["counts"], list)  # uncompressed, as COCO's
            m = coco.annToMask(a)
            assert m.sum() == a["area"]
            assert mask_utils.area(mask_utils.frPyObjects(a["segmentation"], *m.shape)) \
                == a["area"]
        for a in poly:
            assert isinstance(a["segmentation"], list)
            assert abs(coco.annToMask(a).sum() - a["area"]) < 0.25 * a["area"] + 20
        for img in coco.loadImgs(coco.getImgIds()):
            f = fixture_roots / "coco" / split / img["file_name"]
            assert Image.open(f).size == (img["width"], img["height"])


def test_uncompressed_rle_matches_pycocotools():
    from pycocotools import mask as mask_utils

    m = np.zeros((5, 7), bool)
    m[0, 0] = m[1:4, 2:5] = m[4, 6] = True
    rle = uncompressed_rle(m)
    back = mask_utils.decode(mask_utils.frPyObjects(rle, 5, 7))
    assert np.array_equal(back.astype(bool), m)


@pytest.fixture(scope="module")
def openmmlab():
    from pixmim.downstream import common

    common.setup()
    from pixmim.downstream import det, seg

    return seg, det


def _job(root: Path, **dense):
    from pixmim.config import JobConfig, from_dict

    return from_dict(JobConfig, {"experiment": "mae-base_test", "stage": "dense",
                                 "method": "mae", "arch": "vit_cpu_patch8_64",
                                 "dense": {"root": str(root), **dense}})


def _dataset(config_path: Path, split: str, scope: str):
    from mmengine.config import Config
    from mmengine.registry import DATASETS, DefaultScope, init_default_scope

    c = Config.fromfile(str(config_path))
    init_default_scope(scope)
    with DefaultScope.overwrite_default_scope(scope):
        return DATASETS.build(c[f"{split}_dataloader"].dataset)


def test_mmseg_reads_ade20k_as_the_segmentation_stage_builds_it(fixture_roots, openmmlab,
                                                                 tmp_path):
    seg, _ = openmmlab
    root = fixture_roots / "ade20k" / "ADEChallengeData2016"
    assert seg.dataset_type(str(root)) == ("ADE20KDataset", 150)
    # ratio fixed at 1: the short side is resized to the scale's 512, so the crop is the full
    # 512 x 512 (a drawn ratio below 1 leaves it smaller; mmseg pads in the data preprocessor)
    path = seg.build_config(_job(root, crop_size=512, ratio_range=[1.0, 1.0]), tmp_path, 0, None)
    train, val = _dataset(path, "train", "mmseg"), _dataset(path, "val", "mmseg")
    assert (len(train), len(val)) == (4, 2)
    assert type(train).__name__ == "ADE20KDataset"
    sample = train[0]
    assert tuple(sample["inputs"].shape[1:]) == (512, 512)  # the paper's crop (upscaled)
    labels = set(np.unique(sample["data_samples"].gt_sem_seg.data.numpy()).tolist())
    # reduce_zero_label: 0 ("other") -> 255 ignored, class k -> k - 1
    assert labels <= set(range(150)) | {255} and labels & set(range(150))
    raw = np.array(Image.open(root / "annotations" / "training" / "ADE_train_00000001.png"))
    assert raw.min() == 0 and raw.max() <= 150


def test_mmdet_reads_coco_as_the_detection_stage_builds_it(fixture_roots, openmmlab, tmp_path):
    from mmdet.datasets import CocoDataset

    _, det = openmmlab
    root = fixture_roots / "coco"
    assert det.classes_of(str(root)) == tuple(CocoDataset.METAINFO["classes"])
    path = det.build_config(_job(root, crop_size=1024, window_size=14), tmp_path, 0, None)
    train, val = _dataset(path, "train", "mmdet"), _dataset(path, "val", "mmdet")
    assert (len(train), len(val)) == (4, 2)
    sample = train[0]
    # LSJ at the paper's 1024: resized by 0.1-2.0, cropped to at most 1024 (padded per batch)
    h, w = sample["inputs"].shape[1:]
    assert max(h, w) <= 1024
    inst = sample["data_samples"].gt_instances
    assert len(inst) >= 1 and inst.masks.masks.shape[1:] == (h, w)
