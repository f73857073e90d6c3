"""Shape bias: the 16-category mapping, the ratio, the stimulus names, the plot."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pixmim.data.generate import synth
from pixmim.data.imagenet_meta import imagenet_names
from pixmim.evaluation import shape_bias as SB

STIMULI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "geirhos-stimuli"


def test_category_lists_match_model_vs_human():
    assert SB.CATEGORIES == synth.CATEGORIES
    sizes = {c: len(v) for c, v in SB.CATEGORY_INDICES.items()}
    assert sizes == {"airplane": 1, "bear": 4, "bicycle": 2, "bird": 49, "boat": 5, "bottle": 7,
                     "car": 3, "cat": 6, "chair": 4, "clock": 3, "dog": 109, "elephant": 2,
                     "keyboard": 2, "knife": 1, "oven": 1, "truck": 8}
    dog = SB.CATEGORY_INDICES["dog"]
    assert dog[0] == 152 and dog[-1] == 268
    assert not {192, 204, 227, 242, 251, 258, 260, 264} & set(dog)
    flat = [i for v in SB.CATEGORY_INDICES.values() for i in v]
    assert len(flat) == len(set(flat)) and all(0 <= i < 1000 for i in flat)
    for cat, index in synth.IMAGENET_INDEX.items():  # the synthetic set's class is inside
        assert index in SB.CATEGORY_INDICES[cat]
    names = imagenet_names()
    assert names[404].startswith("airliner") and names[499].startswith("cleaver")


def test_shape_bias_extremes_half_and_same_cue_rows():
    shape = ["cat", "dog", "car", "bear"]
    texture = ["dog", "cat", "bird", "knife"]
    assert SB.shape_bias(shape, texture, shape) == 1.0
    assert SB.shape_bias(shape, texture, texture) == 0.0
    assert SB.shape_bias(shape, texture, ["cat", "cat", "car", "knife"]) == 0.5
    # a decision matching neither cue does not count
    assert SB.shape_bias(shape, texture, ["cat", "oven", "oven", "knife"]) == 0.5
    # same-cue rows are dropped: their decisions would otherwise count as shape hits
    s2, t2 = shape + ["oven"] * 3, texture + ["oven"] * 3
    assert SB.shape_bias(s2, t2, texture + ["oven"] * 3) == 0.0
    assert SB.cue_hits(s2, t2, texture + ["oven"] * 3) == (0, 4)


def test_shape_bias_errors_and_undefined():
    with pytest.raises(ValueError, match="length"):
        SB.shape_bias(["cat"], ["dog", "car"], ["cat"])
    with pytest.raises(ValueError, match="'horse'"):
        SB.shape_bias(["cat"], ["horse"], ["cat"])
    assert math.isnan(SB.shape_bias(["cat"], ["dog"], ["oven"]))  # 0/0: no cue matched
    assert math.isnan(SB.shape_bias(["cat"], ["cat"], ["cat"]))  # only same-cue rows


def test_per_category_by_shape():
    shape = ["cat", "cat", "cat", "dog", "dog"]
    texture = ["dog", "car", "bird", "cat", "dog"]
    decision = ["cat", "car", "cat", "oven", "dog"]
    per = SB.shape_bias_per_category(shape, texture, decision)
    assert list(per) == list(SB.CATEGORIES)
    assert per["cat"] == pytest.approx(2 / 3)
    assert math.isnan(per["dog"]) and math.isnan(per["oven"])


def test_decision_uses_the_mean_not_the_sum():
    probs = np.zeros((2, 1000))
    probs[0, SB.CATEGORY_INDICES["dog"]] = 0.004  # sum 0.436, mean 0.004
    probs[0, SB.CATEGORY_INDICES["knife"]] = 0.01  # sum = mean = 0.01
    probs[0, 0] = 1 - probs[0].sum()  # tench: in no category
    probs[1, SB.CATEGORY_INDICES["bear"][2]] = 1.0  # one bear index of four: mean 0.25
    assert sum(probs[0, SB.CATEGORY_INDICES["dog"]]) > 0.01
    assert SB.probabilities_to_16(probs) == ["knife", "bear"]
    assert SB.probabilities_to_16(torch.from_numpy(probs).float()) == ["knife", "bear"]
    scores = SB.category_scores(probs)
    assert scores.shape == (2, 16) and scores[1, SB.CATEGORIES.index("bear")] == 0.25


def test_probabilities_to_16_rejects_logits_and_wrong_width():
    with pytest.raises(ValueError, match="softmax"):
        SB.probabilities_to_16(np.random.default_rng(0).normal(size=(2, 1000)))
    with pytest.raises(ValueError, match="1000"):
        SB.probabilities_to_16(np.full((2, 10), 0.1))


def test_parse_names():
    assert SB.parse_cue_conflict_name("x/airplane/airplane1-bicycle2.png") == ("airplane",
                                                                               "bicycle")
    assert SB.parse_cue_conflict_name(Path("r/cat/cat10-cat2.png")) == ("cat", "cat")
    for bad in ("r/cat/dog1-cat2.png", "r/horse/horse1-cat2.png", "r/cat/cat1-zebra2.png"):
        with pytest.raises(ValueError, match=bad.split("/")[-1]):
            SB.parse_cue_conflict_name(bad)


def test_parse_real_stimuli_names():
    root = STIMULI / "cue-conflict"
    if not root.is_dir():
        pytest.skip(f"Geirhos stimuli not found at {root}")
    files = SB.list_stimuli(root)
    cues = [SB.parse_cue_conflict_name(f) for f in files]
    assert len(files) == 160
    assert {s for s, _ in cues} == set(SB.CATEGORIES)
    assert SB.parse_cue_conflict_name(root / "bear" / "bear1-airplane3.png") == ("bear",
                                                                                "airplane")


def test_plot_shape_bias_writes_a_png(tmp_path):
    per = {c: i / 15 for i, c in enumerate(SB.CATEGORIES)}
    results = {"MAE": {**per, "overall": 0.4},
               "PixMIM": {**{c: 1 - v for c, v in per.items()}, "knife": math.nan,
                          "overall": 0.6}}
    out = SB.plot_shape_bias(results, tmp_path / "fig" / "shape_bias.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    assert [p.name for p in out.parent.iterdir()] == ["shape_bias.png"]  # no temp files left
    metrics = {"shape_bias": None, "per_category": {c: None for c in SB.CATEGORIES}}
    entry = SB.figure_input(metrics)
    assert math.isnan(entry["overall"]) and len(entry) == 17
    # a metrics.json's per_category (JSON nulls, no "overall") plots as it is
    SB.plot_shape_bias({"raw": {**per, "knife": None}, "empty": entry}, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
