"""Property and contract tests of the pretraining models (pixmim.models)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pixmim.models import create_model
from pixmim.models.mae import MAE

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
            decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)


@settings(max_examples=20, deadline=None)
@given(p=st.sampled_from([2, 4, 8]), g=st.integers(1, 6), n=st.integers(1, 3))
def test_patchify_round_trip(p, g, n):
    model = MAE(img_size=p * g, patch_size=p, embed_dim=8, depth=1, num_heads=1,
                decoder_embed_dim=8, decoder_depth=1, decoder_num_heads=1)
    imgs = torch.randn(n, 3, p * g, p * g)
    patches = model.patchify(imgs)
    assert patches.shape == (n, g * g, p * p * 3)
    torch.testing.assert_close(model.unpatchify(patches), imgs, rtol=0, atol=0)
    # patch (0, 1) holds the pixels of rows 0..p-1, columns p..2p-1
    if g > 1:
        expected = imgs[0, :, :p, p : 2 * p].permute(1, 2, 0).reshape(-1)
        torch.testing.assert_close(patches[0, 1], expected)


@settings(max_examples=25, deadline=None)
@given(length=st.integers(4, 200), ratio=st.floats(0.05, 0.95), n=st.integers(1, 4))
def test_random_masking_exact_counts_and_inverse(length, ratio, n):
    x = torch.randn(n, length, 5)
    visible, mask, ids_restore = MAE.random_masking(x, ratio)
    keep = int(length * (1 - ratio))
    assert visible.shape == (n, keep, 5)
    assert (mask.sum(dim=1) == length - keep).all()
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    # the kept tokens are exactly the unmasked ones, in shuffled order
    for i in range(n):
        kept_rows = {tuple(r) for r in x[i][mask[i] == 0].tolist()}
        assert kept_rows == {tuple(r) for r in visible[i].tolist()}
    assert (torch.sort(ids_restore, dim=1).values == torch.arange(length)).all()


def test_mae_base_keeps_49_of_196():
    # MAE Sec. 4: 75% masking of 196 patches keeps int(196 * 0.25) = 49.
    _, mask, _ = MAE.random_masking(torch.zeros(2, 196, 1), 0.75)
    assert (mask.sum(1) == 147).all()


def test_targets_differ_and_lowpass_is_smoother():
    torch.manual_seed(0)
    imgs = torch.randn(2, 3, 32, 32)
    pix = create_model("mae", "vit_cpu_patch8_64", **TINY, target="pixel")
    low = create_model("mae", "vit_cpu_patch8_64", **TINY, target="lowpass", radius=4.0)
    t_pix, t_low = pix.forward_target(imgs), low.forward_target(imgs)
    assert t_pix.shape == t_low.shape
    # a low-passed target varies less between neighbouring pixels
    tv = lambda t: (t[..., 3:] - t[..., :-3]).abs().mean()  # noqa: E731
    assert tv(t_low) < 0.5 * tv(t_pix)


def test_fused_and_unfused_attention_agree():
    torch.manual_seed(0)
    model = create_model("mae", "vit_cpu_patch8_64", **TINY).eval()
    imgs = torch.randn(2, 3, 32, 32)
    model.set_fused_attn(True)
    fused = model.forward_features(imgs)
    model.set_fused_attn(False)
    torch.testing.assert_close(model.forward_features(imgs), fused, atol=1e-5, rtol=1e-4)


def test_norm_pix_loss_only_on_masked_patches():
    model = create_model("mae", "vit_cpu_patch8_64", **TINY)
    target = torch.randn(2, 16, 192)
    pred = target.clone()
    mask = torch.zeros(2, 16)
    mask[:, :4] = 1
    model.norm_pix_loss = False
    assert model.forward_loss(target, pred, mask) == 0
    pred[:, 4:] += 10.0  # errors on visible patches are ignored
    assert model.forward_loss(target, pred, mask) == 0
    pred[:, 0] += 1.0
    # one of the 4 masked patches per sample has loss 1 -> mean over 8 masked patches = 2/8
    torch.testing.assert_close(model.forward_loss(target, pred, mask), torch.tensor(0.25))




def _mae_sincos(grid: int, dim: int) -> np.ndarray:
    """MAE's 2-D sin-cos embedding written from its published definition (facts of
    facebookresearch/mae util/pos_embed.py, not its code): meshgrid(w, h) so the first
    coordinate is the column; each coordinate's half is [sin(p w_i), cos(p w_i)] with
    w_i = 1 / 10000^(i / (dim / 4)), i < dim / 4; the column's half first."""
    omega = 1.0 / 10000 ** (np.arange(dim // 4) / (dim / 4.0))
    rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")

    def half(pos):
        out = pos.reshape(-1)[:, None] * omega[None]
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return np.concatenate([half(cols), half(rows)], axis=1)


@pytest.mark.parametrize("grid, dim", [(14, 768), (8, 64), (28, 512)])
def test_sincos_pos_embed_is_maes_channel_order(grid, dim):
    from pixmim.models.mae import sincos_pos_embed

    pe = sincos_pos_embed(grid, dim).squeeze(0).double().numpy()
    assert np.abs(pe[0]).max() == 0  # the cls token's row
    np.testing.assert_allclose(pe[1:], _mae_sincos(grid, dim), atol=1e-5)  # fp32 vs fp64
