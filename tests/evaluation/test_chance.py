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
