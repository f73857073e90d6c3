"""A released checkpoint in each format, written as its authors' code writes it, imported by
the pretrain stage and evaluated by the linear-probe and fine-tune stages at toy size.

Per format: the file is written (mmpretrain 1.2.0's ``MAE`` and ``MFF`` and timm's
``VisionTransformer`` built at the toy arch with random weights and saved as their code saves
them; facebookresearch/mae, long_seq_mae and Alpha-VL/ConvMAE in their key layout, which is
ours, under ``"model"``); the pretrain stage imports it (job config ``released``); the
imported weights equal the file's tensors under names written here from the official layouts
(not by our conversion code); the probe and the fine-tune run one epoch on it with finite
metrics; where the official model is at hand, the probe's frozen features (the encoder as the
probe stage loads it) equal the official model's on the same input. All stages run in this
process.
"""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from timm.models.vision_transformer import VisionTransformer

from pixmim.config import load_job_config
from pixmim.data.generate.synth import SynthConfig, generate
from pixmim.models import create_model
from pixmim.stages import finetune, linear_probe, pretrain
from pixmim.stages.common import load_encoder
from tests.reference.test_official_equality import official

TINY = "vit_cpu_patch8_64"  # pixmim.methods: 64 px, patch 8, width 64, depth 4, 4 heads
DEPTH, DEC_DEPTH = 4, 2  # the tiny arch's encoder and decoder blocks (pixmim.methods.VIT_CPU)
CONV = "convvit_cpu_64"  # ConvMAE's CPU arch (pixmim.methods.CONVMAE_ARCHS)
# timm's Block -> mmpretrain 1.2.0's TransformerEncoderLayer (mmcls names), written from it.
_MM_LAYER = {"norm1": "ln1", "attn.qkv": "attn.qkv", "attn.proj": "attn.proj",
             "norm2": "ln2", "mlp.fc1": "ffn.layers.0.0", "mlp.fc2": "ffn.layers.1"}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """One tiny generated dataset for every case."""
    root = tmp_path_factory.mktemp("released_formats") / "synth"
    generate(SynthConfig(seed=4, train_per_class=2, val_per_class=1, short_side=48), root)
    return root


def _randomised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter and buffer drawn at random (LayerNorm and tokens included, so a
    swapped or missed name cannot pass as an equal default)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=gen) * 0.05)
    model.eval()  # (mmseg's backbones' train() returns None)
    return model


def _mmpretrain_names(fusion: int = 0) -> dict[str, str]:
    """Our key -> mmpretrain 1.2.0's (``MAEViT`` / ``MFFViT`` under ``backbone.``,
    ``MAEPretrainDecoder`` under ``neck.``), written from their modules."""
    names = {"cls_token": "backbone.cls_token", "pos_embed": "backbone.pos_embed",
             "mask_token": "neck.mask_token", "decoder_pos_embed": "neck.decoder_pos_embed"}
    modules = [("patch_embed.proj", "backbone.patch_embed.projection"),
               ("norm", "backbone.ln1"),  # MAEViT's final norm
               ("decoder_embed", "neck.decoder_embed"), ("decoder_norm", "neck.ln1"),
               ("decoder_pred", "neck.decoder_pred")]
    modules += [(f"blocks.{i}.{a}", f"backbone.layers.{i}.{b}")
                for i in range(DEPTH) for a, b in _MM_LAYER.items()]
    modules += [(f"decoder_blocks.{i}.{a}", f"neck.decoder_blocks.{i}.{b}")
                for i in range(DEC_DEPTH) for a, b in _MM_LAYER.items()]
    modules += [(f"fusion_proj.{i}", f"backbone.proj_layers.{i}") for i in range(fusion)]
    names |= {f"{ours}.{p}": f"{theirs}.{p}" for ours, theirs in modules
              for p in ("weight", "bias")}
    return names


def _images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


# Each writer: (checkpoint object as its code saves it, expected our key -> tensor, official
# probe features of an input or None, encoder only).
def _ours(method: str, arch: str, encoder_only: bool = False):
    """facebookresearch/mae, long_seq_mae, Alpha-VL/ConvMAE: our key names under "model"
    (MAE's ``mae_pretrain_*`` files: the encoder alone)."""
    state = _randomised(create_model(method, arch), 3).state_dict()
    if encoder_only:
        state = {k: v for k, v in state.items() if not k.startswith(("decoder_", "mask_token"))}
    return {"model": state}, dict(state), None, encoder_only


def _mmpretrain(kind: str):
    """mmpretrain 1.2.0's MAE or MFF, saved as its runner saves it."""
    from mmpretrain.models.backbones import VisionTransformer as MMViT

    model = _randomised(official(kind, create_model(kind, TINY)), 5)
    theirs = model.state_dict()
    # MFF at the toy arch fuses blocks (0, 1, 2, 3), all but the last projected (MFF_ARCHS)
    names = _mmpretrain_names(fusion=3 if kind == "mff" else 0)
    expected = {ours: theirs[k] for ours, k in names.items()}
    if kind == "mff":  # MFFViT.proj_weights is [k, 1, 1, 1]; ours [k]
        assert theirs["backbone.proj_weights"].shape == (4, 1, 1, 1)
        expected["fusion_weight"] = theirs["backbone.proj_weights"][:, 0, 0, 0]
        names["fusion_weight"] = "backbone.proj_weights"
    assert sorted(names.values()) == sorted(theirs)  # the expectation covers their file

    def features(imgs):  # VisionTransformer's unmasked pass (out_type raw, ln1): the cls
        return MMViT.forward(model.backbone, imgs)[-1][:, 0]

    ckpt = {"state_dict": theirs, "meta": {"mmpretrain_version": "1.2.0", "epoch": 300}}
    return ckpt, expected, features, False


def _timm():
    """timm's ``vit_*.mae`` layout: the encoder alone (``num_classes=0``), a bare state dict."""
    model = _randomised(VisionTransformer(img_size=64, patch_size=8, embed_dim=64, depth=DEPTH,
                                          num_heads=4, num_classes=0), 7)
    state = model.state_dict()
    return state, dict(state), lambda imgs: model.forward_features(imgs)[:, 0], True


CASES = {  # case: method, arch, format, writer
    "mae full": ("mae", TINY, "mae", lambda: _ours("mae", TINY)),
    "mae encoder only": ("mae", TINY, "mae", lambda: _ours("mae", TINY, encoder_only=True)),
    "openmmlab mae": ("mae", TINY, "openmmlab", lambda: _mmpretrain("mae")),
    "openmmlab mff": ("mff", TINY, "openmmlab", lambda: _mmpretrain("mff")),
    "timm": ("mae", TINY, "timm", _timm),
    "long_seq_mae": ("lsmae", TINY, "long_seq_mae", lambda: _ours("lsmae", TINY)),
    "convmae": ("convmae", CONV, "convmae", lambda: _ours("convmae", CONV)),
}


def _run(module, tmp, synth, method, arch, stage, **job):
    data = {"method": method, "arch": arch, "experiment": f"{method}-base_test", "stage": stage,
            "data": {"root": str(synth), "img_size": 64}, "tracking": {"enabled": False}, **job}
    path = tmp / f"{stage}.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = load_job_config(path)
    return cfg, module.run(cfg, tmp / stage)


@pytest.mark.parametrize("case", list(CASES))
def test_a_release_imports_and_evaluates_through_probe_and_fine_tune(case, synth, tmp_path):
    method, arch, fmt, write = CASES[case]
    ckpt, expected, features, encoder_only = write()
    file = tmp_path / f"{fmt}.pth"
    torch.save(ckpt, file)
    released = {"name": "rel", "file": str(file), "source": str(file), "checksum": None,
                "format": fmt, "kind": "pretrained", "published": {}}
    _, pre = _run(pretrain, tmp_path, synth, method, arch, "pretrain", released=released)
    assert pre["epochs"] == 0 and pre["released"]["format"] == fmt
    assert pre["released"]["encoder_only"] is encoder_only

    imported = torch.load(tmp_path / "pretrain" / "checkpoint.pth", weights_only=True)
    assert imported["meta"]["encoder_only"] is encoder_only
    state = imported["model"]
    assert sorted(state) == sorted(expected)
    differ = [k for k, want in expected.items()
              if state[k].shape != want.shape or not torch.equal(state[k], want)]
    assert not differ, f"imported weights differ from the file's: {differ}"

    train = {"epochs": 1, "warmup_epochs": 0, "batch_size": 16, "max_eval_batches": 1}
    probe_cfg, probe = _run(linear_probe, tmp_path, synth, method, arch, "linear_probe",
                            pretrain_dir=str(tmp_path / "pretrain"),
                            train={**train, "base_lr": 0.1, "optimizer": "lars",
                                   "weight_decay": 0.0})
    _, tuned = _run(finetune, tmp_path, synth, method, arch, "finetune",
                    pretrain_dir=str(tmp_path / "pretrain"),
                    train={**train, "base_lr": 1e-3},
                    finetune={"mixup": 0.0, "cutmix": 0.0})
    for metrics in (probe, tuned):  # one epoch each, evaluated once
        assert len(metrics["top1_curve"]) == 1 and metrics["val_images"] > 0
        assert math.isfinite(metrics["top1_best"]) and 0 <= metrics["top1_best"] <= 100
    assert len(probe["loss_curve"]) == 1 and math.isfinite(probe["loss_curve"][0])
    assert math.isfinite(tuned["top5_last"]) and tuned["train_images"] > 0
    if features is not None:  # the probe's frozen encoder, loaded as the stage loads it
        encoder = load_encoder(probe_cfg, tmp_path / "pretrain")
        with torch.no_grad():
            imgs = _images()
            torch.testing.assert_close(encoder.forward_probe_features(imgs), features(imgs))
