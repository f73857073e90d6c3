"""Tests of the multi-object scenes dataset (pixmim.data.generate.scenes): ADE20K + COCO layouts."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from pixmim.data.generate import scenes
from pixmim.data.generate.synth import CATEGORIES
from pixmim.stages import data as data_stage

TINY = scenes.SceneConfig(seed=5, train=6, val=3)
# pycocotools' decode trips numpy 2's __array__ copy-keyword deprecation (upstream).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
SPLITS = {"train": ("training", "train2017", 6), "val": ("validation", "val2017", 3)}

# The COCO 2017 "categories" entries for the 16 classes (instances_val2017.json).
COCO_2017 = {
    2: "bicycle", 3: "car", 5: "airplane", 8: "truck", 9: "boat", 16: "bird", 17: "cat",
    18: "dog", 22: "elephant", 23: "bear", 44: "bottle", 49: "knife", 62: "chair",
    76: "keyboard", 79: "oven", 85: "clock",
}  # fmt: skip


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("scenes") / "ds"
    return out, scenes.generate(TINY, out)


def _label(out: Path, ade: str, file_name: str) -> np.ndarray:
    png = Image.open(out / "ade20k" / "annotations" / ade / file_name.replace(".jpg", ".png"))
    assert png.mode == "L"
    return np.asarray(png)


# ------------------------------------------------------------------------ layout
def test_layout_files_exist(tiny) -> None:
    out, meta = tiny
    for ade, coco, n in SPLITS.values():
        names = [f"scene_{i:05d}" for i in range(n)]
        for sub, ext in (("images", "jpg"), ("annotations", "png")):
            found = sorted(p.name for p in (out / "ade20k" / sub / ade).iterdir())
            assert found == [f"{s}.{ext}" for s in names]
        assert sorted(p.name for p in (out / "coco" / coco).iterdir()) == [
            f"{s}.jpg" for s in names
        ]
        assert (out / "coco" / "annotations" / f"instances_{coco}.json").is_file()
        for s in names:  # one render, written to both layouts
            jpg = (out / "coco" / coco / f"{s}.jpg").read_bytes()
            assert jpg == (out / "ade20k" / "images" / ade / f"{s}.jpg").read_bytes()
            img = Image.open(out / "coco" / coco / f"{s}.jpg")
            assert img.format == "JPEG" and img.mode == "RGB" and img.size == (96, 64)
    classes = json.loads((out / "ade20k" / "classes.json").read_text())
    assert classes["classes"] == list(CATEGORIES) and classes["reduce_zero_label"] is True
    assert len({tuple(c) for c in classes["palette"]}) == 16
    assert json.loads((out / "meta.json").read_text()) == meta
    assert meta["generator"] == "pixmim-scenes/1" and meta["counts"] == {"train": 6, "val": 3}


def test_label_values_and_pixel_frequencies(tiny) -> None:
    out, meta = tiny
    for split, (ade, _, _) in SPLITS.items():
        labels = [np.asarray(Image.open(p)) for p in (out / "ade20k/annotations" / ade).iterdir()]
        values = np.concatenate([lb.ravel() for lb in labels])
        assert set(np.unique(values).tolist()) <= set(range(17))
        assert (values > 0).any() and (values == 0).any()
        freq = meta["pixel_frequency"][split]
        assert list(freq) == ["other", *CATEGORIES]
        assert sum(freq.values()) == pytest.approx(1.0, abs=1e-4)
        hist = np.bincount(values, minlength=17) / values.size
        assert np.allclose(list(freq.values()), hist, atol=1e-6)


# --------------------------------------------------------------------------- COCO
def test_coco_categories_are_the_real_ones(tiny) -> None:
    out, _ = tiny
    data = json.loads((out / "coco/annotations/instances_train2017.json").read_text())
    assert {c["id"]: c["name"] for c in data["categories"]} == COCO_2017
    assert all(c["supercategory"] for c in data["categories"])
    assert {"info", "licenses", "images", "annotations", "categories"} <= set(data)


@pytest.mark.parametrize("split", SPLITS)
def test_coco_masks_match_label_maps(tiny, split: str) -> None:
    out, meta = tiny
    ade, coco_name, n = SPLITS[split]
    coco = COCO(str(out / "coco" / "annotations" / f"instances_{coco_name}.json"))
    to_label = {cid: CATEGORIES.index(name) + 1 for cid, name in COCO_2017.items()}
    assert sorted(coco.getImgIds()) == list(range(1, n + 1))
    assert len(coco.getAnnIds()) == meta["instances"][split] > 0
    min_px = max(TINY.min_visible_px, TINY.min_visible_fraction * 64 * 96)
    for img in coco.loadImgs(coco.getImgIds()):
        assert (img["height"], img["width"]) == (64, 96)
        label = _label(out, ade, img["file_name"])
        union = np.zeros_like(label)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])):
            m = coco.annToMask(ann).astype(bool)
            k = to_label[ann["category_id"]]
            assert (label[m] == k).all() and not union[m].any()  # visible and disjoint
            union[m] = k
            ys, xs = np.nonzero(m)
            tight = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert ann["bbox"] == [float(v) for v in tight]
            assert ann["area"] == m.sum() == mask_utils.area(ann["segmentation"]) >= min_px
            assert ann["iscrowd"] == 0 and isinstance(ann["segmentation"]["counts"], str)
        assert np.array_equal(union, label)  # every labelled pixel belongs to one instance


def test_objects_are_brightness_separated_from_background() -> None:
    luma = np.array([0.299, 0.587, 0.114])
    for i in range(6):
        img, label, inst = scenes.render_scene(np.random.default_rng([1, 0, i]), TINY)
        assert 1 <= len(inst) <= TINY.max_objects
        lum = np.asarray(img, float) @ luma / 255.0
        assert abs(lum[label > 0].mean() - lum[label == 0].mean()) > 0.2


# ---------------------------------------------------------- determinism, atomicity
def test_same_args_give_identical_dataset(tiny, tmp_path: Path) -> None:
    first, _ = tiny
    second = tmp_path / "again"
    scenes.generate(TINY, second, workers=2)  # worker processes change nothing
    assert _files(first) == _files(second)


def test_existing_folder_is_reused_and_different_seed_raises(tiny) -> None:
    out, meta = tiny
    marker = out / "coco" / "untouched"
    marker.write_text("x")
    try:
        assert scenes.generate(TINY, out) == meta
        assert marker.exists()  # not regenerated
    finally:
        marker.unlink()
    with pytest.raises(FileExistsError, match=re.escape(str(out))):
        scenes.generate(dataclasses.replace(TINY, seed=6), out)
    with pytest.raises(FileExistsError, match="not a scenes dataset"):
        scenes.generate(TINY, out / "coco")


def test_invalid_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="object counts"):
        scenes.SceneConfig(min_objects=3, max_objects=2)


# ---------------------------------------------------------------------------- CLI
def test_cli_via_data_stage(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli"
    argv = ["scenes", "--out", str(out), "--train", "2", "--val", "1", "--height", "32",
            "--width", "48", "--min-objects", "1", "--max-objects", "2"]  # fmt: skip
    assert data_stage.main(argv) == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and "train=2" in line and "val=1" in line
    meta = json.loads((out / "meta.json").read_text())
    assert meta["config"]["height"] == 32 and meta["config"]["max_objects"] == 2
    assert data_stage.main([*argv, "--seed", "1"]) == 1  # different seed, same folder


def test_module_is_torch_free() -> None:
    code = "import sys, pixmim.data.generate.scenes; sys.exit('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": str(root)}
    assert subprocess.run([sys.executable, "-c", code], env=env, cwd=root).returncode == 0
