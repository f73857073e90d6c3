"""Contract and property tests of ConvMAE and its family's ConvViT, CPU size."""

import pytest
import torch

from pixmim import families
from pixmim.families.convvit.nets import ConvViT, checkpoint_filter, encoder_kwargs
from pixmim.families.convvit.nets import load_pretrained as load_into
from pixmim.methods import CONVMAE_ARCHS as ARCHS
from pixmim.models.convmae import ConvMAE

DROP = families.pretrain_only("convmae")


def convvit_kwargs(arch: str) -> dict:
    return encoder_kwargs(ARCHS[arch])


def load_convmae_encoder(model, state):
    return load_into(model, state, DROP, "convmae")

CPU = "convvit_cpu_64"
L16 = 16  # 64 px / 16 = 4 x 4 tokens
KEEP = int(L16 * 0.25)
TARGETS = dict(pixel={}, lowpass=dict(radius=4), highpass=dict(radius=4),
               adaptive=dict(radius=4, adaptive_range=(2, 8)))


def build(**kw) -> ConvMAE:
    torch.manual_seed(0)
    return ConvMAE(**{**ARCHS[CPU], **kw})


def images(n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def noise(n: int = 2, seed: int = 2) -> torch.Tensor:
    return torch.rand(n, L16, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_forward_and_every_parameter_gets_a_gradient(target):
    model = build(target=target, **TARGETS[target])
    loss, pred, mask = model(images())
    assert torch.isfinite(loss) and loss.ndim == 0 and loss > 0
    assert pred.shape == (2, L16, 16 * 16 * 3) and mask.shape == (2, L16)
    assert (mask.sum(1) == L16 - KEEP).all()
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient for {name}"


def test_mask_upsampled_to_the_conv_stages():
    model, seen = build(), []
    for blk in (model.blocks1[0], model.blocks2[0]):
        blk.register_forward_pre_hook(lambda m, args: seen.append(args[1]))
    _, _, mask = model(images(), noise=noise())
    grid = (1 - mask).view(2, 1, 4, 4)
    for visible, k in zip(seen, (4, 2), strict=True):  # 4x4 and 2x2 cells per token
        assert torch.equal(visible, grid.repeat_interleave(k, 2).repeat_interleave(k, 3))


def test_noise_decides_the_visible_tokens_and_is_deterministic():
    model, imgs, z = build(), images(), noise()
    loss1, _, mask1 = model(imgs, noise=z)
    loss2, _, mask2 = model(imgs, noise=z)
    assert torch.equal(mask1, mask2) and torch.equal(loss1, loss2)
    keep = torch.argsort(z, dim=1)[:, :KEEP]  # the smallest noise values are kept
    assert (mask1.gather(1, keep) == 0).all() and (mask1.sum(1) == L16 - KEEP).all()
    _, _, mask3 = model(imgs, noise=noise(seed=3))
    assert not torch.equal(mask1, mask3)


def masked_cell_next_to_a_visible_one(mask: torch.Tensor) -> tuple[int, int]:
    """A masked token (row, col) of sample 0 with a visible 8-neighbour on the 4x4 grid."""
    m = mask[0].view(4, 4)
    for r in range(4):
        for c in range(4):
            near = m[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2]
            if m[r, c] == 1 and (near == 0).any():
                return r, c
    raise AssertionError("no masked token borders a visible one")


def test_masked_convolution_isolates_masked_regions():
    model, imgs, z = build().eval(), images(1), noise(1)
    latent, mask, _ = model.forward_encoder(imgs, 0.75, z)
    r, c = masked_cell_next_to_a_visible_one(mask)
    edited = imgs.clone()
    edited[..., 16 * r : 16 * r + 16, 16 * c : 16 * c + 16] = 5 * torch.randn(3, 16, 16)
    latent_edited, _, _ = model.forward_encoder(edited, 0.75, z)
    torch.testing.assert_close(latent_edited, latent, atol=1e-6, rtol=0)
    # control: without the masked convolution the same edit leaks into visible tokens
    ids_keep = torch.argsort(z, dim=1)[:, :KEEP]
    leak = model.encode(edited, None, ids_keep) - model.encode(imgs, None, ids_keep)
    assert leak.abs().max() > 1e-3
    # control: editing a visible region does change the latent
    vr, vc = divmod(int(ids_keep[0, 0]), 4)
    edited = imgs.clone()
    edited[..., 16 * vr : 16 * vr + 16, 16 * vc : 16 * vc + 16] += 1.0
    assert (model.forward_encoder(edited, 0.75, z)[0] - latent).abs().max() > 1e-3


def test_fused_and_unfused_attention_agree():
    model, imgs, z = build().eval(), images(), noise()
    model.set_fused_attn(True)
    feats, (loss, _, _) = model.forward_features(imgs), model(imgs, noise=z)
    model.set_fused_attn(False)
    assert not model.blocks3[0].attn.fused_attn and not model.decoder_blocks[0].attn.fused_attn
    torch.testing.assert_close(model.forward_features(imgs), feats, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(model(imgs, noise=z)[0], loss, atol=1e-5, rtol=1e-4)


def test_downstream_api():
    model = build()
    feats = model.forward_features(images())
    assert feats.shape == (2, L16, model.embed_dim) and model.num_patches == L16
    torch.testing.assert_close(model.forward_probe_features(images()), feats.mean(1))
    assert model.probe_pool == "avg" and model.num_mask_units == L16
    assert {"pos_embed", "decoder_pos_embed", "mask_token"} <= model.no_weight_decay()


def convvit(**kw) -> ConvViT:
    return ConvViT(**convvit_kwargs(CPU), num_classes=10, **kw)


def test_convvit_loads_convmae_and_matches_its_features():
    model, vit, imgs = build().eval(), convvit().eval(), images()
    load_convmae_encoder(vit, model.state_dict())  # asserts missing == head + fc_norm
    feats = vit.forward_features(imgs)
    torch.testing.assert_close(feats, model.forward_features(imgs), atol=0, rtol=0)
    torch.testing.assert_close(feats.mean(1), model.forward_probe_features(imgs))
    assert vit(imgs).shape == (2, 10)


def test_convvit_without_fusion_is_the_released_finetune_model():
    model, vit, imgs = build().eval(), convvit(multiscale_fusion=False).eval(), images()
    assert not any(k.startswith(("stage1_output", "norm.")) for k in vit.state_dict())
    load_convmae_encoder(vit, {"model": {f"module.{k}": v for k, v in model.state_dict().items()}})
    model.multiscale_fusion = False  # the same trunk, stopped after the stage-3 blocks
    torch.testing.assert_close(vit.forward_features(imgs), model.encode(imgs), atol=0, rtol=0)


@pytest.mark.parametrize("edit,key", [("drop", "blocks3.1.attn.qkv.weight"),
                                      ("add", "cls_token"), ("add", "head.weight")])
def test_load_names_the_offending_key(edit, key):
    state = build().state_dict()
    assert "decoder_embed.weight" not in checkpoint_filter(state, convvit(), DROP)
    if edit == "drop":
        del state[key]
    else:
        state[key] = torch.zeros(10, 96)
    with pytest.raises(KeyError, match=key.replace(".", r"\.")):
        load_convmae_encoder(convvit(), state)


def test_convvit_drop_path_schedule():
    vit = convvit(drop_path_rate=0.1)
    assert isinstance(vit.blocks1[0].drop_path, torch.nn.Identity)  # rate 0 at the first block
    assert vit.blocks3[-1].drop_path1.drop_prob == pytest.approx(0.1)
    imgs = images()
    assert not torch.equal(vit.train()(imgs), vit(imgs))  # stochastic depth in training
    assert torch.equal(vit.eval()(imgs), vit(imgs))


def test_base_size_builds_on_meta_with_the_published_size():
    with torch.device("meta"):
        model = ConvMAE(**ARCHS["convvit_base_224"])
        vit = ConvViT(**convvit_kwargs("convvit_base_224"), multiscale_fusion=False)
    assert model.patch_size == 16 and model.num_patches == 196
    encoder = sum(p.numel() for k, p in model.named_parameters()
                  if p.requires_grad and not k.startswith(("decoder_", "mask_token")))
    finetune = sum(p.numel() for p in vit.parameters())
    # ConvMAE-B: 88M parameters (Alpha-VL/ConvMAE README, "Main Results on ImageNet-1K")
    assert 84e6 < finetune < 90e6 and 84e6 < encoder < 90e6
