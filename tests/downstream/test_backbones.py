"""Tests of the dense-prediction backbones (pixmim.downstream.backbones): torch + timm only.

Nothing here imports OpenMMLab (see test_openmmlab.py for the registry and Runner side).
"""

from __future__ import annotations

import pytest
import torch

from pixmim import registry
from pixmim.downstream.backbones import load_encoder, read_checkpoint
from pixmim.families.convvit.nets import ConvViTPyramid
from pixmim.families.vit.nets import (
    SegViT,
    SimpleFPN,
    ViTDet,
    default_global_blocks,
    default_out_indices,
)
from pixmim.methods import VIT_ARCHS as ARCHS
from pixmim.models import create_model

ARCH = "vit_cpu_patch8_64"  # depth 4, patch 8, 64 px
CONV_ARCH = "convvit_cpu_64"
# every registered method of MAE's (the plain ViT's) family
VIT_METHODS = tuple(m for m, spec in registry.methods().items()
                    if spec.family == registry.method("mae").family)
D, DEPTH = ARCHS[ARCH]["embed_dim"], ARCHS[ARCH]["depth"]


def _pretrained(method: str, arch: str = ARCH, seed: int = 0) -> torch.nn.Module:
    """A pretraining model with every tensor perturbed away from its init (biases, tokens and
    the fixed sin-cos grid included), so a key loaded into the wrong place shows."""
    torch.manual_seed(seed)
    model = create_model(method, arch)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _save(path, model, method: str, arch: str):
    torch.save({"model": model.state_dict(), "meta": {"method": method, "arch": arch}}, path)
    return path


def _pretrain_only(state: dict, *, cls_token: bool) -> set[str]:
    keys = {k for k in state
            if k.startswith(("decoder_", "mask_token", "norm.", "fusion_"))}
    return keys | ({"cls_token"} if cls_token else set())


# ---------------------------------------------------------------------------- key sets


@pytest.mark.parametrize("method", VIT_METHODS)
def test_segvit_loads_exactly_the_encoder(method):
    model = _pretrained(method)
    state = model.state_dict()
    backbone = SegViT(method, ARCH, img_size=64)
    result = load_encoder(backbone, dict(state), method, ARCH)

    own = set(backbone.state_dict())
    assert set(result["added"]) == {f"blocks.{i}.attn.relative_position_bias_table"
                                    for i in range(DEPTH)}
    assert set(result["dropped"]) == _pretrain_only(state, cls_token=False)
    if method == "mff":
        assert any(k.startswith("fusion_") for k in result["dropped"])
    assert set(result["loaded"]) | set(result["added"]) == own
    assert not set(result["loaded"]) & set(result["added"])
    # The fused qkv bias is split: q and v biases kept, the key bias dropped.
    qkv = state["blocks.2.attn.qkv.bias"]
    torch.testing.assert_close(backbone.blocks[2].attn.q_bias.data, qkv[:D], rtol=0, atol=0)
    torch.testing.assert_close(backbone.blocks[2].attn.v_bias.data, qkv[2 * D:], rtol=0, atol=0)
    torch.testing.assert_close(backbone.cls_token.data, state["cls_token"], rtol=0, atol=0)


@pytest.mark.parametrize("method", VIT_METHODS)
def test_vitdet_loads_exactly_the_encoder(method):
    model = _pretrained(method)
    state = model.state_dict()
    backbone = ViTDet(method, ARCH, img_size=96, window_size=4)
    result = load_encoder(backbone, dict(state), method, ARCH)

    own = set(backbone.state_dict())
    assert set(result["added"]) == {f"blocks.{i}.attn.rel_pos_{a}"
                                    for i in range(DEPTH) for a in "hw"}
    assert set(result["dropped"]) == _pretrain_only(state, cls_token=True)
    assert set(result["loaded"]) | set(result["added"]) == own
    torch.testing.assert_close(backbone.blocks[1].attn.qkv.weight.data,
                               state["blocks.1.attn.qkv.weight"], rtol=0, atol=0)
    assert backbone.pos_embed.shape == (1, 12 * 12, D)  # 64 px grid resampled to 96 px


def test_vitdet_pos_embed_drops_the_cls_position():
    model = _pretrained("mae")
    backbone = ViTDet("mae", ARCH, img_size=64, window_size=4)
    load_encoder(backbone, model.state_dict(), "mae", ARCH)
    torch.testing.assert_close(backbone.pos_embed.data, model.pos_embed.data[:, 1:],
                               rtol=0, atol=0)


def test_segvit_resamples_the_grid_and_keeps_the_cls_position():
    model = _pretrained("mae")
    backbone = SegViT("mae", ARCH, img_size=96)
    load_encoder(backbone, model.state_dict(), "mae", ARCH)
    assert backbone.pos_embed.shape == (1, 1 + 12 * 12, D)
    torch.testing.assert_close(backbone.pos_embed.data[:, :1], model.pos_embed.data[:, :1],
                               rtol=0, atol=0)


def test_convvit_pyramid_loads_exactly_the_encoder():
    model = _pretrained("convmae", CONV_ARCH)
    state = model.state_dict()
    backbone = ConvViTPyramid("convmae", CONV_ARCH)
    result = load_encoder(backbone, dict(state), "convmae", CONV_ARCH)
    assert set(result["added"]) == {f"out_norms.{i}.{p}" for i in range(4)
                                    for p in ("weight", "bias")}
    assert set(result["dropped"]) == {k for k in state if k.startswith(
        ("decoder_", "mask_token", "norm.", "stage1_output_decode.", "stage2_output_decode."))}
    assert set(result["loaded"]) | set(result["added"]) == set(backbone.state_dict())


def test_load_encoder_from_a_checkpoint_file(tmp_path):
    model = _pretrained("mff")
    path = _save(tmp_path / "checkpoint.pth", model, "mff", ARCH)
    state, meta = read_checkpoint(path)
    assert meta == {"method": "mff", "arch": ARCH}
    assert state.keys() == model.state_dict().keys()
    backbone = SegViT("mff", ARCH, img_size=64, pretrained=str(path))
    backbone.init_weights()
    torch.testing.assert_close(backbone.patch_embed.proj.weight.data,
                               model.patch_embed.proj.weight.data, rtol=0, atol=0)


# ------------------------------------------------------------------- equivalence


@pytest.mark.parametrize("method", VIT_METHODS)
def test_segvit_with_zero_rel_pos_reproduces_the_pretraining_encoder(method):
    model = _pretrained(method, seed=1)
    backbone = SegViT(method, ARCH, img_size=64, drop_path_rate=0.0).eval()
    load_encoder(backbone, model.state_dict(), method, ARCH)
    assert all(b.attn.relative_position_bias_table.abs().max() == 0 for b in backbone.blocks)
    imgs = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        outs = backbone(imgs)
        x = model.patch_embed(imgs) + model.pos_embed[:, 1:]
        cls = (model.cls_token + model.pos_embed[:, :1]).expand(2, -1, -1)
        x = torch.cat([cls, x], dim=1)
        expected = []
        for blk in model.blocks:
            x = blk(x)
            expected.append(x[:, 1:].transpose(1, 2).reshape(2, D, 8, 8))
    assert backbone.out_indices == (0, 1, 2, 3)
    for got, want in zip(outs, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_convvit_pyramid_stage3_matches_the_pretraining_encoder():
    model = _pretrained("convmae", CONV_ARCH, seed=2)
    backbone = ConvViTPyramid("convmae", CONV_ARCH, drop_path_rate=0.0).eval()
    load_encoder(backbone, model.state_dict(), "convmae", CONV_ARCH)
    imgs = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        x = imgs
        for embed, blocks in ((model.patch_embed1, model.blocks1),
                              (model.patch_embed2, model.blocks2)):
            x = embed(x)
            for blk in blocks:
                x = blk(x)
        x = model.patch_embed4(model.patch_embed3(x).flatten(2).transpose(1, 2)) + model.pos_embed
        for blk in model.blocks3:
            x = blk(x)
        want = backbone.out_norms[2](x.transpose(1, 2).reshape(2, 96, 4, 4))
        got = backbone(imgs)[2]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------ shapes


def test_segvit_four_maps_at_the_patch_stride():
    backbone = SegViT("mae", ARCH, img_size=64).eval()
    with torch.no_grad():
        outs = backbone(torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(2, D, 8, 8)] * 4


def test_segvit_rejects_another_crop():
    with pytest.raises(ValueError, match="64px crops got 96x96"):
        SegViT("mae", ARCH, img_size=64)(torch.randn(1, 3, 96, 96))


def test_vitdet_takes_a_non_square_input():
    backbone = ViTDet("mae", ARCH, img_size=96, window_size=4).eval()
    assert backbone.global_blocks == default_global_blocks(DEPTH) == (1, 3)
    with torch.no_grad():
        (out,) = backbone(torch.randn(2, 3, 96, 128))
    assert out.shape == (2, D, 12, 16)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("patch", [8, 16])
def test_simple_fpn_five_levels_at_strides_4_to_64(patch):
    fpn = SimpleFPN(in_channels=64, out_channels=16, patch_size=patch, num_outs=5)
    h, w = 128, 192
    outs = fpn((torch.randn(2, 64, h // patch, w // patch),))
    assert [tuple(o.shape) for o in outs] == [(2, 16, h // s, w // s)
                                              for s in (4, 8, 16, 32, 64)]


def test_convvit_pyramid_four_maps_at_strides_4_to_32():
    backbone = ConvViTPyramid("convmae", CONV_ARCH).eval()
    assert backbone.out_channels == (32, 48, 96, 96)
    with torch.no_grad():
        outs = backbone(torch.randn(2, 3, 64, 96))  # non-square: position grid interpolated
    levels = zip((32, 48, 96, 96), (4, 8, 16, 32), strict=True)
    assert [tuple(o.shape) for o in outs] == [(2, c, 64 // s, 96 // s) for c, s in levels]


# ------------------------------------------------------------------------ failures


@pytest.mark.parametrize("cls, kw", [(SegViT, dict(img_size=64)),
                                     (ViTDet, dict(img_size=96, window_size=4))])
def test_another_size_is_a_value_error_naming_the_key(cls, kw):
    state = _pretrained("mae").state_dict()
    backbone = cls("mae", "vit_small_patch16_224", **kw)
    with pytest.raises(ValueError, match=rf"patch_embed\.proj\.weight \({D}, 3, 8, 8\) vs "
                                         r"\(384, 3, 16, 16\)"):
        load_encoder(backbone, state, "mae", "vit_small_patch16_224")


@pytest.mark.parametrize("cls, kw", [(SegViT, dict(img_size=64)),
                                     (ViTDet, dict(img_size=96, window_size=4))])
def test_a_convmae_checkpoint_is_refused(tmp_path, cls, kw):
    conv = _pretrained("convmae", CONV_ARCH)
    path = _save(tmp_path / "checkpoint.pth", conv, "convmae", CONV_ARCH)
    backbone = cls("mae", ARCH, **kw)
    with pytest.raises(ValueError, match="checkpoint is convmae/convvit_cpu_64"):
        load_encoder(backbone, path, "mae", ARCH)
    # Without meta (a bare state dict) the key and shape checks still refuse it, naming a key.
    with pytest.raises((ValueError, KeyError), match="pos_embed|patch_embed"):
        load_encoder(backbone, conv.state_dict(), "mae", ARCH)
    with pytest.raises(ValueError, match="convmae has no plain ViT"):
        cls("convmae", CONV_ARCH, **kw)


def test_convvit_pyramid_refuses_a_vit_method():
    with pytest.raises(ValueError, match=r"method mae has no ConvViT \(encoder family vit\)"):
        ConvViTPyramid("mae", ARCH)


@pytest.mark.parametrize("cls, kw", [(SegViT, dict(img_size=64)),
                                     (ViTDet, dict(img_size=96, window_size=4))])
def test_an_unknown_key_is_a_key_error_naming_it(cls, kw):
    state = dict(_pretrained("mae").state_dict())
    state["blocks.0.attn.extra_scale"] = torch.ones(1)
    with pytest.raises(KeyError, match=r"blocks\.0\.attn\.extra_scale"):
        load_encoder(cls("mae", ARCH, **kw), state, "mae", ARCH)


def test_a_missing_encoder_key_is_a_key_error_naming_it():
    state = dict(_pretrained("lsmae").state_dict())
    del state["blocks.1.mlp.fc1.weight"]
    with pytest.raises(KeyError, match=r"blocks\.1\.mlp\.fc1\.weight"):
        load_encoder(SegViT("lsmae", ARCH, img_size=64), state, "lsmae", ARCH)


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_encoder(SegViT("mae", ARCH, img_size=64), tmp_path / "nope.pth", "mae", ARCH)


def test_arch_mismatch_via_meta(tmp_path):
    path = _save(tmp_path / "checkpoint.pth", _pretrained("mae"), "mae", ARCH)
    with pytest.raises(ValueError, match="mae/vit_cpu_patch8_64, the backbone wants mff/"):
        load_encoder(SegViT("mff", ARCH, img_size=64), path, "mff", ARCH)


# --------------------------------------------------------------------- layer ids


@pytest.mark.parametrize("cls, kw", [(SegViT, dict(img_size=64)),
                                     (ViTDet, dict(img_size=96, window_size=4))])
def test_layer_ids(cls, kw):
    backbone = cls("mae", ARCH, **kw)
    assert backbone.num_layers == DEPTH
    assert backbone.layer_id("pos_embed") == 0
    assert backbone.layer_id("patch_embed.proj.weight") == 0
    assert backbone.layer_id("backbone.patch_embed.proj.bias") == 0
    assert backbone.layer_id("blocks.0.norm1.weight") == 1
    assert backbone.layer_id("backbone.blocks.3.mlp.fc2.bias") == 4
    assert backbone.layer_id("neck.something") == DEPTH + 1
    if cls is SegViT:
        assert backbone.layer_id("cls_token") == 0
    # Every parameter gets an id in [0, num_layers + 1].
    ids = {backbone.layer_id(n) for n, _ in backbone.named_parameters()}
    assert ids == set(range(DEPTH + 1))


def test_convvit_pyramid_layer_ids_are_monotone_in_depth():
    backbone = ConvViTPyramid("convmae", CONV_ARCH)  # depths (1, 1, 2)
    assert backbone.num_layers == 1 + 1 + 2 + 2
    order = ["patch_embed1.proj.weight", "blocks1.0.conv1.weight", "patch_embed2.proj.weight",
             "blocks2.0.conv1.weight", "patch_embed3.proj.weight", "blocks3.0.attn.qkv.weight",
             "blocks3.1.attn.qkv.weight", "out_norms.0.weight"]
    ids = [backbone.layer_id(n) for n in order]
    assert ids == sorted(ids) and ids[0] == 0 and ids[-1] == backbone.num_layers + 1
    assert backbone.layer_id("pos_embed") == backbone.layer_id("patch_embed4.weight") \
        == backbone.layer_id("patch_embed3.norm.bias")


def test_default_block_choices():
    assert default_global_blocks(12) == (2, 5, 8, 11)
    assert default_out_indices(12) == (3, 5, 7, 11)
    assert default_global_blocks(24) == (5, 11, 17, 23)
    assert default_out_indices(DEPTH) == (0, 1, 2, 3)
