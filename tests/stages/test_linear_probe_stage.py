"""The linear-probe stage: cached feature views are the per-epoch protocol, and the stage
learns real labels while a shuffled-label control stays at chance."""

import random
import shutil

import pytest
import torch
import yaml

from pixmim.config import load_job_config
from pixmim.data.generate.synth import SynthConfig, generate
from pixmim.stages import linear_probe, pretrain
from pixmim.stages.common import save_model


def _untrained(tmp, train_per_class, val_per_class):
    """An untrained CPU-size MAE beside a generated dataset."""
    generate(SynthConfig(seed=5, train_per_class=train_per_class, val_per_class=val_per_class,
                         short_side=72), tmp / "synth")
    cfg = load_job_config(_write(tmp / "pre.yaml", _job(tmp, "pretrain")))
    torch.manual_seed(0)  # the encoder's init: untrained features vary with it (13-20% below)
    save_model(tmp / "pretrain" / "checkpoint.pth", pretrain.build(cfg),
               {"method": "mae", "arch": "vit_cpu_patch8_64",
                "model_kwargs": pretrain.model_kwargs(cfg)})
    (tmp / "pretrain" / "metrics.json").write_text("{}")
    return tmp


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return _untrained(tmp_path_factory.mktemp("lp_small"), 4, 2)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return _untrained(tmp_path_factory.mktemp("lp"), 24, 16)


def _job(tmp, stage, root=None, **train):
    return {"experiment": "mae-base_test", "stage": stage, "method": "mae",
            "arch": "vit_cpu_patch8_64",
            "data": {"root": str(root or tmp / "synth"), "img_size": 64},
            "pretrain_dir": str(tmp / "pretrain"),
            "train": {"epochs": 3, "warmup_epochs": 1, "batch_size": 32, "base_lr": 4.0,
                      "weight_decay": 0.0, "optimizer": "lars", "eval_every": 1, **train},
            "tracking": {"enabled": False}}


def _write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def _probe(encoder, tmp_path, name, root=None, **train):
    cfg = load_job_config(_write(tmp_path / f"{name}.yaml",
                                 _job(encoder, "linear_probe", root, **train)))
    return linear_probe.run(cfg, tmp_path / name)


def test_cached_views_are_the_per_epoch_protocol(small, tmp_path):
    """With as many cached views as epochs, every epoch sees the features of the very
    augmentations the uncached probe draws: the same training and validation curves."""
    fresh = _probe(small, tmp_path, "fresh", feature_views=0)
    cached = _probe(small, tmp_path, "cached", feature_views=3)
    assert cached["loss_curve"] == pytest.approx(fresh["loss_curve"], rel=1e-5)
    assert cached["top1_curve"] == pytest.approx(fresh["top1_curve"], abs=1e-9)
    repeated = _probe(small, tmp_path, "repeated", feature_views=1)  # view 0 three times
    assert repeated["loss_curve"][0] == pytest.approx(fresh["loss_curve"][0], rel=1e-5)
    assert repeated["loss_curve"][1:] != pytest.approx(fresh["loss_curve"][1:], rel=1e-5)


def _shuffle_labels(src, dst, seed=0):
    """A copy of the dataset whose training images are dealt to random class folders
    (class sizes kept): the label no longer depends on the image."""
    shutil.copytree(src, dst)
    files = sorted((dst / "train").glob("*/*"))
    folders = [f.parent for f in files]
    random.Random(seed).shuffle(folders)
    moves = [(f, folder / f"shuffled_{i}{f.suffix}") for i, (f, folder)
             in enumerate(zip(files, folders, strict=True))]
    staged = [(f.rename(f.with_name(f"tmp_{i}{f.suffix}")), to)
              for i, (f, to) in enumerate(moves)]
    for f, to in staged:
        f.rename(to)
    return dst


@pytest.mark.slow
def test_real_labels_learn_and_shuffled_labels_stay_at_chance(encoder, tmp_path):
    """16 classes, 256 validation images: chance is 6.25%, and 99.9% of chance-level
    probes score at most 29 hits, 11.3% (binomial, n=256, p=1/16). The real labels must
    score above that bound even on this untrained encoder's features (13.3%, 19.5%, 19.5%
    for inits 0, 1, 2), the shuffled ones below it (5.5%, 5.9%, 5.5%)."""
    train = dict(epochs=150, warmup_epochs=10, feature_views=2, eval_every=150, base_lr=32.0)
    bound = 100.0 * 29.5 / 256  # between 29 and 30 hits
    real = _probe(encoder, tmp_path, "real", **train)
    shuffled_root = _shuffle_labels(encoder / "synth", tmp_path / "shuffled")
    shuffled = _probe(encoder, tmp_path, "shuffled", shuffled_root, **train)
    assert real["top1_last"] > bound, real
    assert shuffled["top1_last"] < bound, shuffled
