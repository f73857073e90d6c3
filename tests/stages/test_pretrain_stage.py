"""The pretrain stage as users run it under torchrun (gloo DDP). Killed and resumed: a
SIGKILL at a random moment, then identical weights, loss curve and MLflow run
(tests/faults/test_kill_resume.py, its ``pretrain`` case)."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from pixmim.data.generate.synth import SynthConfig, generate
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "synth"
    generate(SynthConfig(seed=2, train_per_class=2, val_per_class=1, short_side=48), out)
    return out


def job(tmp, data, **train):
    cfg = {
        "experiment": "mae-pixmim_test", "stage": "pretrain", "method": "mae",
        "arch": "vit_cpu_patch8_64",
        "variant": {"target": "lowpass", "radius": 40, "crop": "src"},
        "data": {"root": str(data), "img_size": 64},
        "train": {"epochs": 3, "warmup_epochs": 1, "batch_size": 8, "base_lr": 1.5e-3,
                  "seed": 5, "ckpt_every_steps": 1, **train},
        "tracking": {"tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}", "experiment": "t"},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def pretrain_cmd(cfg, out, nproc=1):
    if nproc == 1:
        return [sys.executable, "-m", "pixmim", "pretrain", "--config", str(cfg), "--out", str(out)]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", "-m", "pixmim", "pretrain", "--config", str(cfg),
            "--out", str(out)]


def run(cmd, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600, **kw)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def weights(out):
    return torch.load(out / "checkpoint.pth", weights_only=True)["model"]


@pytest.mark.slow
def test_two_process_gloo_ddp_matches_single_process(tmp_path, tiny_data):
    cfg = job(tmp_path, tiny_data, epochs=2)
    run(pretrain_cmd(cfg, tmp_path / "single"))
    run(pretrain_cmd(cfg, tmp_path / "ddp", nproc=2))
    single = json.loads((tmp_path / "single" / "metrics.json").read_text())
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert ddp["world_size"] == 2 and single["world_size"] == 1
    # same samples, augmentations and masks per step: only the reduction order differs
    assert ddp["loss_curve"] == pytest.approx(single["loss_curve"], rel=1e-4)
    a, b = weights(tmp_path / "single"), weights(tmp_path / "ddp")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-5, msg=key)


def test_pretraining_reads_scene_folders_as_places365_names_them(tmp_path, tiny_data):
    """Table 6 pretrains on Places365, whose class folders are scene names (airfield,
    bakery, ...), not ImageNet wnids: the pretraining reads images only and runs."""
    import shutil

    places = tmp_path / "places365"
    for i, f in enumerate(sorted((tiny_data / "train").rglob("*.png"))[:8]):
        dest = places / "train" / ("airfield", "bakery")[i % 2]
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dest / f"{i:08d}.jpg")
    cfg = job(tmp_path, places, epochs=1)
    run(pretrain_cmd(cfg, tmp_path / "out"))
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["loss_curve"]
