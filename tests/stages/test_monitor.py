"""The pretraining monitor (pretrain.monitor): k-NN top-1 and reconstructions at the
expected epochs, in metrics.json and MLflow, without changing the training, surviving a
preemption. The pretrain stage runs in-process at toy size."""

import json
import os
import re
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from pixmim.config import JobConfig, from_dict
from pixmim.data.generate.synth import SynthConfig, generate
from pixmim.engine.loop import Preempted
from pixmim.report.plots import RECON_HEADER_PX, RECON_PANEL_PX
from pixmim.stages import monitor as monitor_mod
from pixmim.stages import pretrain

EPOCHS, EVERY, ROWS = 3, 2, 3  # the monitor runs at epochs 2 (every 2) and 3 (the last)
STEPS = [2, 3]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "synth"
    generate(SynthConfig(seed=2, train_per_class=2, val_per_class=1, short_side=48), out)
    return out


def job(tmp, data, monitor=True, tracking=True) -> JobConfig:
    cfg = {
        "experiment": "mae-lowpass_test", "stage": "pretrain", "method": "mae",
        "arch": "vit_cpu_patch8_64", "variant": {"target": "lowpass", "radius": 40,
                                                 "crop": "src"},
        "data": {"root": str(data), "img_size": 64},
        "train": {"epochs": EPOCHS, "warmup_epochs": 1, "batch_size": 8, "base_lr": 1.5e-3,
                  "seed": 5, "ckpt_every_minutes": 0},
        "tracking": {"tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}", "experiment": "t",
                     "enabled": tracking},
    }
    if monitor:
        cfg["monitor"] = {"knn_every": EVERY, "knn_bank": 24, "knn_queries": 12,
                          "recon_every": EVERY, "recon_images": ROWS}
    return from_dict(JobConfig, cfg)


def weights(out):
    return torch.load(out / "checkpoint.pth", weights_only=True)["model"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data):
    """The same pretraining with the monitor on (tracked) and off."""
    tmp = tmp_path_factory.mktemp("runs")
    on = pretrain.run(job(tmp, data), tmp / "on")
    off = pretrain.run(job(tmp, data, monitor=False, tracking=False), tmp / "off")
    return tmp, on, off


def test_the_monitor_does_not_change_the_training(runs):
    tmp, on, off = runs
    assert "knn_top1" in on and "knn_top1" not in off
    assert on["loss_curve"] == off["loss_curve"]
    a, b = weights(tmp / "on"), weights(tmp / "off")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_knn_top1_at_the_expected_epochs_in_metrics_and_mlflow(runs):
    from mlflow.tracking import MlflowClient

    tmp, on, _ = runs
    written = json.loads((tmp / "on" / "metrics.json").read_text())
    curve = written["knn_curve"]
    assert [c["epoch"] for c in curve] == STEPS
    assert all(0 <= c["top1"] <= 100 for c in curve)
    assert written["knn_top1"] == curve[-1]["top1"]
    assert written["knn"] == {"k": 20, "temperature": 0.07, "bank": 24, "queries": 12,
                              "seed": 0}
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    history = client.get_metric_history(on["mlflow_run_id"], "knn_top1")
    assert sorted((m.step, m.value) for m in history) == [(c["epoch"], c["top1"])
                                                          for c in curve]


def test_a_reconstruction_figure_at_each_logged_step(runs):
    from mlflow.tracking import MlflowClient

    tmp, on, _ = runs
    assert on["reconstructions"] == [f"reconstructions/epoch_{e:04d}.png" for e in STEPS]
    for rel in on["reconstructions"]:
        with Image.open(tmp / "on" / rel) as img:
            assert img.size == (4 * RECON_PANEL_PX, ROWS * RECON_PANEL_PX + RECON_HEADER_PX)
            pixels = np.asarray(img.convert("RGB"), dtype=np.float32)
        # every panel holds an image (not blank): it varies inside
        for r in range(ROWS):
            for c in range(4):
                y = RECON_HEADER_PX + r * RECON_PANEL_PX
                panel = pixels[y: y + RECON_PANEL_PX, c * RECON_PANEL_PX:
                               (c + 1) * RECON_PANEL_PX]
                assert panel.std() > 1.0, (rel, r, c)
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    logged = [a.path for a in client.list_artifacts(on["mlflow_run_id"], "images")]
    steps = sorted(int(m.group(1)) for p in logged if not p.endswith("compressed.webp")
                   and (m := re.search(r"/reconstructions\+step\+(\d+)\+", p)))
    assert steps == STEPS


def test_the_panels_are_original_masked_prediction_target(tmp_path, data):
    """Column by column: the masked input is the original where visible and grey where
    removed; the prediction equals the original on the visible patches; the target is the
    low-passed original, not the original."""
    cfg = job(tmp_path, data, tracking=False)
    model = pretrain.build(cfg).eval()
    mon = monitor_mod.Monitor(model, cfg, tmp_path, pretrain.distributed.DistInfo())
    with torch.no_grad():
        panels = torch.from_numpy(mon.panels())  # [rows, 4, H, W, 3]
    original, masked, prediction, target = panels.unbind(1)
    grey = (masked == 0.5).all(-1)
    visible = ~grey
    assert 0.5 < grey.float().mean() < 0.9  # 75% of the patches removed
    assert torch.allclose(masked[visible], original[visible])
    assert torch.allclose(prediction[visible], original[visible], atol=1e-5)
    assert not torch.allclose(target, original, atol=0.02)  # the low-passed target


def test_knn_reads_the_probe_features_standardised_by_the_bank(tmp_path, data):
    """The monitor's k-NN: the encoder's probe features of its drawn bank and queries,
    standardised per dimension by the bank's statistics, through DINO's vote."""
    from pixmim.evaluation.knn import knn_top1

    cfg = job(tmp_path, data, tracking=False)
    model = pretrain.build(cfg).eval()
    mon = monitor_mod.Monitor(model, cfg, tmp_path, pretrain.distributed.DistInfo())
    (bank, bank_y), (queries, query_y) = mon.images("bank"), mon.images("queries")
    assert (len(bank), len(queries)) == (24, 12)
    assert len(set(bank_y.tolist())) > 8 and (query_y >= 0).all()  # labels by class folder
    with torch.no_grad():
        fb = model.forward_probe_features(monitor_mod.normalise(bank))
        fq = model.forward_probe_features(monitor_mod.normalise(queries))
        mean, std = fb.mean(0), fb.std(0) + 1e-6
        want = knn_top1((fb - mean) / std, bank_y, (fq - mean) / std, query_y, 20, 0.07)
        assert mon.knn_top1() == pytest.approx(want)


def test_the_rng_is_restored():
    torch.manual_seed(3)
    before = torch.get_rng_state()
    with monitor_mod.preserved_rng(torch.device("cpu")):
        torch.rand(5)
        np.random.rand(3)
    assert torch.equal(torch.get_rng_state(), before)


def test_the_training_is_unchanged_when_it_draws_from_the_global_rng(tmp_path, data,
                                                                     monkeypatch):
    """With masks drawn from the global torch RNG (as timm's drop path would), the training
    after a monitor call still matches the run without it: the monitor restores the RNG."""
    def global_noise(seeds, units):
        return torch.rand(len(seeds), units)

    monkeypatch.setattr(pretrain, "mask_noise", global_noise)
    on = pretrain.run(job(tmp_path, data, tracking=False), tmp_path / "on")
    off = pretrain.run(job(tmp_path, data, monitor=False, tracking=False), tmp_path / "off")
    assert on["loss_curve"] == off["loss_curve"]
    for key, value in weights(tmp_path / "on").items():
        assert torch.equal(value, weights(tmp_path / "off")[key]), key


def test_the_curve_survives_a_preemption(tmp_path, data, runs, monkeypatch):
    """SIGTERM in epoch 3 (after the k-NN of epoch 2): the rerun resumes and ends with the
    uninterrupted run's curve and figures, the curve's points in the one MLflow run."""
    from mlflow.tracking import MlflowClient

    calls = {"n": 0}
    real = pretrain.mask_noise

    def noise(seeds, units):
        calls["n"] += 1
        if calls["n"] == 10:  # epoch 3's second batch (4 batches per epoch)
            os.kill(os.getpid(), signal.SIGTERM)
        return real(seeds, units)

    monkeypatch.setattr(pretrain, "mask_noise", noise)
    with pytest.raises(Preempted):
        pretrain.run(job(tmp_path, data), tmp_path / "out")
    assert not (tmp_path / "out" / "metrics.json").exists()
    monkeypatch.setattr(pretrain, "mask_noise", real)
    resumed = pretrain.run(job(tmp_path, data), tmp_path / "out")
    _, reference, _ = runs
    assert resumed["knn_curve"] == reference["knn_curve"]
    assert resumed["reconstructions"] == reference["reconstructions"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    history = client.get_metric_history(resumed["mlflow_run_id"], "knn_top1")
    assert sorted({m.step for m in history}) == STEPS


def test_the_frequency_stage_draws_its_example_with_the_same_code(runs, data, tmp_path):
    """Fig. 1's example (validation image 0, the analysis's mask for it) as one row of the
    monitor's figure: original | masked input | prediction | target."""
    from pixmim.stages import frequency

    tmp, _, _ = runs
    cfg = from_dict(JobConfig, {
        "experiment": "mae-lowpass_test", "stage": "frequency", "method": "mae",
        "arch": "vit_cpu_patch8_64", "data": {"root": str(data), "img_size": 64},
        "train": {"batch_size": 8, "seed": 3}, "tracking": {"enabled": False},
        "pretrain_dir": str(tmp / "on")})
    frequency.run(cfg, tmp_path)
    with Image.open(tmp_path / "example_reconstruction.png") as img:
        assert img.size == (4 * RECON_PANEL_PX, RECON_PANEL_PX + RECON_HEADER_PX)
        masked = np.asarray(img.convert("RGB"))[RECON_HEADER_PX:, RECON_PANEL_PX:
                                                 2 * RECON_PANEL_PX]
    grey = (np.abs(masked.astype(int) - 128) <= 1).all(-1).mean()
    assert 0.6 < grey < 0.8  # 75% of the patches removed


@pytest.mark.slow
def test_two_processes_monitor_on_the_main_one_without_a_hang(tmp_path, data, runs):
    """Under torchrun (2 gloo processes) the main process runs the monitor while the other
    waits at the epoch's checkpoint barrier: the run ends with the curve and figures."""
    import subprocess
    import sys

    import yaml

    from pixmim import config as config_mod
    from tests.conftest import ROOT

    path = tmp_path / "config.yaml"
    cfg = config_mod.to_dict(job(tmp_path, data))
    cfg["train"]["gpus"] = 2  # two CPU processes over gloo
    path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "pixmim", "pretrain", "--config", str(path), "--out", str(tmp_path / "out")]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["world_size"] == 2
    assert [c["epoch"] for c in m["knn_curve"]] == STEPS
    assert m["reconstructions"] == runs[1]["reconstructions"]
