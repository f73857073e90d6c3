"""``python -m pixmim export``: a model pretrained and fine-tuned here, exported through the
CLI, loads into the other libraries' models with no missing or unexpected key and gives
our features and logits on the same input.

The pretraining and the fine-tune are the real stages at toy size (one epoch each, in this
process). The exported files are read as their libraries read them: mmpretrain 1.2.0's
``MAE`` and ``VisionTransformer`` (``init_cfg=dict(type="Pretrained", prefix="backbone.")``)
and ``ImageClassifier``, timm's ``VisionTransformer``, mmseg 1.2's ``VisionTransformer``
(``init_cfg=dict(type="Pretrained")``), each also loaded with ``strict=True``; the loads go
through mmengine's checkpoint loader with ``weights_only=True``
(:func:`pixmim.downstream.common.setup`). Bad input is one line, exit status 2, and no file.
"""

from __future__ import annotations

import re

import pytest
import torch
import yaml
from timm.models.vision_transformer import VisionTransformer

from pixmim.__main__ import main
from pixmim.config import load_job_config
from pixmim.data.generate.synth import SynthConfig, generate
from pixmim.families.vit.formats import to_ours
from pixmim.models import create_model
from pixmim.models.classifier import load_classifier
from pixmim.stages import finetune, pretrain
from pixmim.stages.common import build_pretrained, save_model
from tests.reference.test_official_equality import ARCH, mmpretrain, official

TINY = "vit_cpu_patch8_64"  # pixmim.methods: 64 px, patch 8, width 64, depth 4, 4 heads
GRID, WIDTH = 8, 64  # 64 px / patch 8; the arch's width


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A toy pretraining of MAE (one epoch) and its fine-tune (one epoch): the folders."""
    tmp = tmp_path_factory.mktemp("export")
    generate(SynthConfig(seed=4, train_per_class=2, val_per_class=1, short_side=48),
             tmp / "synth")
    common = {"method": "mae", "arch": TINY, "experiment": "mae-base_test",
              "data": {"root": str(tmp / "synth"), "img_size": 64},
              "tracking": {"enabled": False}}
    jobs = {"pretrain": {"train": {"epochs": 1, "warmup_epochs": 0, "batch_size": 16,
                                   "base_lr": 1.5e-3}},
            "finetune": {"pretrain_dir": str(tmp / "pretrain"),
                         "train": {"epochs": 1, "warmup_epochs": 0, "batch_size": 16,
                                   "base_lr": 1e-3, "max_eval_batches": 1},
                         "finetune": {"mixup": 0.0, "cutmix": 0.0}}}
    for stage, module in (("pretrain", pretrain), ("finetune", finetune)):
        path = tmp / f"{stage}.yaml"
        path.write_text(yaml.safe_dump({**common, "stage": stage, **jobs[stage]}))
        module.run(load_job_config(path), tmp / stage)
    return tmp


def export(capsys, *argv) -> tuple[int, str, str]:
    """``python -m pixmim export ARGV`` (the CLI's main): status, stdout, stderr."""
    status = main(["export", *map(str, argv)])
    out, err = capsys.readouterr()
    return status, out.strip(), err.strip()


def exported(capsys, source, fmt, out, *extra, what: str = "",
             model: str = "mae/vit_cpu_patch8_64") -> dict:
    """The checkpoint ``export`` wrote, its one line checked (``what`` in its brackets)."""
    status, line, err = export(capsys, source, "--format", fmt, "--out", out, *extra)
    assert status == 0, err
    assert line.startswith(f"exported {model} ") and f"as {fmt}:" in line
    assert line.endswith(f" keys -> {out}") and "\n" not in line
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    state = ckpt.get("state_dict", ckpt.get("model", ckpt))
    assert f": {len(state)} keys" in line and f"{what})" in line
    return ckpt


def _ours_pretrained(runs) -> torch.nn.Module:
    ckpt = torch.load(runs / "pretrain" / "checkpoint.pth", weights_only=True)
    model = build_pretrained(ckpt["meta"])
    model.load_state_dict(ckpt["model"], strict=True)
    return model.eval()


def _imgs(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _openmmlab():
    """mmpretrain's modules registered; mmengine's loader with weights_only=True."""
    mmpretrain()
    from pixmim.downstream import common

    common.setup()


def test_a_model_pretrained_here_loads_into_mmpretrain_with_its_features(runs, capsys, tmp_path):
    _openmmlab()
    from mmengine.runner.checkpoint import _load_checkpoint_with_prefix
    from mmpretrain.models.backbones import VisionTransformer as MMViT

    out = tmp_path / "mae_openmmlab.pth"
    ckpt = exported(capsys, runs / "pretrain" / "checkpoint.pth", "openmmlab", out,
                    what="64 px, encoder and decoder")
    assert ckpt["meta"]["method"] == "mae" and ckpt["meta"]["arch"] == TINY
    ours, imgs = _ours_pretrained(runs), _imgs()
    # the whole pretraining model: mmpretrain's MAE (encoder, decoder, head)
    full = official("mae", ours)
    full.load_state_dict(ckpt["state_dict"], strict=True)
    # its encoder: the plain ViT backbone as a config loads it, and strictly
    vit = MMViT(arch=ARCH, img_size=64, patch_size=8, out_type="raw", final_norm=True,
                init_cfg=dict(type="Pretrained", checkpoint=str(out), prefix="backbone."))
    vit.init_weights()
    strict = MMViT(arch=ARCH, img_size=64, patch_size=8, out_type="raw", final_norm=True)
    strict.load_state_dict(_load_checkpoint_with_prefix("backbone.", str(out)), strict=True)
    with torch.no_grad():
        feats = ours.forward_features(imgs)
        torch.testing.assert_close(MMViT.forward(full.backbone, imgs)[-1], feats)
        for model in (vit, strict):
            model.eval()  # (their backbones' train() returns None)
            torch.testing.assert_close(model(imgs)[0], feats)


def test_a_model_pretrained_here_loads_into_timm_and_mae_with_its_features(runs, capsys,
                                                                          tmp_path):
    ours, imgs = _ours_pretrained(runs), _imgs()
    tm = VisionTransformer(img_size=64, patch_size=8, embed_dim=WIDTH, depth=4, num_heads=4,
                           num_classes=0).eval()  # timm's vit_*.mae layout
    tm.load_state_dict(exported(capsys, runs / "pretrain" / "checkpoint.pth", "timm",
                                tmp_path / "timm.pth"), strict=True)
    # facebookresearch/mae's models_mae.py has our key names: the full model, strictly
    mae = create_model("mae", TINY).eval()
    mae.load_state_dict(exported(capsys, runs / "pretrain" / "checkpoint.pth", "mae",
                                 tmp_path / "mae.pth")["model"], strict=True)
    with torch.no_grad():
        feats = ours.forward_features(imgs)
        torch.testing.assert_close(tm.forward_features(imgs), feats)
        torch.testing.assert_close(mae.forward_features(imgs), feats)


def test_a_model_pretrained_here_loads_into_mmsegs_vit_with_its_features(runs, capsys, tmp_path):
    _openmmlab()
    from mmseg.models.backbones import VisionTransformer as SegViT

    out = tmp_path / "mmseg.pth"
    ckpt = exported(capsys, runs / "pretrain" / "checkpoint.pth", "mmseg", out,
                    what="64 px, encoder only")
    # mmseg's ViT as its MAE / ViT configs set it: LN eps 1e-6, patch bias, final norm
    kw = dict(img_size=64, patch_size=8, embed_dims=WIDTH, num_layers=4, num_heads=4,
              norm_cfg=dict(type="LN", eps=1e-6), patch_bias=True, final_norm=True)
    seg = SegViT(**kw, init_cfg=dict(type="Pretrained", checkpoint=str(out)))
    seg.init_weights()
    strict = SegViT(**kw)
    strict.load_state_dict(ckpt["state_dict"], strict=True)
    ours, imgs = _ours_pretrained(runs), _imgs()
    # and back: our encoder exactly, reported as an encoder without its decoder
    back, report = to_ours(ckpt, "mmseg", "pretrained", "mae", TINY)
    assert report["encoder_only"] and all(k.startswith("decoder_") or k == "mask_token"
                                          for k in report["absent"])
    assert all(torch.equal(v, ours.state_dict()[k]) for k, v in back.items())
    assert set(back) | set(report["absent"]) == set(ours.state_dict())
    with torch.no_grad():
        tokens = ours.forward_features(imgs)[:, 1:]  # the patches: [N, L, D]
        grid = tokens.reshape(-1, GRID, GRID, WIDTH).permute(0, 3, 1, 2)
        for model in (seg, strict):
            model.eval()  # (their backbones' train() returns None)
            torch.testing.assert_close(model(imgs)[0], grid)


def test_a_model_fine_tuned_here_loads_into_mmpretrain_and_timm_with_its_logits(runs, capsys,
                                                                               tmp_path):
    _openmmlab()
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    source = runs / "finetune" / "model.pth"
    ours = load_classifier(source)
    classes = ours.head.out_features
    what = f"{classes} classes, global_pool avg"
    mm_ckpt = exported(capsys, source, "openmmlab", tmp_path / "mm.pth", what=what)
    # mmpretrain's ViT fine-tune model (configs/mae/benchmarks/vit-base-p16_8xb128-coslr-
    # 100e_in1k.py at the toy size): avg_featmap, no final norm, LinearClsHead
    with DefaultScope.overwrite_default_scope("mmpretrain"):
        mm = MODELS.build(dict(
            type="ImageClassifier",
            backbone=dict(type="VisionTransformer", arch=ARCH, img_size=64, patch_size=8,
                          out_type="avg_featmap", final_norm=False, with_cls_token=True),
            neck=None, head=dict(type="LinearClsHead", num_classes=classes, in_channels=WIDTH)))
    mm.load_state_dict(mm_ckpt["state_dict"], strict=True)
    tm = VisionTransformer(img_size=64, patch_size=8, embed_dim=WIDTH, depth=4, num_heads=4,
                           num_classes=classes, global_pool="avg")
    tm.load_state_dict(exported(capsys, source, "timm", tmp_path / "timm.pth", "--kind",
                                "finetuned", what=what), strict=True)
    imgs = _imgs()
    with torch.no_grad():
        logits = ours(imgs)
        torch.testing.assert_close(mm.eval()(imgs, mode="tensor"), logits)
        torch.testing.assert_close(tm.eval()(imgs), logits)


def test_encoder_only_leaves_the_decoder_out(runs, capsys, tmp_path):
    ckpt = exported(capsys, runs / "pretrain" / "checkpoint.pth", "mae", tmp_path / "enc.pth",
                    "--encoder-only", what="64 px, encoder only")
    mae = create_model("mae", TINY)
    missing = mae.load_state_dict(ckpt["model"], strict=False).missing_keys
    assert missing and all(k.startswith(("decoder_", "mask_token")) for k in missing)


# ---------------------------------------------------------------- bad input
def _convmae_checkpoint(path):
    save_model(path, create_model("convmae", "convvit_cpu_64"),
               {"method": "convmae", "arch": "convvit_cpu_64", "img_size": 64})
    return path


def test_a_convmae_checkpoint_exports_in_its_familys_layout(capsys, tmp_path):
    """The family's formats module decides: ConvMAE's own layout (Alpha-VL/ConvMAE's
    ``{"model": ...}``, its key names ours), loaded back strictly into our model."""
    ckpt = exported(capsys, _convmae_checkpoint(tmp_path / "convmae.pth"), "convmae",
                    tmp_path / "out.pth", what="64 px, encoder and decoder",
                    model="convmae/convvit_cpu_64")
    ours = torch.load(tmp_path / "convmae.pth", weights_only=True)["model"]
    assert ckpt["model"].keys() == ours.keys()
    assert all(torch.equal(ckpt["model"][k], v) for k, v in ours.items())


@pytest.mark.parametrize("case, argv, match", [
    ("theirs", ["{theirs}", "--format", "timm"], r"{theirs}: not a pixmim checkpoint \("),
    ("text", ["{text}", "--format", "timm"], r"{text}: not a checkpoint that loads with "),
    ("absent", ["{absent}", "--format", "timm"], r"checkpoint not found: {absent}$"),
    ("format", ["{pre}", "--format", "vissl"],
     r"unknown checkpoint format/kind 'vissl'/'pretrained': formats \['mae', 'openmmlab'"),
    ("mmseg head", ["{ft}", "--format", "mmseg"],
     r"unknown checkpoint format/kind 'mmseg'/'finetuned'.*pretrained only: \['mmseg'\]$"),
    ("kind", ["{pre}", "--format", "timm", "--kind", "finetuned"],
     r"{pre}: a pretrained checkpoint of mae/vit_cpu_patch8_64, not finetuned \(--kind\)$"),
    ("encoder of a head", ["{ft}", "--format", "timm", "--encoder-only"],
     r"{ft}: --encoder-only is for a pretraining, not a finetuned checkpoint$"),
    ("convvit", ["{conv}", "--format", "timm"],  # the ConvMAE family's formats: its own
     r"^unknown checkpoint format/kind 'timm'/'pretrained': formats \['convmae'\], "),
])
def test_bad_input_is_one_line_exit_2_and_no_file(case, argv, match, runs, capsys, tmp_path):
    files = {"pre": runs / "pretrain" / "checkpoint.pth", "ft": runs / "finetune" / "model.pth",
             "theirs": tmp_path / "theirs.pth", "text": tmp_path / "text.pth",
             "absent": tmp_path / "absent.pth", "conv": tmp_path / "convmae.pth"}
    torch.save({"state_dict": {"w": torch.zeros(1)}}, files["theirs"])
    files["text"].write_text("<html>not found</html>")
    _convmae_checkpoint(files["conv"])
    out = tmp_path / "out" / "exported.pth"
    status, line, err = export(capsys, *(a.format(**files) for a in argv), "--out", out)
    assert status == 2 and line == ""
    assert len(err.splitlines()) == 1 and err.startswith("pixmim export: error: "), err
    assert re.search(match.format(**{k: re.escape(str(v)) for k, v in files.items()}),
                     err.removeprefix("pixmim export: error: ")), err
    assert not out.parent.exists()
