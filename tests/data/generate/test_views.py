"""Tests of the evaluation views and their corruptions (pixmim.data.generate.{views,corruptions}).

Thresholds were measured on the generator (seeds 0-3, short sides 48-80): gradient energy
(mean |finite difference| of luma) is strictly monotone in severity for the noise, blur and
contrast corruptions on every test image; a nearest-centroid texture classifier (gradient
orientation histogram) gives the texture label of ~55% of cue-conflict images and the shape
label of ~2% (chance 6%). At 48 px (seeds 0-3): sketches are >= 60% (mean ~79%) white paper
(clock, keyboard and oven have many inner contours) with dark pixels >= 0.35 x the contour
length, >= 96% of them within 2 px of it; filled renditions differ from their surround by
>= 0.5 (summed RGB means), line art is >= 0.35 darker on the contour; IN-A targets cover
5.5-19% of the canvas (mean ~11%) over >= 27 colour bins. Asserted bounds leave a margin.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixmim.data.generate import corruptions as C
from pixmim.data.generate import synth, views
from pixmim.data.imagenet_meta import imagenet_info_dir
from pixmim.stages import data as data_stage

SYNTH = synth.SynthConfig(seed=3, train_per_class=0, val_per_class=2, short_side=32)
TINY = views.ViewsConfig(
    seed=5, c_per_class=1, a_per_class=2, r_per_class=5, sketch_per_class=1, cue_per_shape=4,
    size=32, corruptions=("gaussian_noise", "contrast"),
)  # fmt: skip
LUMA = np.array([0.299, 0.587, 0.114])
GEIRHOS = Path(__file__).resolve().parents[4] / "shared/data/geirhos-stimuli/cue-conflict"
CUE_NAME = re.compile(r"^([a-z]+)(\d+)-([a-z]+)(\d+)\.png$")


def _luma(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=float) @ LUMA / 255.0


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def _texture_label(path: Path) -> str:
    """model-vs-human's rule: the last '-'-separated token of the stem, digits removed."""
    return re.sub(r"\d", "", path.stem.split("-")[-1])


def _timm_subset(name: str) -> set[str]:
    keep = {int(t) for t in (imagenet_info_dir() / name).read_text().split()}
    return {c for c in synth.CATEGORIES if synth.IMAGENET_INDEX[c] in keep}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("views") / "synth"
    synth.generate(SYNTH, out)
    return out


@pytest.fixture(scope="module")
def tiny(source: Path) -> tuple[Path, dict]:
    out = source.parent / "views"
    return out, views.generate_views(source, out, TINY, SYNTH)


# ----------------------------------------------------------------------- layouts
def test_class_subsets_are_the_intersection_with_timms_lists() -> None:
    in_a, in_r = views.view_categories("imagenet-a"), views.view_categories("imagenet-r")
    assert set(in_a) == _timm_subset("imagenet_a_indices.txt") and len(in_a) >= 3
    assert set(in_r) == _timm_subset("imagenet_r_indices.txt") and len(in_r) >= 2
    assert views.view_categories("imagenet-sketch") == synth.CATEGORIES


def test_layouts_match_the_real_datasets(source: Path, tiny: tuple[Path, dict]) -> None:
    out, meta = tiny
    assert sorted(p.name for p in out.iterdir()) == sorted([*views.VIEWS, "meta.json"])
    wnids = {synth.category_wnid(c): c for c in synth.CATEGORIES}
    for corruption in TINY.corruptions:
        for severity in C.SEVERITIES:
            folder = out / "imagenet-c" / corruption / str(severity)
            assert {p.name for p in folder.iterdir()} == set(wnids)
            for wnid in wnids:
                src = sorted((source / "val" / wnid).glob("*.png"))[:1]
                got = sorted(folder.joinpath(wnid).iterdir())
                assert [p.name for p in got] == [p.name for p in src]
                assert Image.open(got[0]).size == Image.open(src[0]).size
    for view, per_class, pattern in (
        ("imagenet-a", TINY.a_per_class, r"^[a-z]+_\d{5}\.png$"),
        ("imagenet-r", TINY.r_per_class, rf"^({'|'.join(views.STYLES)})_\d+\.png$"),
        ("imagenet-sketch", TINY.sketch_per_class, r"^sketch_\d+\.png$"),
    ):
        folders = {p.name: sorted(p.iterdir()) for p in (out / view).iterdir()}
        assert {wnids[w] for w in folders} == set(views.view_categories(view))
        for files in folders.values():
            assert len(files) == per_class and all(re.match(pattern, p.name) for p in files)
            assert Image.open(files[0]).size == (TINY.size, TINY.size)
    assert meta["counts"] == {v: len(list((out / v).rglob("*.png"))) for v in views.VIEWS}
    assert json.loads((out / "meta.json").read_text()) == meta


def test_cue_conflict_names_parse_back_like_the_real_stimuli(tiny: tuple[Path, dict]) -> None:
    out, _ = tiny
    assert {p.name for p in (out / "cue-conflict").iterdir()} == set(synth.CATEGORIES)
    for shape in synth.CATEGORIES:
        files = sorted((out / "cue-conflict" / shape).iterdir())
        assert len(files) == TINY.cue_per_shape
        parsed = [CUE_NAME.match(p.name) for p in files]
        assert all(m and m.group(1) == shape for m in parsed)
        assert {int(m.group(2)) for m in parsed} == {1}  # one shape exemplar, 4 textures
        assert all(_texture_label(p) in synth.CATEGORIES for p in files)
    plan = views.cue_conflict_plan(views.ViewsConfig(cue_per_shape=32))
    for shape in synth.CATEGORIES:
        textures = [t for s, t, _, _ in plan if s == shape]
        assert sorted(textures) == sorted(synth.CATEGORIES * 2)  # each texture once per 16
        assert textures.count(shape) == 2  # 1 in 16, like the real 80 of 1280 (dropped)
        names = [views.cue_conflict_name(s, t, i, j) for s, t, i, j in plan if s == shape]
        assert len(set(names)) == 32
    if GEIRHOS.is_dir():  # the same parser reads the real stimuli
        real = sorted(GEIRHOS.rglob("*.png"))
        assert real and all(CUE_NAME.match(p.name) for p in real)
        assert {_texture_label(p) for p in real} <= set(synth.CATEGORIES)


# ------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_bytes(source: Path, tiny: tuple[Path, dict], tmp_path) -> None:
    again = tmp_path / "again"
    views.generate_views(source, again, TINY, SYNTH, workers=2)  # the pool changes nothing
    assert _files(tiny[0]) == _files(again)


def test_different_seed_gives_different_images(
    source: Path, tiny: tuple[Path, dict], tmp_path: Path
) -> None:
    other = tmp_path / "other"
    views.generate_views(source, other, dataclasses.replace(TINY, seed=TINY.seed + 1), SYNTH)
    a, b = _files(tiny[0]), _files(other)
    named = {k for k in a if not k.startswith("cue-conflict")}  # cue names carry the textures
    assert named == {k for k in b if not k.startswith("cue-conflict")} and len(a) == len(b)
    # contrast has no randomness; every other image must change
    random = [k for k in named if "contrast" not in k]
    assert sum(a[k] != b[k] for k in random) == len(random)
    cue_a = {v for k, v in a.items() if k.startswith("cue-conflict")}
    assert not cue_a & {v for k, v in b.items() if k.startswith("cue-conflict")}


def test_existing_views_are_reused_and_a_different_config_is_refused(
    source: Path, tiny: tuple[Path, dict]
) -> None:
    out, meta = tiny
    assert views.generate_views(source, out, TINY, SYNTH) == meta
    with pytest.raises(FileExistsError):
        views.generate_views(source, out, dataclasses.replace(TINY, size=40), SYNTH)


def test_cli_writes_views_and_refuses_a_stale_out(source: Path, tmp_path: Path) -> None:
    args = ["views", "--src", str(source), "--out", str(tmp_path / "v"), "--views",
            "cue-conflict", "--cue-per-shape", "2", "--size", "32"]  # fmt: skip
    assert data_stage.main(args) == 0
    assert len(list((tmp_path / "v" / "cue-conflict").rglob("*.png"))) == 2 * 16
    assert data_stage.main([*args, "--seed", "9"]) == 1


# ------------------------------------------------------------------- corruptions
@pytest.fixture(scope="module")
def clean() -> list[Image.Image]:
    cfg = dataclasses.replace(SYNTH, short_side=48)
    rngs = [np.random.default_rng([1, k]) for k in range(2)]
    return [synth.render(c, c, rng, cfg)[0] for c, rng in zip(("dog", "car"), rngs, strict=True)]


def _energy(img: Image.Image) -> float:
    """Gradient energy: mean |finite difference| of luma (noise raises it, blur lowers it)."""
    lum = _luma(img)
    return float(np.abs(np.diff(lum, axis=0)).mean() + np.abs(np.diff(lum, axis=1)).mean())


@pytest.mark.parametrize("corruption", C.CORRUPTIONS)
def test_each_corruption_changes_the_image_deterministically(corruption, clean) -> None:
    img = clean[0]
    for severity in (1, 5):
        seed = C.corruption_seed(0, corruption, severity, 0, 0)
        out = C.corrupt(img, corruption, severity, seed)
        assert out.size == img.size and out.mode == "RGB"
        assert np.abs(_luma(out) - _luma(img)).mean() > 0.005
        assert out.tobytes() == C.corrupt(img, corruption, severity, seed).tobytes()


@pytest.mark.parametrize("corruption", [*C.FAMILIES["noise"], *C.FAMILIES["blur"], "contrast"])
def test_severity_is_monotone_in_gradient_energy(corruption, clean) -> None:
    sign = 1 if corruption in C.FAMILIES["noise"] else -1  # noise adds edges, blur removes them
    for k, img in enumerate(clean):
        energy = [
            _energy(C.corrupt(img, corruption, s, C.corruption_seed(0, corruption, s, k)))
            for s in C.SEVERITIES
        ]
        assert all(sign * d > 0 for d in np.diff([_energy(img), *energy])), energy


def test_random_corruptions_depend_on_the_seed(clean) -> None:
    for corruption in ("gaussian_noise", "impulse_noise", "glass_blur", "frost", "snow"):
        a, b = (C.corrupt(clean[0], corruption, 3, seed).tobytes() for seed in (1, 2))
        assert a != b, corruption


# ------------------------------------------------------------------ cue-conflict
def _orientation_descriptor(img: Image.Image, mask: np.ndarray) -> np.ndarray:
    """Magnitude-weighted histogram of gradient orientations inside the eroded silhouette."""
    lum = _luma(img)
    gy, gx = np.gradient(lum)
    inner = views._grow(mask, -2)
    mag, ang = np.hypot(gx, gy)[inner], np.arctan2(gy, gx)[inner] % np.pi
    hist = np.bincount((ang / np.pi * 8).astype(int) % 8, weights=mag, minlength=8)
    return np.append(hist / (hist.sum() + 1e-9), mag.mean() / (lum[inner].std() + 1e-6) / 4)


def test_cue_conflict_keeps_the_shape_and_swaps_the_texture() -> None:
    cfg, base = views.ViewsConfig(seed=0, size=64), synth.SynthConfig()
    centroids = {
        t: np.mean([_orientation_descriptor(*views.cue_conflict_image(t, t, i, cfg, base))
                    for i in (1, 2, 3)], axis=0)
        for t in synth.CATEGORIES
    }  # fmt: skip
    texture_hits = shape_hits = n = 0
    for s, shape in enumerate(synth.CATEGORIES):
        own, own_mask = views.cue_conflict_image(shape, shape, 9, cfg, base)
        for texture in (synth.CATEGORIES[(s + d) % 16] for d in (1, 5, 9, 13)):
            img, mask = views.cue_conflict_image(shape, texture, 9, cfg, base)
            assert np.array_equal(mask, own_mask)  # the silhouette is kept exactly
            diff = np.abs(_luma(img) - _luma(own))
            assert diff[~views._grow(mask, 1)].max() == 0 and diff[mask].mean() > 0.02
            d = _orientation_descriptor(img, mask)
            pred = min(centroids, key=lambda t: np.abs(centroids[t] - d).sum())
            texture_hits, shape_hits = (
                texture_hits + (pred == texture),
                shape_hits + (pred == shape),
            )
            n += 1
    assert texture_hits / n > 0.35 and shape_hits / n < 0.1


# ------------------------------------------------------------- A, R and sketch
def test_sketches_are_white_paper_with_dark_strokes_on_the_contour() -> None:
    cfg, base = views.ViewsConfig(seed=2, size=48), synth.SynthConfig()
    white = []
    for c, cat in enumerate(synth.CATEGORIES):
        img, mask = views.sketch_image(cat, views._rng(cfg, "imagenet-sketch", c, 0), cfg, base)
        lum = _luma(img)
        rgb = np.asarray(img, dtype=int)
        assert (rgb.max(axis=-1) - rgb.min(axis=-1)).max() == 0  # grey only
        white.append((lum > 0.8).mean())
        dark = lum < 0.5
        contour = views._outline(mask, 2)
        assert dark.sum() > 0.25 * contour.sum(), cat  # strokes exist
        assert (dark & views._grow(contour, 2)).sum() >= 0.85 * dark.sum(), cat
    assert min(white) > 0.55 and np.mean(white) > 0.7


def test_renditions_keep_the_silhouette_and_replace_the_texture() -> None:
    cfg, base = views.ViewsConfig(seed=1, size=48), synth.SynthConfig()
    for k, style in enumerate(views.STYLES):
        for cat in views.view_categories("imagenet-r"):
            rng = views._rng(cfg, "imagenet-r", 0, k)
            img, mask = views.rendition_image(cat, style, rng, cfg, base)
            rgb = np.asarray(img, dtype=float) / 255.0
            _, same_silhouette = synth.render(cat, cat, views._rng(cfg, "imagenet-r", 0, k),
                                              views._canvas(base, 48 * views._SS))  # fmt: skip
            assert np.array_equal(mask, views._small_mask(same_silhouette, 48))
            if style == "lineart":  # ink on the contour, paper elsewhere
                ring = views._outline(mask, 2)
                assert _luma(img)[ring].mean() < _luma(img)[~views._grow(ring, 2)].mean() - 0.25
            else:  # filled styles: the silhouette stands out from its surround
                inside, outside = rgb[views._grow(mask, -2)], rgb[~views._grow(mask, 2)]
                assert np.abs(inside.mean(0) - outside.mean(0)).sum() > 0.3, (style, cat)


def test_adversarial_targets_are_small_partial_and_on_clutter() -> None:
    cfg, base = views.ViewsConfig(seed=4, size=64), synth.SynthConfig()
    fractions = []
    for k, cat in enumerate(views.view_categories("imagenet-a") * 4):
        img, visible = views.adversarial_image(cat, views._rng(cfg, "imagenet-a", 0, k), cfg, base)
        fractions.append(visible.mean())
        colours = np.unique(np.asarray(img)[~visible] // 32, axis=0)
        assert len(colours) >= 15  # background clutter, not a flat backdrop
    assert 0.02 < min(fractions) and max(fractions) < 0.3 and np.mean(fractions) < 0.18
