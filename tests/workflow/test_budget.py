"""The budget's throughput figures: measured at the paper's per-GPU batch, or said to be
assumed (batch, GPU, torch version and source file named either way)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pixmim.workflow import budget as B
from pixmim.workflow.catalogue import experiments, load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def results(tmp_path, monkeypatch):
    """An empty benchmarks/results folder that the budget reads instead of the real one."""
    monkeypatch.setattr(B, "BENCHMARKS", tmp_path)
    B.measured.cache_clear()
    yield tmp_path
    B.measured.cache_clear()


def _write(folder: Path, name: str, batch: int, ips: float, device="cuda", **meta) -> None:
    steps = [{"method": "mae", "arch": "vit_base_patch16_224", "precision": "bf16",
              "batch": batch, "images_per_s": ips}]
    (folder / name).write_text(json.dumps({"device": device, "torch": "2.99.0", **meta,
                                           "steps": steps}))


def _mae_job(config):
    exps = experiments(config)
    exp = next(e for e, k in exps.items() if k["method"] == "mae" and k["target"] == "pixel")
    return exps, exp


def test_paper_per_gpu_batch_is_the_batch_over_the_pretraining_layout():
    """MAE at paper scale: 4096 over 1 node x 8 GPUs = 512 per GPU (mmselfsup's 8xb512
    configs); LSMAE's 2048 (PixMIM Table 8) = 256."""
    config = load_config(ROOT / "config" / "paper.yaml")
    exps = experiments(config)
    from pixmim.workflow.jobs import job_config

    per = {exps[e]["method"]: B.job_layout(config, job_config(config, e, "pretrain", exps))
           for e in exps}
    assert (per["mae"]["nodes"], per["mae"]["gpus"], per["mae"]["per_gpu_batch"]) == (1, 8, 512)
    assert per["lsmae"]["per_gpu_batch"] == 256


def test_a_figure_at_another_batch_is_assumed_and_named(results):
    _write(results, "old.json", 64, 1000.0)
    _write(results, "cpu.json", 512, 5.0, device="cpu")  # CPU runs never cost GPU-hours
    config = load_config(ROOT / "config" / "paper.yaml")
    exps, exp = _mae_job(config)
    hours, basis = B.job_hours(config, exps, exp, "pretrain")
    assert basis.startswith("assumed: mae vit_base_patch16_224 bf16: per-GPU batch 512 not "
                            "measured")
    assert "1000 img/s at batch 64" in basis and "old.json" in basis and "2.99.0" in basis
    assert hours == pytest.approx(1_281_167 * 800 / 1000.0 / 3600)


def test_a_figure_at_the_per_gpu_batch_is_measured(results):
    _write(results, "old.json", 64, 1000.0)
    _write(results, "b512.json", 512, 2000.0, device_name="NVIDIA H100 80GB HBM3")
    config = load_config(ROOT / "config" / "paper.yaml")
    exps, exp = _mae_job(config)
    hours, basis = B.job_hours(config, exps, exp, "pretrain")
    assert basis == ("measured: mae vit_base_patch16_224 bf16: 2000 img/s at batch 512 on "
                     "NVIDIA H100 80GB HBM3, torch 2.99.0 (b512.json)")
    assert hours == pytest.approx(1_281_167 * 800 / 2000.0 / 3600)
    res = B.budget(config, ["table2"])["throughput"]
    assert res["measured"] and all(b.startswith("measured") for b in res["measured"])
    assert all(b.startswith("assumed") for b in res["assumed"])


def _paper(tmp_path, *extra):
    nocheck = tmp_path / "nocheck.yaml"  # no ImageNet on this machine
    nocheck.write_text(json.dumps({"results": str(tmp_path / "results")}))
    return load_config(ROOT / "config" / "paper.yaml", *extra, nocheck)


def test_a_released_checkpoint_stands_for_the_pretraining_of_the_same_knobs(tmp_path):
    """Which pretraining each released file replaces, written from config/released.yaml's
    entries (method, variant, arch, epochs) and the catalogue's runs, by hand."""
    config = _paper(tmp_path, ROOT / "config" / "released.yaml")
    got = B.stand_ins(config)
    assert got["mae-lowpass40-src_vit_base_patch16_224_800e_s0"] == ["pixmim_vit_base_800e"]
    assert got["mae-pixel-rrc_vit_base_patch16_224_1600e_s0"] == [
        "mae_vit_base_1600e", "mmpretrain_mae_vit_base_1600e", "timm_mae_vit_base_1600e"]
    assert got["convmae-pixel-rrc_convvit_base_224_1600e_s0"] == ["convmae_base_1600e"]
    assert got["lsmae-pixel-rrc_vit_base_patch16_448_800e_s0"] == ["lsmae_vit_base_800e"]
    assert len(got) == 11  # 15 pretrained releases; the 1600e ViT-B/L ones thrice each
    # no release of a 400-epoch run, of high-pass targets, of MFF at 1600 epochs
    assert not any(e.startswith(("mae-highpass", "mff-pixel-rrc_vit_base_patch16_224_1600e"))
                   for e in got)


def test_the_budget_says_what_the_released_checkpoints_save(tmp_path):
    config = _paper(tmp_path, ROOT / "config" / "released.yaml")
    res = B.budget(config, ["table4", "fig5"])
    t4 = res["targets"]["table4"]
    swapped = {r["experiment"] for r in t4 if "released" in r}
    assert all(r["stage"] == "pretrain" for r in t4 if "released" in r)
    # Table 4 (catalogue: every row at 800 epochs): MAE (mmpretrain's 800e), PixMIM-MAE
    # (mmselfsup's 800e), MFF (800e) and LSMAE (800e) have releases; ConvMAE's is 1600e only,
    # and no PixMIM variant of MFF, ConvMAE or LSMAE was released
    assert swapped == {"mae-pixel-rrc_vit_base_patch16_224_800e_s0",
                       "mae-lowpass40-src_vit_base_patch16_224_800e_s0",
                       "mff-pixel-rrc_vit_base_patch16_224_800e_s0",
                       "lsmae-pixel-rrc_vit_base_patch16_448_800e_s0"}
    kept = sum(r["gpu_hours"] for r in t4 if "released" not in r)
    assert res["with_released"]["table4"] == pytest.approx(kept)
    assert 0 < res["with_released"]["table4"] < sum(r["gpu_hours"] for r in t4)
    # the total counts a shared pretraining's saving once
    saved = {(r["experiment"], r["stage"]): r["gpu_hours"] for rows in res["targets"].values()
             for r in rows if "released" in r}
    assert res["total_with_released"] == pytest.approx(res["total_gpu_hours"]
                                                       - sum(saved.values()))
    # without the released checkpoints in the config nothing is swapped
    plain = B.budget(_paper(tmp_path), ["table4"])
    assert not any("released" in r for r in plain["targets"]["table4"])
    assert plain["with_released"]["table4"] == pytest.approx(
        sum(r["gpu_hours"] for r in plain["targets"]["table4"]))
