"""Tests of the synthetic-shapes dataset (pixmim.data.generate.synth).

Thresholds were measured on the generator (40 seeds x 16 categories, plus all 256
shape x texture pairs, short side 48 and 80): per-image foreground fraction 0.11-0.50
(category means 0.19-0.31), inside/outside luminance contrast >= 0.25, IoU of the
thresholded GaussianBlur(3 px at short side 80) image with the mask >= 0.58 (mean 0.84).
The asserted bounds leave a margin below those.
"""

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
from PIL import Image, ImageFilter

from pixmim.data.generate import synth
from pixmim.data.imagenet_meta import imagenet_names, imagenet_wnids

TINY = synth.SynthConfig(seed=3, train_per_class=2, val_per_class=1, short_side=48)
LUMA = np.array([0.299, 0.587, 0.114])
SEEDS = range(4)

# Expected first lemma of each bound ImageNet class (model-vs-human human_categories).
EXPECTED_LEMMA = {
    "airplane": "airliner", "bear": "brown bear", "bicycle": "bicycle-built-for-two",
    "bird": "robin", "boat": "canoe", "bottle": "beer bottle", "car": "sports car",
    "cat": "tabby", "chair": "folding chair", "clock": "analog clock",
    "dog": "golden retriever", "elephant": "African elephant", "keyboard": "computer keyboard",
    "knife": "cleaver", "oven": "rotisserie", "truck": "trailer truck",
}  # fmt: skip


def _render(shape: str, texture: str, seed: int, cfg: synth.SynthConfig = TINY):
    return synth.render(shape, texture, np.random.default_rng([seed, 99]), cfg)


def _luma(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=float) @ LUMA / 255.0


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "ds"
    return out, synth.generate(TINY, out)


# ------------------------------------------------------------------ determinism
def test_same_seed_gives_byte_identical_dataset(tiny_dataset, tmp_path: Path) -> None:
    first, _ = tiny_dataset
    second = tmp_path / "again"
    synth.generate(TINY, second, workers=2)  # also: worker processes change nothing
    assert _files(first) == _files(second)


def test_different_seed_gives_different_images(tiny_dataset, tmp_path: Path) -> None:
    first, _ = tiny_dataset
    other = tmp_path / "other"
    synth.generate(dataclasses.replace(TINY, seed=TINY.seed + 1), other)
    a, b = _files(first), _files(other)
    assert a.keys() == b.keys()
    pngs = [k for k in a if k.endswith(".png") and not k.startswith("masks")]
    assert sum(a[k] != b[k] for k in pngs) == len(pngs)


def test_image_depends_only_on_its_own_seed_tuple() -> None:
    rng = np.random.default_rng([TINY.seed, 0, 5, 1])  # train, class 5 (bottle), index 1
    img, _ = synth.render("bottle", "bottle", rng, TINY)
    img2, _ = synth.render("bottle", "bottle", np.random.default_rng([TINY.seed, 0, 5, 1]), TINY)
    assert np.array_equal(np.asarray(img), np.asarray(img2))


# ------------------------------------------------------------------------ layout
def test_layout_counts_and_wnid_folders(tiny_dataset) -> None:
    out, meta = tiny_dataset
    per = {"train": TINY.train_per_class, "val": TINY.val_per_class}
    for split, n in per.items():
        folders = sorted(p.name for p in (out / split).iterdir())
        assert folders == sorted(synth.category_wnid(c) for c in synth.CATEGORIES)
        for cat in synth.CATEGORIES:
            names = sorted(p.name for p in (out / split / synth.category_wnid(cat)).iterdir())
            assert names == [f"{cat}_{i:05d}.png" for i in range(n)]
    assert meta["counts"] == {"train": 16 * per["train"], "val": 16 * per["val"], "all": 48}
    assert json.loads((out / "meta.json").read_text()) == meta


def test_meta_describes_categories(tiny_dataset) -> None:
    _, meta = tiny_dataset
    assert meta["config"]["seed"] == TINY.seed and meta["config"]["short_side"] == 48
    assert [c["name"] for c in meta["categories"]] == list(synth.CATEGORIES)
    for c in meta["categories"]:
        assert c["imagenet_index"] == synth.IMAGENET_INDEX[c["name"]]
        assert c["wnid"] == imagenet_wnids()[c["imagenet_index"]]
        assert c["lemma"].split(",")[0] == EXPECTED_LEMMA[c["name"]]
    assert 0.12 < meta["mean_foreground_fraction"]["all"] < 0.4


def test_masks_are_binary_and_match_images(tiny_dataset) -> None:
    out, _ = tiny_dataset
    images = sorted(p for split in ("train", "val") for p in (out / split).rglob("*.png"))
    assert len(images) == 48
    for path in images:
        mask = Image.open(out / "masks" / path.relative_to(out))
        image = Image.open(path)
        assert image.mode == "RGB" and mask.mode == "L"
        assert mask.size == image.size and min(image.size) == TINY.short_side
        values = set(np.unique(np.asarray(mask)).tolist())
        assert values == {0, 255}


def test_canvases_are_non_square_in_both_orientations() -> None:
    sizes = [_render("car", "car", s)[0].size for s in range(24)]
    assert any(w > h for w, h in sizes) and any(h > w for w, h in sizes)
    assert all(1.0 <= max(w, h) / min(w, h) <= 1.5 + 1 / 48 for w, h in sizes)


# ----------------------------------------------------- shape vs texture separation
@pytest.mark.parametrize("shape", synth.CATEGORIES)
def test_texture_does_not_change_the_mask_or_background(shape: str) -> None:
    other = [c for c in synth.CATEGORIES if c != shape]
    img_a, mask_a = _render(shape, shape, 11)
    for texture in (other[0], other[7]):
        img_b, mask_b = _render(shape, texture, 11)
        assert np.array_equal(mask_a, mask_b)
        a, b = np.asarray(img_a, float), np.asarray(img_b, float)
        assert np.abs(a - b)[mask_a].mean() > 5.0  # the texture differs inside ...
        far = ~np.asarray(Image.fromarray(mask_a).filter(ImageFilter.MaxFilter(3)))
        assert np.array_equal(a[far], b[far])  # ... and nothing else does


def test_background_carries_no_label_information() -> None:
    # Same seed, different categories: identical pixels away from both objects.
    img_a, mask_a = _render("bear", "bear", 5)
    img_b, mask_b = _render("knife", "knife", 5)
    assert img_a.size == img_b.size
    both = Image.fromarray(mask_a | mask_b).filter(ImageFilter.MaxFilter(3))
    far = ~np.asarray(both)
    assert far.mean() > 0.3
    assert np.array_equal(np.asarray(img_a)[far], np.asarray(img_b)[far])


@pytest.mark.parametrize("cat", synth.CATEGORIES)
def test_foreground_fraction_is_sane(cat: str) -> None:
    fractions = [_render(cat, cat, s)[1].mean() for s in SEEDS]
    assert all(0.06 < f < 0.6 for f in fractions), fractions
    assert 0.12 < np.mean(fractions) < 0.45


def test_silhouettes_differ_between_categories() -> None:
    masks = {
        c: _render(c, c, 2, synth.SynthConfig(short_side=48, aspect=(1.0, 1.0)))[1]
        for c in synth.CATEGORIES
    }
    for a in synth.CATEGORIES:
        for b in synth.CATEGORIES:
            if a < b:
                assert not np.array_equal(masks[a], masks[b]), (a, b)


# ------------------------------------------------ luminance cue and low-pass survival
@pytest.mark.parametrize("cat", synth.CATEGORIES)
def test_object_and_background_luminance_differ(cat: str) -> None:
    for seed in SEEDS:
        img, mask = _render(cat, cat, seed)
        lum = _luma(img)
        assert abs(lum[mask].mean() - lum[~mask].mean()) > 0.2, (cat, seed)


def test_both_polarities_occur() -> None:
    signs = set()
    for seed in range(12):
        img, mask = _render("cat", "cat", seed)
        lum = _luma(img)
        signs.add(bool(lum[mask].mean() > lum[~mask].mean()))
    assert signs == {True, False}


@pytest.mark.parametrize("cat", synth.CATEGORIES)
def test_silhouette_survives_low_pass(cat: str) -> None:
    cfg = synth.SynthConfig(short_side=80)
    for seed in SEEDS[:2]:
        texture = synth.CATEGORIES[(synth.CATEGORIES.index(cat) + seed) % 16]  # also conflicts
        img, mask = _render(cat, texture, seed, cfg)
        lum = _luma(img.filter(ImageFilter.GaussianBlur(3)))
        inside, outside = lum[mask].mean(), lum[~mask].mean()
        pred = (lum > (inside + outside) / 2) == (inside > outside)
        iou = (pred & mask).sum() / (pred | mask).sum()
        assert iou > 0.55, (cat, texture, seed, iou)


def test_low_pass_removes_the_texture() -> None:
    # Two textures on one silhouette: clearly different before, nearly equal after blur.
    cfg = synth.SynthConfig(short_side=80)
    (a, mask), (b, _) = _render("elephant", "truck", 1, cfg), _render("elephant", "dog", 1, cfg)
    raw = np.abs(_luma(a) - _luma(b))[mask].mean()
    blur = np.abs(
        _luma(a.filter(ImageFilter.GaussianBlur(3))) - _luma(b.filter(ImageFilter.GaussianBlur(3)))
    )
    assert raw > 2.5 * blur[mask].mean()


# --------------------------------------------------------------------- atomicity
def test_existing_identical_dataset_is_reused(tiny_dataset) -> None:
    out, meta = tiny_dataset
    marker = out / "train" / "untouched"
    marker.write_text("x")
    try:
        assert synth.generate(TINY, out) == meta
        assert marker.exists()  # not regenerated
    finally:
        marker.unlink()


def test_existing_different_dataset_raises(tiny_dataset) -> None:
    out, _ = tiny_dataset
    other = dataclasses.replace(TINY, val_per_class=2)
    with pytest.raises(FileExistsError, match=re.escape(str(out))):
        synth.generate(other, out)
    with pytest.raises(FileExistsError, match="not a synth dataset"):
        synth.generate(TINY, out / "train")


def test_success_leaves_no_temporary_folder(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    (out).mkdir()  # an empty folder (e.g. pre-created by a workflow) counts as absent
    synth.generate(synth.SynthConfig(train_per_class=1, val_per_class=0, short_side=32), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    assert (out / "meta.json").is_file()


def test_failure_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) > 5:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    real = synth.render
    monkeypatch.setattr(synth, "render", flaky)
    with pytest.raises(RuntimeError, match="boom"):
        synth.generate(TINY, tmp_path / "ds")
    assert list(tmp_path.iterdir()) == []


def test_tmp_folder_name_is_a_hidden_sibling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []
    real = synth._write_all
    monkeypatch.setattr(
        synth, "_write_all", lambda cfg, root, w: seen.append(root) or real(cfg, root, w)
    )
    synth.generate(
        synth.SynthConfig(train_per_class=1, val_per_class=0, short_side=32), tmp_path / "ds"
    )
    assert seen == [tmp_path / f".ds.tmp-{os.getpid()}"]


# ---------------------------------------------------------------------------- CLI
def test_main_writes_dataset_and_prints_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "cli"
    argv = ["--out", str(out), "--seed", "4", "--train-per-class", "1", "--val-per-class", "1",
            "--short-side", "32"]  # fmt: skip
    assert synth.main(argv) == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and "train=16" in line and "val=16" in line
    meta = json.loads((out / "meta.json").read_text())
    assert meta["config"]["seed"] == 4 and meta["config"]["short_side"] == 32
    assert synth.main([*argv[:3], "5", *argv[4:]]) == 1  # different seed, same folder


# ------------------------------------------------------- categories in ImageNet-1k
@pytest.mark.parametrize("cat", synth.CATEGORIES)
def test_bound_indices_match_lemmas(cat: str) -> None:
    index = synth.IMAGENET_INDEX[cat]
    assert imagenet_names()[index].split(",")[0] == EXPECTED_LEMMA[cat]
    assert synth.category_wnid(cat) == imagenet_wnids()[index]


def test_categories_are_the_sorted_geirhos_sixteen() -> None:
    assert synth.CATEGORIES == tuple(sorted(EXPECTED_LEMMA))
    assert set(synth.IMAGENET_INDEX) == set(synth.CATEGORIES)
    assert len(set(synth.IMAGENET_INDEX.values())) == 16


def test_modules_are_torch_free() -> None:
    code = ("import sys, pixmim.data.generate.synth; "
            "sys.exit('torch' in sys.modules or 'timm' in sys.modules)")
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": str(root)}
    assert subprocess.run([sys.executable, "-c", code], env=env, cwd=root).returncode == 0


# ------------------------------------------------------------ texture_class_bound
# TINY as generated before the knob existed (pixmim-synth-shapes/1, commit c59655a): the
# digest of every image's and mask's pixels, and the config its meta.json holds.
PRE_KNOB_DIGEST = "191c3f5ee5bdbde8a9d7b1f41865760eddbb189369239cc65b936b6427574c1a"
PRE_KNOB_CONFIG = {"seed": 3, "train_per_class": 2, "val_per_class": 1, "short_side": 48,
                   "aspect": [1.0, 1.5], "object_scale": [0.7, 1.1]}  # fmt: skip


def _pixel_digest(root: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.png")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(np.asarray(Image.open(path)).tobytes())
    return digest.hexdigest()


def test_bound_texture_reproduces_the_pre_knob_dataset(tiny_dataset) -> None:
    """texture_class_bound = 1 (the default): the images, masks and meta.json config of
    the generator before the knob, so an existing dataset is recognised, not regenerated."""
    out, meta = tiny_dataset
    assert TINY.texture_class_bound == 1.0
    assert _pixel_digest(out) == PRE_KNOB_DIGEST
    assert meta["config"] == PRE_KNOB_CONFIG


def test_pre_knob_meta_is_recognised(tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    meta = {"generator": synth.GENERATOR_VERSION, "config": PRE_KNOB_CONFIG}
    (old / "meta.json").write_text(json.dumps(meta))
    assert synth.generate(TINY, old) == meta  # reused as it is
    with pytest.raises(FileExistsError):  # and is not the unbound dataset
        synth.generate(dataclasses.replace(TINY, texture_class_bound=0.5), old)


def test_texture_class_bound_draws() -> None:
    """p = 0: texture independent of the class (uniform over 16); p = 0.5: about half bound
    plus 1/16 of the rest; nested: an image unbound at 0.5 is unbound at 0.2 too."""
    n = 400
    draws = {p: [synth.texture_category(dataclasses.replace(TINY, texture_class_bound=p),
                                        0, c % 16, c) for c in range(n)]
             for p in (0.0, 0.2, 0.5, 1.0)}  # fmt: skip
    own = {p: np.array([t == synth.CATEGORIES[c % 16] for c, t in enumerate(d)])
           for p, d in draws.items()}  # fmt: skip
    assert own[1.0].all()
    assert abs(own[0.0].mean() - 1 / 16) < 0.04
    assert abs(own[0.5].mean() - (0.5 + 0.5 / 16)) < 0.08
    assert len(set(draws[0.0])) == 16
    moved = ~own[0.5]
    assert moved.any() and (np.array(draws[0.2])[moved] == np.array(draws[0.5])[moved]).all()
    assert (own[0.5] | ~own[0.2]).all()  # bound at 0.2 -> bound at 0.5


def test_unbound_texture_changes_only_textures(tmp_path: Path) -> None:
    """At p < 1 the masks (shapes, layout) are those of p = 1; only some textures move."""
    free = dataclasses.replace(TINY, texture_class_bound=0.0, train_per_class=1, val_per_class=0)
    bound = dataclasses.replace(free, texture_class_bound=1.0)
    synth.generate(free, tmp_path / "free")
    synth.generate(bound, tmp_path / "bound")
    masks = {p: _files(tmp_path / p / "masks") for p in ("free", "bound")}
    assert masks["free"] == masks["bound"]
    images = {p: _files(tmp_path / p / "train") for p in ("free", "bound")}
    assert images["free"] != images["bound"]
    meta = json.loads((tmp_path / "free" / "meta.json").read_text())
    assert meta["config"]["texture_class_bound"] == 0.0
    with pytest.raises(ValueError, match="texture_class_bound"):
        synth.SynthConfig(texture_class_bound=1.5)
