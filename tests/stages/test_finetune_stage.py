"""The fine-tune stage: loads the pretrained encoder, trains, saves a loadable classifier."""

import json

import pytest
import torch
import yaml

from pixmim.config import load_job_config
from pixmim.data.datasets import class_balanced_subset
from pixmim.data.generate.synth import SynthConfig, generate
from pixmim.models.classifier import load_classifier
from pixmim.stages import finetune, pretrain
from pixmim.stages.common import save_model


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ft")
    generate(SynthConfig(seed=3, train_per_class=2, val_per_class=1, short_side=48),
             tmp / "synth")
    out = tmp / "pretrain"
    for method, arch in (("mae", "vit_cpu_patch8_64"), ("convmae", "convvit_cpu_64")):
        cfg = load_job_config(_write(tmp / f"{method}.yaml", _job(tmp, method, arch, "pretrain")))
        save_model(out / method / "checkpoint.pth", pretrain.build(cfg),
                   {"method": method, "arch": arch})
        (out / method / "metrics.json").write_text("{}")
    return tmp


def _job(tmp, method, arch, stage, **finetune_keys):
    return {"experiment": f"{method}-base_test", "stage": stage, "method": method, "arch": arch,
            "data": {"root": str(tmp / "synth"), "img_size": 64},
            "pretrain_dir": str(tmp / "pretrain" / method),
            "train": {"epochs": 2, "warmup_epochs": 1, "batch_size": 8, "base_lr": 1e-3,
                      "eval_every": 1},
            "finetune": {"mixup": 0.8, "cutmix": 1.0, "layer_decay": 0.75, **finetune_keys},
            "tracking": {"enabled": False}}


def _write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("method,arch", [("mae", "vit_cpu_patch8_64"),
                                         ("convmae", "convvit_cpu_64")])
def test_finetune_trains_and_saves_a_classifier(pretrained, tmp_path, method, arch):
    cfg = load_job_config(_write(tmp_path / "c.yaml", _job(pretrained, method, arch, "finetune")))
    metrics = finetune.run(cfg, tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["top1_best"] == metrics["top1_best"] and 0 <= saved["top1_best"] <= 100
    assert len(saved["top1_curve"]) == 2 and saved["train_images"] == 32
    model = load_classifier(tmp_path / "out" / "model.pth")
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 1000)


def test_layer_decay_scales_early_blocks_down(pretrained, tmp_path):
    cfg = load_job_config(_write(tmp_path / "c.yaml",
                                 _job(pretrained, "convmae", "convvit_cpu_64", "finetune")))
    model = finetune.build_model(cfg, pretrained / "pretrain" / "convmae")
    from timm.optim import create_optimizer_v2

    opt = create_optimizer_v2(model, "adamw", lr=1.0, weight_decay=0.05, layer_decay=0.5)
    scales = {id(p): g["lr_scale"] for g in opt.param_groups for p in g["params"]}
    stem = scales[id(model.patch_embed1.proj.weight)]
    last_block = scales[id(model.blocks3[-1].attn.qkv.weight)]
    head = scales[id(model.head.weight)]
    assert stem < last_block < head == 1.0


def test_few_shot_subsets_are_class_balanced_and_deterministic():
    targets = [c for c in range(16) for _ in range(64)]
    one = class_balanced_subset(targets, 0.01, seed=0)
    ten = class_balanced_subset(targets, 0.1, seed=0)
    assert len(one) == 16 and len(ten) == 16 * 6  # round(0.64) -> max(1, 1), round(6.4) = 6
    assert sorted({targets[i] for i in one}) == list(range(16))
    assert ten == class_balanced_subset(targets, 0.1, seed=0)
    assert ten != class_balanced_subset(targets, 0.1, seed=1)
    with pytest.raises(ValueError, match="finetune.fraction"):
        class_balanced_subset(targets, 0.0, seed=0)


def test_finetune_few_shot_uses_the_subset(pretrained, tmp_path):
    job = _job(pretrained, "mae", "vit_cpu_patch8_64", "finetune_10pct", fraction=0.5)
    job["train"]["epochs"] = 1
    cfg = load_job_config(_write(tmp_path / "c.yaml", job))
    metrics = finetune.run(cfg, tmp_path / "out")
    assert metrics["train_images"] == 16 and metrics["stage"] == "finetune_10pct"
