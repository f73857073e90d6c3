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
