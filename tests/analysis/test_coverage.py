"""Object coverage J(F): hand-checkable masks, replay of the real crops, the paper's order."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from pixmim.__main__ import main as cli
from pixmim.analysis import coverage as cv
from pixmim.data.generate.synth import SynthConfig, generate
from pixmim.data.transforms import CROPS, IMAGENET_MEAN, IMAGENET_STD

S, P, RATIO = 64, 8, 0.75
VISIBLE = int((S // P) ** 2 * (1 - RATIO)) / (S // P) ** 2  # 16 of 64 patches


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "synth"
    generate(SynthConfig(seed=0, train_per_class=4, val_per_class=2), out)
    return out


def blocks(h: int, w: int) -> np.ndarray:
    """An asymmetric foreground: a big off-centre block and a small one near a corner."""
    fg = np.zeros((h, w), dtype=bool)
    fg[h // 5 : h // 2, w // 3 : w - 4] = True
    fg[h - 14 : h - 3, 2:12] = True
    return fg


@pytest.mark.parametrize("size", [(128, 128), (80, 112)])
def test_full_foreground_resize(size):
    """No crop keeps everything; masking then keeps the visible patches' share."""
    fg = np.ones(size, dtype=bool)
    plain, masked = zip(*(cv.image_coverage(CROPS["resize"](S), fg, P, RATIO, seed)
                          for seed in range(5)), strict=True)
    assert plain == (1.0,) * 5
    if size[0] % S == 0 and size[1] % S == 0:  # every patch shows as many pixels
        assert masked == (VISIBLE,) * 5
    else:  # patches cover unequal pixel counts (80/64, 112/64 px per output pixel)
        assert np.allclose(masked, VISIBLE, atol=0.02)


def test_corner_object_and_centre_crop():
    """An object in a corner of a wide image is cut away by the centre crop."""
    fg = np.zeros((80, 120), dtype=bool)
    fg[:10, :10] = True
    crop = CROPS["cc"](S)
    j = [cv.image_coverage(crop, fg, P, RATIO, seed) for seed in range(4)]
    assert max(a for a, _ in j) < 0.05
    centred = np.zeros_like(fg)
    centred[30:50, 50:70] = True
    assert cv.image_coverage(crop, centred, P, RATIO, 0)[0] == 1.0


@pytest.mark.parametrize("name", sorted(CROPS))
def test_geometry_replays_the_transform(name):
    """Under one seed, the sampled geometry shows the mask where the real crop puts it."""
    h, w = 80, 112
    fg = blocks(h, w)
    img = Image.fromarray(np.repeat(fg[..., None] * 255, 3, axis=2).astype(np.uint8))
    mask = Image.fromarray(fg.astype(np.uint8) * 255)
    crop = CROPS[name](S)
    for seed in range(6):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            real = crop(img, mask)[0] * IMAGENET_STD[0] + IMAGENET_MEAN[0] > 0.5
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            g = cv.sample_geometry(crop, h, w, foreground=fg)
        ours = cv.render_mask(g, fg)
        assert ours.shape == (S, S)
        assert (ours == real.numpy()).mean() > 0.97, (name, seed)  # edges resample differently


def test_masking_bounds_and_repeatability():
    fg = blocks(80, 112)
    for name in ("rrc", "src", "cc"):
        runs = [cv.image_coverage(CROPS[name](S), fg, P, RATIO, seed) for seed in range(8)]
        assert all(0 <= m <= a <= 1 for a, m in runs)
        assert runs == [cv.image_coverage(CROPS[name](S), fg, P, RATIO, s) for s in range(8)]
    g = cv.sample_geometry(CROPS["resize"](S), 128, 128)
    vis = cv.visible_patches(S // P, RATIO, torch.Generator().manual_seed(0))
    assert vis.sum() == int(64 * (1 - RATIO))
    kept = cv.kept(g, (128, 128), P, vis)  # each visible patch: a 16 x 16 block of the original
    assert kept.sum() == vis.sum() * 16 * 16


def test_reflect_padding_counts_pixels_once():
    """SRC on a square image: the crop shows every row except a few at one border at most."""
    fg = np.ones((64, 64), dtype=bool)
    for seed in range(10):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            g = cv.sample_geometry(CROPS["src"](S), 64, 64)
        assert sorted(set(g.ys.index.tolist())) == list(range(min(g.ys.index),
                                                             max(g.ys.index) + 1))
        assert cv.coverage(fg, g, P) >= (60 / 64) ** 2


def test_stage_on_embedded_dataset(synth, tmp_path):
    """Paper Fig. 6 ordering RRC < CC < SRC (with and without masking), CSV, JSON and PNG."""
    out = tmp_path / "cov"
    rc = cli(["coverage", "--root", str(synth),  # masks: <root>/masks by default
              "--img-size", str(S), "--patch-size", str(P), "--mask-ratio", str(RATIO),
              "--repeats", "2", "--seed", "0", "--crops", "rrc,cc,src,resize",
              "--out", str(out)])
    assert rc == 0
    with (out / "coverage.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and {r["n"] for r in rows} == {"128"}
    j = {(r["crop"], r["masking"]): float(r["J_mean"]) for r in rows}
    for m in ("false", "true"):
        assert j[("rrc", m)] < j[("cc", m)] < j[("src", m)]
    assert j[("resize", "false")] == 1.0
    assert 0.2 < j[("resize", "true")] < 0.3
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == 64 and metrics["upper_bound_masked"] == VISIBLE
    assert (out / "coverage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stage_rejects_bad_arguments(tmp_path):
    with pytest.raises(SystemExit):
        cli(["coverage", "--root", str(tmp_path), "--masks", str(tmp_path), "--img-size", "64",
             "--patch-size", "8", "--crops", "rrc,nope", "--out", str(tmp_path / "o")])
    assert cli(["coverage", "--root", str(tmp_path), "--masks", str(tmp_path), "--img-size",
                "64", "--patch-size", "8", "--out", str(tmp_path / "o")]) == 1  # no split
