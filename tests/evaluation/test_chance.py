"""Chance levels of the segmentation metrics: the best constant prediction, by hand."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pixmim.evaluation.chance import constant_prediction, label_counts, segmentation_chance


def test_constant_prediction_paints_the_most_frequent_class():
    # 3 classes present (60/30/10 px), one absent: IoU 0.6 for the painted class, 0, 0.
    out = constant_prediction([60, 30, 0, 10])
    assert out["present"] == 3
    assert out["aacc"] == pytest.approx(60.0)
    assert out["miou"] == pytest.approx(20.0)


def test_uniform_classes_give_one_over_c_squared():
    assert constant_prediction([5] * 16)["miou"] == pytest.approx(100.0 / 16 / 16)


def test_label_counts_reduce_zero_label_and_ignore_255(tmp_path):
    label = np.array([[0, 0, 1, 1], [2, 255, 3, 3]], np.uint8)
    Image.fromarray(label).save(tmp_path / "a.png")
    counts = label_counts(tmp_path)
    assert counts[:3].tolist() == [2, 1, 2] and counts.sum() == 5
    assert segmentation_chance(tmp_path)["miou"] == pytest.approx(100.0 * 2 / 5 / 3)


def test_an_empty_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        label_counts(tmp_path)


def _coco(path, boxes):
    """Two 10 x 10 images, categories 1 and 2; ``boxes``: (image, category, xywh) per
    instance, its mask the box's polygon."""
    import json
    images = [{"id": i, "width": 10, "height": 10, "file_name": f"{i}.png"} for i in (1, 2)]
    cats = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    anns = [{"id": k, "image_id": img, "category_id": cat, "bbox": [x, y, w, h],
             "area": w * h, "iscrowd": 0,
             "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}
            for k, (img, cat, (x, y, w, h)) in enumerate(boxes, 1)]
    path.write_text(json.dumps({"images": images, "categories": cats, "annotations": anns}))
    return path


def test_detection_chance_by_hand(tmp_path):
    # Category a fills both canvases: the whole-canvas guess hits it at every IoU threshold
    # (AP 100). Category b is a quarter of image 2: IoU 0.25 < 0.5, never a hit (AP 0).
    # COCO's AP averages the two categories: 50 for boxes and for masks.
    from pixmim.evaluation.chance import detection_chance
    ann = _coco(tmp_path / "val.json", [(1, 1, (0, 0, 10, 10)), (2, 1, (0, 0, 10, 10)),
                                        (2, 2, (0, 0, 5, 5))])
    out = detection_chance(ann)
    assert out["ap_box"] == pytest.approx(50.0, abs=0.1)
    assert out["ap_mask"] == pytest.approx(50.0, abs=0.1)


def test_detection_chance_of_an_empty_split_is_an_error(tmp_path):
    from pixmim.evaluation.chance import detection_chance
    with pytest.raises(ValueError, match="no instances"):
        detection_chance(_coco(tmp_path / "val.json", []))
