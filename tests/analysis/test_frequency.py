"""Frequency analysis: band PSNR properties, reconstructions, the stage and its figure."""

import csv
import json
import math

import pytest
import torch
import yaml

from pixmim.__main__ import main as cli
from pixmim.analysis import frequency as fq
from pixmim.data.generate.synth import SynthConfig, generate
from pixmim.models import create_model
from pixmim.models.targets import lowpass
from pixmim.registry import methods
from pixmim.stages.common import save_model

ARCH = "vit_cpu_patch8_64"


def noise_images(n=3, size=64, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_band_edges_and_index():
    assert fq.band_edges(64, 48, 4) == [0.0, 6.0, 12.0, 18.0, 24.0]
    idx = fq.band_index(64, 64, 8)
    assert idx[32, 32] == 0 and idx[32, 36] == 1  # DC at (H//2, W//2); radius 4 -> band 1
    assert idx[0, 0] == 7  # the corners (radius 45 > 32) belong to the last band
    assert set(idx.unique().tolist()) == set(range(8))


def test_identical_images_are_exact_in_every_band():
    x = noise_images()
    psnr = fq.band_psnr(x, x.clone(), 8)
    assert psnr.shape == (8,) and torch.isinf(psnr).all() and (psnr > 0).all()
    assert fq.finite(psnr) == [None] * 8


def test_lowpass_copy_is_exact_in_low_bands_only():
    x = noise_images()
    low = lowpass(x, 12.0, "centered")  # keeps radius <= 12: bands 0-2 of width 4 at 64 px
    psnr = fq.band_psnr(x, low, 8)
    assert (psnr[:3] > 100).all()  # float error only
    assert (psnr[4:] < 30).all()  # the high bands of white noise are gone entirely
    assert psnr[4:].max() < psnr[:3].min() - 70
    assert psnr[3] < psnr[2]  # band 3 holds radius exactly 12 (kept) and 12-16 (removed)


def test_band_components_partition_the_image():
    x = noise_images(2, size=48)
    comps = fq.band_components(x, 6)
    assert comps.shape == (2, 6, 3, 48, 48)
    torch.testing.assert_close(comps.sum(dim=1), x.double(), atol=1e-10, rtol=0)
    # Parseval: the band MSE of (x, 0) is the mean square of each inverse-FFT component
    y = noise_images(2, size=48, seed=1)
    mse = fq.band_mse(x, y, 6)
    direct = (fq.band_components(x, 6) - fq.band_components(y, 6)).square().mean(dim=(2, 3, 4))
    torch.testing.assert_close(mse, direct, atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(mse.sum(1), (x - y).double().square().mean(dim=(1, 2, 3)))


def test_psnr_definition():
    x = torch.zeros(1, 3, 16, 16)
    y = torch.full_like(x, 0.1)  # all error in the DC bin: band 0
    psnr = fq.band_psnr(x, y, 4, max_val=1.0)
    assert psnr[0].item() == pytest.approx(20.0)  # 10 log10(1 / 0.01)
    assert torch.isinf(psnr[1:]).all()
    big = fq.band_psnr(x, y, 4, max_val=255.0)[0].item()
    assert big == pytest.approx(20 + 20 * math.log10(255))
    assert fq.image_psnr(x, y).item() == pytest.approx(20.0)


@pytest.mark.parametrize("target", ["pixel", "lowpass"])
def test_reconstruct_pastes_visible_patches(target):
    torch.manual_seed(0)
    model = create_model("mae", ARCH, target=target, radius=11.43).eval()
    imgs = (noise_images(4) - model.mean) / model.std
    rec, mask = fq.reconstruct(model, imgs, 0.75, seed=7)
    assert rec.shape == imgs.shape and rec.min() >= 0 and rec.max() <= 1
    assert (mask.sum(1) == 64 - 16).all()
    raw = imgs * model.std + model.mean
    removed = model.unpatchify(mask.unsqueeze(-1).expand(-1, -1, 8 * 8 * 3))
    keep = removed == 0
    torch.testing.assert_close(rec[keep], raw.clamp(0, 1)[keep])
    assert not torch.allclose(rec[~keep], raw[~keep], atol=1e-3)  # an untrained prediction
    # the mask is a function of the image's seed only (seed + i), not of the batch
    rec1, mask1 = fq.reconstruct(model, imgs[2:3], 0.75, seed=[9])
    torch.testing.assert_close(mask1, mask[2:3])
    torch.testing.assert_close(rec1, rec[2:3], atol=1e-5, rtol=0)
    other = fq.reconstruct(model, imgs, 0.75, seed=8)[1]
    assert not torch.equal(other, mask)
    same = torch.equal(fq.reconstruct(model, imgs, 0.75, 7, denorm="target")[0], rec)
    assert same == (target == "pixel")  # the target is the image itself for pixel targets


@pytest.mark.parametrize("method", sorted(methods()))
def test_reconstruct_every_method(method):
    """Each registered method's CPU arch: its own patch size and mask units."""
    arch = next(a for a in methods()[method].archs if "cpu" in a)
    model = create_model(method, arch, img_size=64).eval()
    imgs = (noise_images(2) - model.mean) / model.std
    rec, mask = fq.reconstruct(model, imgs, 0.75, seed=0)
    p = model.patch_size
    assert mask.shape == (2, (64 // p) ** 2) and mask.mean().item() == 0.75
    keep = model.unpatchify(mask.unsqueeze(-1).expand(-1, -1, p * p * 3)) == 0
    torch.testing.assert_close(rec[keep], (imgs * model.std + model.mean).clamp(0, 1)[keep])


def tiny_pretrain(tmp_path, target="pixel"):
    torch.manual_seed(0)
    model = create_model("mae", ARCH, img_size=64, target=target, radius=11.43)
    pre = tmp_path / f"pretrain_{target}"
    save_model(pre / "checkpoint.pth", model, {
        "method": "mae", "arch": ARCH,
        "model_kwargs": {"img_size": 64, "target": target, "radius": 11.43}})
    return pre


def job(tmp_path, data, pre, target="pixel"):
    cfg = {"experiment": f"mae-{target}_{ARCH}_1e", "stage": "frequency", "method": "mae",
           "arch": ARCH,
           "data": {"root": str(data), "img_size": 64},
           "train": {"batch_size": 8, "seed": 3},
           "tracking": {"enabled": False}, "pretrain_dir": str(pre)}
    path = tmp_path / f"config_{target}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_stage_writes_bands(tmp_path):
    data = tmp_path / "synth"
    generate(SynthConfig(seed=1, train_per_class=0, val_per_class=1, short_side=48), data)
    out = tmp_path / "out"
    assert cli(["frequency", "--config", str(job(tmp_path, data, tiny_pretrain(tmp_path))),
                "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_images"] == 16 and m["n_bands"] == 16 and len(m["band_psnr"]) == 16
    assert m["band_edges"][0] == 0 and m["band_edges"][-1] == 32
    assert all(v is not None and 0 < v < 200 for v in m["band_psnr"])
    assert m["band_psnr"] == m["band_psnr_target_denorm"]  # pixel target
    assert len(m["band_psnr_patch_stats"]) == 16 and m["psnr_patch_stats"] > 0
    assert len(m["example_band_psnr"]) == 16 and m["example_band_psnr"] != m["band_psnr"]
    # the control: the same model untrained, from the job's seed (here another random init)
    assert len(m["band_psnr_untrained"]) == 16 and m["band_psnr_untrained"] != m["band_psnr"]
    with (out / "bands.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert "psnr_patch_stats_db" in rows[0]
    assert len(rows) == 16 and float(rows[0]["psnr_db"]) == pytest.approx(m["band_psnr"][0],
                                                                          abs=1e-3)
    assert (out / "config.resolved.yaml").is_file()
    # re-running gives the same numbers (fixed masks)
    assert cli(["frequency", "--config", str(job(tmp_path, data, tiny_pretrain(tmp_path))),
                "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["band_psnr"] == m["band_psnr"]


def test_stage_needs_a_pretraining(tmp_path):
    cfg = job(tmp_path, tmp_path, tmp_path / "missing")
    assert cli(["frequency", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 1
