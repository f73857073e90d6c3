"""Equality with the official implementations that are installable with a licence that
allows it (Apache-2.0, test-only dependencies in requirements-nodeps.txt): given the same
weights and the same mask noise, our MAE and MFF give mmpretrain 1.2.0's loss, prediction
and mask; our ``official`` low-pass equals mmselfsup 1.0.0's PixMIM target generator.

mmselfsup 1.0.0 asserts mmcv < 2.1.0 at import (we have 2.1.0): its target generator's
module is loaded from its file with a stand-in for the package's registry, its only
mmselfsup import. Each test skips, naming why, when its reference does not import.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import types

import pytest
import torch

from pixmim.models import create_model

# Weights renamed from ours (timm blocks) to mmpretrain's (mmcls-style layers), in order.
_RENAMES = [
    (r"^patch_embed\.proj\.", "patch_embed.projection."),
    (r"^blocks\.", "layers."),
    (r"\.norm1\.", ".ln1."),
    (r"\.norm2\.", ".ln2."),
    (r"\.mlp\.fc1\.", ".ffn.layers.0.0."),
    (r"\.mlp\.fc2\.", ".ffn.layers.1."),
    (r"^norm\.", "ln1."),
]
_NECK = ("mask_token", "decoder_")


def mmpretrain():
    try:
        from pixmim.downstream import mmcv_ext

        mmcv_ext.install()
        import mmpretrain.models  # noqa: F401  (registers the modules)
    except Exception as err:  # noqa: BLE001 - any import failure is a reason to skip
        pytest.skip(f"mmpretrain 1.2.0 does not import here: {type(err).__name__}: {err}")
    return sys.modules["mmpretrain.models"]


def to_mmpretrain(state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """Our MAE / MFF state dict -> (backbone, neck) state dicts of mmpretrain's MAE."""
    backbone, neck = {}, {}
    for key, value in state.items():
        if key.startswith(_NECK):
            k = key.replace("decoder_norm.", "ln1.")
            for pat, rep in _RENAMES[2:6]:
                k = re.sub(pat, rep, k)
            neck[k] = value
        else:
            k = key
            for pat, rep in _RENAMES:
                k = re.sub(pat, rep, k)
            backbone[k] = value
    return backbone, neck


# The CPU arch of the tests (pixmim.models.mae: vit_cpu_patch8_64), in mmpretrain's terms.
ARCH = dict(embed_dims=64, num_layers=4, num_heads=4, feedforward_channels=256)


def official(kind: str, ours: torch.nn.Module):
    models = mmpretrain()
    from mmpretrain.registry import MODELS

    backbone = dict(type="MAEViT", arch=ARCH, img_size=64, patch_size=8, mask_ratio=0.75)
    if kind == "mff":
        backbone.update(type="MFFViT", out_indices=list(ours.fusion_layers))
    cfg = dict(type="MAE" if kind == "mae" else "MFF", backbone=backbone,
               neck=dict(type="MAEPretrainDecoder", num_patches=64, patch_size=8, in_chans=3,
                         embed_dim=64, decoder_embed_dim=64, decoder_depth=2,
                         decoder_num_heads=2, mlp_ratio=4.0),
               head=dict(type="MAEPretrainHead", norm_pix=True, patch_size=8,
                         loss=dict(type="PixelReconstructionLoss", criterion="L2")))
    model = MODELS.build(cfg).eval()
    assert models is not None
    return model


def load_ours_into(model, ours: torch.nn.Module) -> None:
    backbone, neck = to_mmpretrain(ours.state_dict())
    extra = {k: v for k, v in backbone.items() if k.startswith("fusion_")}
    for k in extra:
        del backbone[k]
    b = model.backbone.load_state_dict(_mff_keys(backbone, extra), strict=True)
    n = model.neck.load_state_dict(neck, strict=True)
    assert not b.missing_keys and not n.missing_keys


def _mff_keys(backbone: dict, fusion: dict) -> dict:
    """MFF's fusion (ours: fusion_proj.i / fusion_weight; mmpretrain: proj_layers.i /
    proj_weights)."""
    out = dict(backbone)
    for k, v in fusion.items():
        if k.startswith("fusion_proj."):
            out["proj_layers." + k.removeprefix("fusion_proj.")] = v
        elif k == "fusion_weight":
            out["proj_weights"] = v.view(-1, 1, 1, 1)  # theirs: [k, 1, 1, 1]
        else:
            raise KeyError(f"unmapped MFF key {k}")
    return out


def run_both(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    ours = create_model(kind, "vit_cpu_patch8_64", norm_pix_loss=True).eval()
    ref = official(kind, ours)
    load_ours_into(ref, ours)
    imgs = torch.randn(3, 3, 64, 64)
    torch.manual_seed(123)
    noise = torch.rand(3, 64)  # mmpretrain's MAEViT draws exactly this as its first rand
    with torch.no_grad():
        loss, pred, mask = ours(imgs, noise=noise)
        torch.manual_seed(123)
        latent, ref_mask, ids_restore = ref.backbone(imgs)[:3]  # MFF adds its weights
        ref_pred = ref.neck(latent, ids_restore)
        ref_loss = ref.head.loss(ref_pred, imgs, ref_mask)
    return (loss, pred, mask), (ref_loss, ref_pred, ref_mask)


@pytest.mark.parametrize("kind", ["mae", "mff"])
def test_same_weights_same_mask_same_loss_and_prediction_as_mmpretrain(kind):
    (loss, pred, mask), (ref_loss, ref_pred, ref_mask) = run_both(kind)
    assert torch.equal(mask, ref_mask)
    torch.testing.assert_close(pred, ref_pred, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- mmselfsup's PixMIM target
def mmselfsup_low_freq():
    """mmselfsup 1.0.0's LowFreqTargetGenerator class, from its module file."""
    spec = importlib.util.find_spec("mmselfsup")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("mmselfsup 1.0.0 is not installed (requirements-nodeps.txt)")
    path = (f"{list(spec.submodule_search_locations)[0]}/models/target_generators/"
            "low_freq_generator.py")

    class _Registry:
        @staticmethod
        def register_module(*a, **k):
            return lambda cls: cls

    saved = sys.modules.get("mmselfsup.registry")
    sys.modules["mmselfsup.registry"] = types.SimpleNamespace(MODELS=_Registry())
    try:
        mod_spec = importlib.util.spec_from_file_location("_mmselfsup_low_freq", path)
        mod = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(mod)
    except Exception as err:  # noqa: BLE001
        pytest.skip(f"mmselfsup's low_freq_generator.py does not load: {err}")
    finally:
        if saved is None:
            sys.modules.pop("mmselfsup.registry", None)
        else:
            sys.modules["mmselfsup.registry"] = saved
    return mod.LowFreqTargetGenerator


@pytest.mark.parametrize("size, radius", [(224, 40), (64, 40 * 64 / 224), (32, 6)])
def test_official_lowpass_equals_mmselfsups_pixmim_target(size, radius):
    from pixmim.models.targets import lowpass

    gen = mmselfsup_low_freq()(radius=radius, img_size=size)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.manual_seed(0)
    raw = torch.rand(2, 3, size, size)
    normed = (raw - mean) / std
    with torch.no_grad():
        ref = gen(normed)  # un-normalise, filter, abs, re-normalise (its own constants)
    ours = (lowpass(raw, radius, "official") - mean) / std
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
