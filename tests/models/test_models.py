"""Contract tests over every registered method x target x crop, and per-method facts."""

import functools

import numpy as np
import pytest
import torch
from PIL import Image

from pixmim.data.generate.synth import SynthConfig, render
from pixmim.data.transforms import CROPS
from pixmim.models import archs, create_model
from pixmim.models.base import TARGETS
from pixmim.registry import methods
from pixmim.stages.pretrain import mask_noise

CPU_ARCH = {"mae": "vit_cpu_patch8_64", "mff": "vit_cpu_patch8_64",
            "lsmae": "vit_cpu_patch8_64", "convmae": "convvit_cpu_64"}


@functools.cache
def _samples(n=2):
    cfg = SynthConfig(short_side=72)
    out = []
    for i in range(n):
        img, fg = render("car", "car", np.random.default_rng(i), cfg)
        out.append((img, Image.fromarray(fg.astype(np.uint8) * 255)))
    return out


def _variant(target):
    if target == "adaptive":
        return {"target": "adaptive", "radius": 11.0, "adaptive_range": (6.0, 17.0)}
    return {"target": target, "radius": 11.43}


def test_every_method_has_a_cpu_arch():
    assert set(CPU_ARCH) == set(methods())


@pytest.mark.parametrize("method", sorted(methods()))
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("crop", sorted(CROPS))
def test_contract_trains_every_method_target_crop(method, target, crop):
    torch.manual_seed(0)
    model = create_model(method, CPU_ARCH[method], **_variant(target))
    transform = CROPS[crop](64)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for step in range(2):
        imgs = torch.stack([transform(img, fg) for img, fg in _samples()])
        noise = mask_noise(torch.tensor([step * 10, step * 10 + 1]), model.num_mask_units)
        loss, pred, mask = model(imgs, noise=noise)
        assert torch.isfinite(loss) and loss.ndim == 0 and loss > 0
        length = model.num_patches
        assert pred.shape[:2] == (2, length) and mask.shape == (2, length)
        assert (mask.sum(1) == length - int(length * (1 - model.mask_ratio))).all()
        loss.backward()
        if step == 0:
            for name, p in model.named_parameters():
                if p.requires_grad:
                    assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient: {name}"
        opt.step()
        opt.zero_grad()
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert "patch_embed.proj.weight" in changed or any("patch_embed" in k for k in changed)


@pytest.mark.parametrize("method", sorted(methods()))
def test_same_noise_same_mask_and_loss(method):
    model = create_model(method, CPU_ARCH[method]).eval()
    imgs = torch.randn(2, 3, 64, 64)
    noise = torch.rand(2, model.num_mask_units)
    a, b = model(imgs, noise=noise), model(imgs, noise=noise)
    assert torch.equal(a[2], b[2]) and torch.equal(a[0], b[0])


@pytest.mark.parametrize("method", sorted(methods()))
def test_fused_and_unfused_attention_agree(method):
    torch.manual_seed(0)
    model = create_model(method, CPU_ARCH[method]).eval()
    imgs, noise = torch.randn(2, 3, 64, 64), torch.rand(2, model.num_mask_units)
    model.set_fused_attn(True)
    fused = model(imgs, noise=noise)[1]
    model.set_fused_attn(False)
    torch.testing.assert_close(model(imgs, noise=noise)[1], fused, atol=1e-5, rtol=1e-4)


def test_lsmae_masks_whole_units():
    # LSMAE: the mask is drawn on 2x2 patch blocks (long_seq_mae: 32-px units at 448 px)
    model = create_model("lsmae", "vit_cpu_patch8_64")
    assert model.num_mask_units == 16 and model.num_patches == 64
    _, _, mask = model(torch.randn(3, 3, 64, 64))
    grid = mask.view(3, 4, 2, 4, 2)
    assert (grid.amin(dim=(2, 4)) == grid.amax(dim=(2, 4))).all()  # each unit all-in or all-out
    assert (mask.sum(1) == 48).all()


def test_lsmae_base_keeps_49_units_of_196():
    with torch.device("meta"):
        model = create_model("lsmae", "vit_base_patch16_448")
    assert model.num_patches == 784 and model.num_mask_units == 196
    assert int(784 * 0.25) == 49 * 4  # kept patches are whole units


def test_mff_fuses_levels_with_equal_initial_weights():
    model = create_model("mff", "vit_cpu_patch8_64")
    assert model.fusion_layers == (0, 1, 2, 3) and len(model.fusion_proj) == 3
    weights = torch.softmax(model.fusion_weight, 0)
    torch.testing.assert_close(weights, torch.full((4,), 0.25))
    # fusion is pretraining-only: features equal a plain MAE encoder with the same weights
    mae = create_model("mae", "vit_cpu_patch8_64")
    mae.load_state_dict({k: v for k, v in model.state_dict().items()
                         if not k.startswith("fusion_")})
    imgs = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(model.forward_features(imgs), mae.forward_features(imgs))


def test_mff_rejects_bad_fusion_layers():
    with pytest.raises(ValueError, match="fusion_layers"):
        create_model("mff", "vit_cpu_patch8_64", fusion_layers=(0, 2))


def test_adaptive_radius_is_learned_within_range():
    model = create_model("mae", "vit_cpu_patch8_64", **_variant("adaptive"))
    assert model.current_radius == pytest.approx(11.0, abs=1e-4)
    opt = torch.optim.SGD([model.radius_logit], lr=50.0)
    for _ in range(3):
        loss = model(torch.randn(2, 3, 64, 64))[0]
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert model.current_radius != pytest.approx(11.0, abs=1e-4)
    assert 6.0 < model.current_radius < 17.0
    with pytest.raises(ValueError, match="adaptive_range"):
        create_model("mae", "vit_cpu_patch8_64", target="adaptive", radius=40.0,
                     adaptive_range=(6.0, 17.0))


def test_highpass_target_is_the_complement_of_lowpass():
    imgs = torch.randn(2, 3, 64, 64)
    low = create_model("mae", "vit_cpu_patch8_64", target="lowpass", radius=8.0,
                       lowpass_mode="centered")
    high = create_model("mae", "vit_cpu_patch8_64", target="highpass", radius=8.0,
                        lowpass_mode="centered")
    pix = create_model("mae", "vit_cpu_patch8_64")
    # in un-normalised space low + high = image; normalisation is affine per channel
    raw = lambda m: m.unpatchify(m.forward_target(imgs)) * m.std + m.mean  # noqa: E731
    torch.testing.assert_close(raw(low) + raw(high), raw(pix), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("method", sorted(methods()))
def test_registry_builds_every_arch(method):
    for arch in archs(method):
        with torch.device("meta"):
            model = create_model(method, arch)
        assert model.num_patches > 0 and model.num_mask_units > 0


def test_registry_errors_name_the_key():
    with pytest.raises(KeyError, match="unknown method 'beit'"):
        create_model("beit", "vit_cpu_patch8_64")
    with pytest.raises(KeyError, match="unknown arch 'vit_huge' for method 'mae'"):
        create_model("mae", "vit_huge")
    with pytest.raises(ValueError, match="variant.target"):
        create_model("mae", "vit_cpu_patch8_64", target="hog")
