"""Released checkpoints of the plain-ViT family (pixmim.families.vit.formats), both ways.

Each format's checkpoint is written by the official model where it is installable
(mmpretrain 1.2.0's MAE, MFF and ViT ImageClassifier; mmselfsup 1.0.0's PixMIM target
generator; timm's VisionTransformer), with random weights, in its native layout, through
``torch.save`` and back; facebookresearch/mae is not installable (CC BY-NC) and is written
in its key layout, which is ours under ``"model"`` (its encoder-only files without the
decoder). Imported, it loads into our model with strict keys and gives the official
model's features, logits and (full pretrained checkpoints) loss and prediction for the
same input and mask noise. Ours -> theirs -> ours is exact, and ours exported loads into
mmpretrain's and timm's ViT with no missing or unexpected key. A checkpoint of another
arch, format or kind is one line naming the keys. The OpenMMLab tests skip, naming why,
when mmpretrain does not import.
"""

from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from pixmim import families
from pixmim.families.vit import formats
from pixmim.families.vit.formats import FormatError, from_ours, to_ours
from pixmim.families.vit.nets import classifier, load_pretrained
from pixmim.models import create_model
from tests.reference.test_official_equality import ARCH, mmpretrain, mmselfsup_low_freq, official

TINY = "vit_cpu_patch8_64"  # pixmim.methods: 64 px, patch 8, width 64, depth 4, 4 heads
CLASSES = 10


def _randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every weight and buffer of the state dict moved by N(0, 0.1) noise (zero-initialised
    tokens and fixed position tables included), in place; eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in module.state_dict().values():
            if t.is_floating_point():
                t.add_(0.1 * torch.randn(t.shape, generator=g))
    return module.eval()


def _saved(obj, tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    return torch.load(path, map_location="cpu", weights_only=True)


def _imgs(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _ours(method: str, **kw) -> torch.nn.Module:
    return create_model(method, TINY, norm_pix_loss=True, **kw).eval()


def _our_classifier() -> torch.nn.Module:
    return classifier(families.arch("mae", TINY), num_classes=CLASSES).eval()


def _pooled(vit: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    return vit.forward_head(vit.forward_features(x), pre_logits=True)


def _loss_pred_mask(model, imgs):
    torch.manual_seed(123)
    noise = torch.rand(imgs.shape[0], 64)  # mmpretrain's MAEViT draws exactly this first
    with torch.no_grad():
        return model(imgs, noise=noise)


def _official_loss_pred_mask(ref, imgs, target=None):
    torch.manual_seed(123)
    with torch.no_grad():
        latent, mask, ids_restore = ref.backbone(imgs)[:3]  # MFF adds its weights
        pred = ref.neck(latent, ids_restore)
        return ref.head.loss(pred, imgs if target is None else target, mask), pred, mask


def _assert_same_pretraining(ours, ref, imgs, target=None, atol=1e-5):
    loss, pred, mask = _loss_pred_mask(ours, imgs)
    ref_loss, ref_pred, ref_mask = _official_loss_pred_mask(ref, imgs, target)
    assert torch.equal(mask, ref_mask)
    torch.testing.assert_close(pred, ref_pred, rtol=1e-5, atol=atol)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=atol)


def _mm_build(cfg: dict) -> torch.nn.Module:
    mmpretrain()
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    with DefaultScope.overwrite_default_scope("mmpretrain"):
        model = MODELS.build(cfg)
    model.eval()  # (their backbones' train() returns None)
    return model


def _mm_checkpoint(model: torch.nn.Module) -> dict:
    """What mmengine's Runner saves, less the optimizer: ``meta`` and ``state_dict``."""
    from mmengine.runner.checkpoint import get_state_dict, weights_to_cpu

    return {"meta": {"mmengine_version": "0.10", "epoch": 1},
            "state_dict": weights_to_cpu(get_state_dict(model))}


def _mm_classifier() -> torch.nn.Module:
    """mmpretrain's ViT fine-tune model (configs/mae/benchmarks/vit-base-p16_8xb128-coslr-
    100e_in1k.py at the tiny size): avg_featmap, no final norm, LinearClsHead."""
    return _mm_build(dict(
        type="ImageClassifier",
        backbone=dict(type="VisionTransformer", arch=ARCH, img_size=64, patch_size=8,
                      out_type="avg_featmap", final_norm=False, with_cls_token=True),
        neck=None, head=dict(type="LinearClsHead", num_classes=CLASSES, in_channels=64)))


def _mm_vit() -> torch.nn.Module:
    """mmpretrain's plain ViT backbone with MAEViT's final norm (all tokens out)."""
    return _mm_build(dict(type="VisionTransformer", arch=ARCH, img_size=64, patch_size=8,
                          out_type="raw", final_norm=True, with_cls_token=True))


def _mm_probe() -> torch.nn.Module:
    """mmselfsup's PixMIM / mmpretrain's MAE and MFF linear-probe model (mmselfsup
    configs/selfsup/pixmim/classification/vit-base-p16_linear-8xb2048-coslr-torchvision-
    transform-90e_in1k.py, mmpretrain configs/mae/benchmarks/vit-base-p16_8xb2048-linear-
    coslr-90e_in1k.py at the tiny size): the normed cls token, ClsBatchNormNeck (BatchNorm1d
    without affine), VisionTransformerClsHead."""
    return _mm_build(dict(
        type="ImageClassifier",
        backbone=dict(type="VisionTransformer", arch=ARCH, img_size=64, patch_size=8,
                      out_type="cls_token", final_norm=True, with_cls_token=True),
        neck=dict(type="ClsBatchNormNeck", input_features=64),
        head=dict(type="VisionTransformerClsHead", num_classes=CLASSES, in_channels=64)))


def _our_probe(state: dict[str, torch.Tensor]) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Our probe's encoder and head (the linear_probe stage's) with a linear_probe state."""
    from pixmim.stages.linear_probe import build_head

    encoder, head = _ours("mae"), build_head(64, CLASSES).eval()
    assert not encoder.load_state_dict({k: v for k, v in state.items()
                                        if not k.startswith("head.")}, strict=False).unexpected_keys
    head.load_state_dict({k.removeprefix("head."): v for k, v in state.items()
                          if k.startswith("head.")}, strict=True)
    return encoder, head


def _timm_vit(num_classes: int = 0, pool: str = "token") -> VisionTransformer:
    """timm's ViT at the tiny size: ``vit_*.mae`` (encoder: num_classes=0, token pool) or
    the fine-tuned classifier (global average pool, fc_norm, head)."""
    return VisionTransformer(img_size=64, patch_size=8, embed_dim=64, depth=4, num_heads=4,
                             num_classes=num_classes, global_pool=pool).eval()


# ---------------------------------------------------------------- official -> ours
@pytest.mark.parametrize("method", ["mae", "mff"])
def test_mmpretrain_pretrained_imports_with_its_features_loss_and_prediction(method, tmp_path):
    ours = _ours(method)
    ref = _randomise(official(method, ours))
    state, report = to_ours(_saved(_mm_checkpoint(ref), tmp_path), "openmmlab", "pretrained",
                            method, TINY)
    ours.load_state_dict(state, strict=True)
    assert report["encoder_only"] is False and report["dropped"] == []
    imgs = _imgs()
    with torch.no_grad():  # their unmasked pass (MFFViT's mask=None would still mask)
        from mmpretrain.models.backbones import VisionTransformer as MMViT

        feats = MMViT.forward(ref.backbone, imgs)[-1]  # last block, final norm
        torch.testing.assert_close(ours.forward_features(imgs), feats, rtol=1e-5, atol=1e-5)
    _assert_same_pretraining(ours, ref, imgs)


def test_mmselfsup_pixmim_imports_dropping_its_filter_buffer_with_the_same_loss(tmp_path):
    """mmselfsup 1.0.0's PixMIM is mmpretrain's MAE with a LowFreqTargetGenerator, whose
    low-pass mask is a buffer of the checkpoint (``target_generator.low_pass_filter``)."""
    radius = 40 * 64 / 224  # r = 40 at 224 px (PixMIM Sec. 4.1), scaled to 64 px
    gen = mmselfsup_low_freq()(radius=radius, img_size=64)
    ours = _ours("mae", target="lowpass", radius=radius, lowpass_mode="official")
    ref = _randomise(official("mae", ours))
    ckpt = _mm_checkpoint(ref)
    ckpt["state_dict"].update({f"target_generator.{k}": v for k, v in gen.state_dict().items()})
    assert "target_generator.low_pass_filter" in ckpt["state_dict"]
    state, report = to_ours(_saved(ckpt, tmp_path), "openmmlab", "pretrained", "mae", TINY)
    ours.load_state_dict(state, strict=True)
    assert report["dropped"] == ["target_generator.low_pass_filter"]
    imgs = _imgs()
    with torch.no_grad():
        target = gen(imgs)
    _assert_same_pretraining(ours, ref, imgs, target=target, atol=1e-4)


def test_mmpretrain_finetuned_imports_with_its_features_and_logits(tmp_path):
    ref = _randomise(_mm_classifier())
    state, _ = to_ours(_saved(_mm_checkpoint(ref), tmp_path), "openmmlab", "finetuned", "mae",
                       TINY)
    ours = _our_classifier()
    ours.load_state_dict(state, strict=True)
    imgs = _imgs()
    with torch.no_grad():
        torch.testing.assert_close(_pooled(ours, imgs), ref.extract_feat(imgs)[0])
        torch.testing.assert_close(ours(imgs), ref(imgs, mode="tensor"))


def test_openmmlab_linear_probe_imports_with_its_features_and_logits(tmp_path):
    ref = _randomise(_mm_probe(), seed=10)
    state, _ = to_ours(_saved(_mm_checkpoint(ref), tmp_path), "openmmlab", "linear_probe",
                       "mae", TINY)
    assert not any(k.startswith(families.pretrain_only("mae")) for k in state)
    encoder, head = _our_probe(state)
    imgs = _imgs()
    with torch.no_grad():
        feats = encoder.forward_probe_features(imgs)
        torch.testing.assert_close(feats, ref.extract_feat(imgs, stage="backbone")[0])
        torch.testing.assert_close(head(feats), ref(imgs, mode="tensor"))


def test_mae_full_pretrained_imports_with_the_same_loss_and_prediction(tmp_path):
    """facebookresearch/mae's full checkpoint (mae_visualize_*): models_mae.py's keys, ours."""
    ref = _randomise(_ours("mae"), seed=1)
    state, report = to_ours(_saved({"model": ref.state_dict()}, tmp_path), "mae", "pretrained",
                            "mae", TINY)
    ours = _ours("mae")
    ours.load_state_dict(state, strict=True)
    assert report["encoder_only"] is False
    imgs = _imgs()
    for a, b in zip(_loss_pred_mask(ours, imgs), _loss_pred_mask(ref, imgs), strict=True):
        assert torch.equal(a, b)


def test_mae_encoder_only_imports_as_the_encoder_and_says_so(tmp_path):
    """facebookresearch/mae's mae_pretrain_* files: the encoder alone under "model"."""
    ref = _randomise(_ours("mae"), seed=2)
    decoder = families.pretrain_only("mae")
    encoder = {k: v for k, v in ref.state_dict().items() if not k.startswith(decoder)}
    state, report = to_ours(_saved({"model": encoder}, tmp_path), "mae", "pretrained", "mae",
                            TINY)
    assert report["encoder_only"] is True
    assert report["absent"] == sorted(set(ref.state_dict()) - set(encoder))
    assert any(k.startswith("decoder_blocks.") for k in report["absent"])
    ours = _ours("mae")
    result = ours.load_state_dict(state, strict=False)
    assert sorted(result.missing_keys) == report["absent"] and not result.unexpected_keys
    imgs = _imgs()
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_features(imgs), ref.forward_features(imgs))
    # and it fine-tunes: the family's loader takes it, exactly the head and fc_norm missing
    vit = _our_classifier()
    load_pretrained(vit, state, decoder, "mae")
    torch.testing.assert_close(vit.blocks[3].mlp.fc2.weight, ref.blocks[3].mlp.fc2.weight)


@pytest.mark.parametrize("fmt, box", [("mae", "model"), ("timm", None)])
def test_mae_and_timm_finetuned_import_with_the_same_logits(fmt, box, tmp_path):
    """mae's models_vit.VisionTransformer (global_pool: fc_norm) is timm's; both layouts."""
    ref = _randomise(_timm_vit(CLASSES, "avg"), seed=3)
    ckpt = {box: ref.state_dict()} if box else ref.state_dict()
    state, _ = to_ours(_saved(ckpt, tmp_path), fmt, "finetuned", "mae", TINY)
    ours = _our_classifier()
    ours.load_state_dict(state, strict=True)
    imgs = _imgs()
    with torch.no_grad():
        torch.testing.assert_close(ours(imgs), ref(imgs))


@pytest.mark.parametrize("method", ["mae", "mff", "lsmae"])
def test_timm_encoder_imports_as_the_encoder_with_its_features(method, tmp_path):
    ref = _randomise(_timm_vit(), seed=4)  # vit_*.mae: num_classes=0
    state, report = to_ours(_saved(ref.state_dict(), tmp_path), "timm", "pretrained", method,
                            TINY)
    assert report["encoder_only"] is True
    ours = _ours(method)
    assert sorted(ours.load_state_dict(state, strict=False).missing_keys) == report["absent"]
    imgs = _imgs()
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_features(imgs), ref.forward_features(imgs))


# ---------------------------------------------------------------- ours -> theirs -> ours
def _our_states(method: str) -> dict[str, dict[str, torch.Tensor]]:
    from pixmim.stages.linear_probe import build_head

    encoder = {k: v for k, v in _randomise(_ours(method), seed=11).state_dict().items()
               if not k.startswith(families.pretrain_only(method))}
    head = _randomise(build_head(64, CLASSES), seed=12).state_dict()
    return {"pretrained": _randomise(_ours(method), seed=5).state_dict(),
            "finetuned": _randomise(_our_classifier(), seed=6).state_dict(),
            "linear_probe": {**encoder, **{f"head.{k}": v for k, v in head.items()}}}


@pytest.mark.parametrize("method", ["mae", "mff", "lsmae"])
@pytest.mark.parametrize("fmt", formats.FORMATS)
def test_round_trip_is_exact(fmt, method, tmp_path):
    for kind, state in _our_states(method).items():
        if fmt == "timm" and kind == "linear_probe":  # timm's ViT has no BatchNorm head
            with pytest.raises(FormatError, match="unknown checkpoint format/kind 'timm'/"):
                from_ours(state, fmt, kind, method)
            continue
        for encoder_only in (False, True) if kind == "pretrained" else (False,):
            ckpt = _saved(from_ours(state, fmt, kind, method, encoder_only=encoder_only),
                          tmp_path)
            back, report = to_ours(ckpt, fmt, kind, method, TINY)
            want = {k: v for k, v in state.items()
                    if not (report["encoder_only"] and k in report["absent"])}
            assert report["encoder_only"] == (kind == "pretrained" and (
                encoder_only or fmt == "timm"))
            assert set(back) == set(want)
            assert all(torch.equal(back[k], v) for k, v in want.items()), (fmt, kind)


def test_long_seq_mae_is_the_mae_layout_under_its_own_name():
    """facebookresearch/long_seq_mae saves what facebookresearch/mae saves (the module's
    docstring): the same container, keys and tensors for every kind."""
    for kind, state in _our_states("lsmae").items():
        ours, theirs = (from_ours(state, f, kind, "lsmae") for f in ("long_seq_mae", "mae"))
        assert set(ours) == set(theirs) == {"model"}
        assert ours["model"].keys() == theirs["model"].keys(), kind
        assert all(torch.equal(v, theirs["model"][k]) for k, v in ours["model"].items())


@pytest.mark.parametrize("method", ["mae", "mff"])
def test_exported_pretrained_loads_into_mmpretrain_with_the_same_loss(method):
    ours = _randomise(_ours(method), seed=7)
    ref = official(method, ours)
    ref.load_state_dict(from_ours(ours.state_dict(), "openmmlab", "pretrained",
                                  method)["state_dict"], strict=True)
    _assert_same_pretraining(ours, ref, _imgs())


@pytest.mark.parametrize("method", ["mae", "mff"])
def test_exported_encoder_loads_into_mmpretrains_and_timms_vit_with_the_same_features(method):
    ours = _randomise(_ours(method), seed=8)
    mm, tm = _mm_vit(), _timm_vit()
    theirs = from_ours(ours.state_dict(), "openmmlab", "pretrained", method, encoder_only=True)
    backbone = {k.removeprefix("backbone."): v for k, v in theirs["state_dict"].items()}
    assert all(k.startswith("backbone.") for k in theirs["state_dict"])
    mm.load_state_dict(backbone, strict=True)
    tm.load_state_dict(from_ours(ours.state_dict(), "timm", "pretrained", method), strict=True)
    imgs = _imgs()
    with torch.no_grad():
        feats = ours.forward_features(imgs)
        torch.testing.assert_close(mm(imgs)[0], feats)
        torch.testing.assert_close(tm.forward_features(imgs), feats)


def test_exported_finetuned_loads_into_mmpretrains_and_timms_classifier_with_same_logits():
    ours = _randomise(_our_classifier(), seed=9)
    mm, tm = _mm_classifier(), _timm_vit(CLASSES, "avg")
    mm.load_state_dict(from_ours(ours.state_dict(), "openmmlab", "finetuned", "mae")[
        "state_dict"], strict=True)
    tm.load_state_dict(from_ours(ours.state_dict(), "timm", "finetuned", "mae"), strict=True)
    imgs = _imgs()
    with torch.no_grad():
        logits = ours(imgs)
        torch.testing.assert_close(mm(imgs, mode="tensor"), logits)
        torch.testing.assert_close(tm(imgs), logits)


def test_exported_probe_loads_into_mmpretrains_probe_with_the_same_logits():
    state = _our_states("mae")["linear_probe"]
    encoder, head = _our_probe(state)
    mm = _mm_probe()
    mm.load_state_dict(from_ours(state, "openmmlab", "linear_probe", "mae")["state_dict"],
                       strict=True)
    imgs = _imgs()
    with torch.no_grad():
        torch.testing.assert_close(mm(imgs, mode="tensor"),
                                   head(encoder.forward_probe_features(imgs)))


# ---------------------------------------------------------------- checkpoints that do not fit
def _fails(ckpt, fmt, kind, method="mae", arch=TINY, match=None) -> str:
    with pytest.raises(FormatError, match=match) as err:
        to_ours(ckpt, fmt, kind, method, arch)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("fmt", formats.FORMATS)
def test_a_finetuned_checkpoint_given_as_pretrained_fails_naming_the_keys(fmt):
    theirs = from_ours(_our_states("mae")["finetuned"], fmt, "finetuned", "mae")
    msg = _fails(theirs, fmt, "pretrained", match=r"^\w+ pretrained checkpoint does not fit")
    head = "head.fc.weight" if fmt == "openmmlab" else "head.weight"
    assert "missing 2 (norm.bias, norm.weight)" in msg and head in msg


@pytest.mark.parametrize("fmt", formats.FORMATS)
def test_an_encoder_given_as_finetuned_fails_naming_the_head(fmt):
    state = _our_states("mae")["pretrained"]
    theirs = from_ours(state, fmt, "pretrained", "mae", encoder_only=True)
    msg = _fails(theirs, fmt, "finetuned")
    assert "missing 4 (fc_norm.bias, fc_norm.weight, head.bias, head.weight)" in msg


@pytest.mark.parametrize("fmt", ["mae", "openmmlab"])
def test_a_classifier_or_an_encoder_given_as_a_probe_fails_naming_the_keys(fmt):
    states = _our_states("mae")
    msg = _fails(from_ours(states["finetuned"], fmt, "finetuned", "mae"), fmt, "linear_probe",
                 match=r"^\w+ linear_probe checkpoint does not fit")
    # the probe's BatchNorm and Linear and the encoder's final norm, the classifier's head
    assert "missing 7 (head.0.num_batches_tracked, head.0.running_mean" in msg
    assert "unexpected 4 (" in msg and ("head.fc.weight" if fmt == "openmmlab"
                                        else "head.weight") in msg
    msg = _fails(from_ours(states["pretrained"], fmt, "pretrained", "mae", encoder_only=True),
                 fmt, "linear_probe")
    assert "missing 5 (head.0.num_batches_tracked" in msg and "unexpected none" in msg


def test_another_arch_size_fails_naming_keys_and_shapes():
    theirs = from_ours(_our_states("mae")["pretrained"], "openmmlab", "pretrained", "mae")
    msg = _fails(theirs, "openmmlab", "pretrained", arch="vit_small_patch16_224")
    assert "missing 168 (blocks.10.attn.proj.bias" in msg and "and 164 more" in msg
    assert "unexpected none" in msg and "shapes 86 (blocks.0.attn.proj.bias [64] != [384]" in msg


def test_another_format_fails_naming_what_it_found():
    state = _our_states("mae")["pretrained"]
    mm = from_ours(state, "openmmlab", "pretrained", "mae")
    _fails(from_ours(state, "mae", "pretrained", "mae"), "openmmlab", "pretrained",
           match=r"openmmlab checkpoint is a dict with 'state_dict'.*got \['model'\]")
    _fails(mm, "timm", "pretrained", match=r"timm checkpoint is a bare state dict")
    msg = _fails({"model": mm["state_dict"]}, "mae", "pretrained")
    assert "unexpected" in msg and "backbone.cls_token" in msg
    # our key names given as OpenMMLab's are unexpected there, never taken as they are
    msg = _fails({"state_dict": state}, "openmmlab", "pretrained")
    assert "unexpected" in msg and "blocks.0.attn.proj.bias" in msg


def test_another_method_or_a_partial_decoder_fails():
    mff = from_ours(_our_states("mff")["pretrained"], "openmmlab", "pretrained", "mff")
    _fails(mff, "openmmlab", "pretrained", method="mae",
           match=r"missing none, unexpected 7 \(backbone\.proj_layers\.0\.bias")
    mae = from_ours(_our_states("mae")["pretrained"], "openmmlab", "pretrained", "mae")
    _fails(mae, "openmmlab", "pretrained", method="mff",  # decoder there, fusion not
           match=r"missing 7 \(fusion_proj\.0\.bias")
    del mae["state_dict"]["neck.decoder_pred.bias"]
    _fails(mae, "openmmlab", "pretrained", match=r"missing 1 \(decoder_pred\.bias\)")


def test_an_unknown_format_or_a_key_with_no_name_there_is_one_line():
    with pytest.raises(FormatError, match=r"unknown checkpoint format/kind 'vissl'"):
        from_ours({}, "vissl", "pretrained", "mae")
    adaptive = _ours("mae", target="adaptive").state_dict()
    with pytest.raises(FormatError, match=r"no name for mae's keys 1 \(radius_logit\)"):
        from_ours(adaptive, "openmmlab", "pretrained", "mae")
