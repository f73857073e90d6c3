"""What every stage's run carries besides its metrics: the ``compare`` tag across seeds with
the ``seed`` tag beside it, and the resources it used (pixmim.stages.common)."""

import json

import pytest

from pixmim.config import JobConfig, from_dict
from pixmim.stages.common import compare_key, finish, run_tags


def job(exp: str, stage: str = "linear_probe", **extra) -> JobConfig:
    return from_dict(JobConfig, {"experiment": exp, "stage": stage, "method": "mae",
                                 "arch": "vit_cpu_patch8_64", **extra})


def test_compare_is_shared_by_a_baseline_and_its_variant_over_every_seed():
    ids = [f"mae-{knobs}_vit_cpu_patch8_64_25e_s{seed}" for knobs in ("pixel-rrc",
           "lowpass40-src") for seed in (0, 1, 2)]
    assert {compare_key(job(i)) for i in ids} == {"mae_vit_cpu_patch8_64_25e/linear_probe"}
    assert compare_key(job("mae-pixel-rrc_vit_cpu_patch8_64_25e")) == (
        "mae_vit_cpu_patch8_64_25e/linear_probe")  # an id without a seed keeps its all
    tags = run_tags(job("mae-lowpass40-src_vit_cpu_patch8_64_25e_s2"))
    assert tags["seed"] == "2"
    assert "tags.compare = 'mae_vit_cpu_patch8_64_25e/linear_probe'" in (
        tags["mlflow.note.content"])
    assert "seed" not in run_tags(job("mae-pixel-rrc_vit_cpu_patch8_64_25e"))


def test_finish_records_what_the_job_used(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from pixmim.engine.tracking import Tracker

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = job("mae-pixel-rrc_vit_cpu_patch8_64_2e_s0",
              tracking={"tracking_uri": uri, "experiment": "t"})
    tracker = Tracker(cfg.tracking, "x/linear_probe", {}, {})
    for epoch, speed in ((1, 10.0), (2, 30.0)):
        tracker.log_metrics({"train_loss": 1.0, "images_per_s": speed}, epoch)
    _ = bytearray(64 * 2**20)  # 64 MiB touched: the peak resident set holds it
    written = finish(tmp_path / "out", {"top1_best": 1.0, "world_size": 1}, tracker, cfg)
    used = json.loads((tmp_path / "out" / "metrics.json").read_text())["resources"]
    assert used == written["resources"]
    assert used["wall_s"] > 0 and used["peak_host_mem_mb"] > 64
    assert used["images_per_s"] == pytest.approx(20.0)
    assert used["gpus"] == 0 and used["gpu_hours"] == 0.0  # on the CPU
    assert "peak_gpu_mem_mb" not in used
    run = MlflowClient(tracking_uri=uri).get_run(tracker.run_id)
    assert run.data.metrics["resources/images_per_s"] == pytest.approx(20.0)
    assert run.data.metrics["resources/peak_host_mem_mb"] == pytest.approx(
        used["peak_host_mem_mb"])
