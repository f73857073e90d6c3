"""Property tests of the PixMIM low-pass target (pixmim.models.targets)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pixmim.models.targets import lowpass, lowpass_mask

sizes = st.sampled_from([8, 15, 16, 32, 33])


@settings(max_examples=25, deadline=None)
@given(h=sizes, w=sizes, mode=st.sampled_from(["official", "centered"]), seed=st.integers(0, 99))
def test_identity_at_large_radius(h, w, mode, seed):
    img = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(seed))
    out = lowpass(img, radius=float(h + w), mode=mode)  # the disk covers every bin
    torch.testing.assert_close(out, img, atol=1e-5, rtol=0)


def test_kept_bins_r40_at_224_is_about_ten_percent():
    # PixMIM Sec. 4.1 / released code: r=40 on 224x224 keeps ~10% of the bins.
    for mode in ("official", "centered"):
        kept = int(lowpass_mask(224, 224, 40.0, mode).sum())
        assert abs(kept / 224**2 - math.pi * 40**2 / 224**2) < 0.002
        assert 0.09 < kept / 224**2 < 0.11


def test_mask_centres():
    # official: centred at ((H-1)/2, (W-1)/2), i.e. half a bin off DC; centered: on DC.
    m_off = lowpass_mask(8, 8, 0.8, "official")
    m_cen = lowpass_mask(8, 8, 0.5, "centered")
    assert m_cen.nonzero().tolist() == [[4, 4]]
    assert sorted(map(tuple, m_off.nonzero().tolist())) == [(3, 3), (3, 4), (4, 3), (4, 4)]


def test_centered_radius_zero_keeps_only_the_mean():
    img = torch.rand(1, 3, 16, 12)
    out = lowpass(img, radius=0.0, mode="centered")
    torch.testing.assert_close(out, img.mean(dim=(-2, -1), keepdim=True).expand_as(img))


def test_centered_is_a_real_symmetric_filter_that_keeps_the_mean():
    img = torch.rand(2, 3, 32, 32)
    out = lowpass(img, radius=5.0, mode="centered")
    torch.testing.assert_close(out.mean(dim=(-2, -1)), img.mean(dim=(-2, -1)))
    # idempotent: an ideal filter applied twice changes nothing more
    torch.testing.assert_close(lowpass(out, 5.0, "centered"), out, atol=1e-5, rtol=0)


def test_official_equals_unshifted_filter_magnitude():
    # Without ifftshift, ifft2 of the shifted spectrum is the filtered image times a
    # (-1)^(h+w) phase ramp, so abs() equals |ifft2(ifftshift(mask) * fft2(img))|.
    img = torch.rand(2, 3, 24, 24)
    mask = torch.fft.ifftshift(lowpass_mask(24, 24, 6.0, "official"))
    expected = torch.fft.ifft2(torch.fft.fft2(img) * mask).abs()
    torch.testing.assert_close(lowpass(img, 6.0, "official"), expected, atol=1e-5, rtol=0)


def test_official_vs_centered_differ_at_edges_only_a_little():
    # A hard edge rings; official rectifies the ringing (abs), centered keeps its sign.
    img = torch.zeros(1, 1, 64, 64)
    img[..., 20:44, 20:44] = 1.0
    off, cen = lowpass(img, 8.0, "official"), lowpass(img, 8.0, "centered")
    assert (off >= 0).all()
    assert (cen < -0.01).any()
    assert 0.0 < (off - cen).abs().mean() < 0.05


def test_lowpass_removes_high_frequencies():
    img = torch.rand(4, 3, 64, 64)
    out = lowpass(img, 8.0, "centered")
    spec = torch.fft.fftshift(torch.fft.fft2(out), dim=(-2, -1)).abs()
    outside = lowpass_mask(64, 64, 8.0, "centered") == 0
    assert spec[..., outside].max() < 1e-3


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="mode"):
        lowpass(torch.rand(1, 3, 8, 8), 2.0, mode="gaussian")
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        lowpass(torch.rand(3, 8, 8), 2.0)


@settings(max_examples=30, deadline=None)
@given(h=st.sampled_from([7, 8, 15, 16, 33, 64]), w=st.sampled_from([8, 9, 16, 31, 64]),
       radius=st.floats(0.0, 40.0), mode=st.sampled_from(["official", "centered"]),
       seed=st.integers(0, 99))
def test_band_dft_equals_fft_formulation(h, w, radius, mode, seed):
    from pixmim.models.targets import apply_spectral_mask, highpass, lowpass_fft, lowpass_mask

    img = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(lowpass(img, radius, mode), lowpass_fft(img, radius, mode),
                               atol=2e-5, rtol=0)
    complement = 1.0 - lowpass_mask(h, w, radius, mode)
    torch.testing.assert_close(highpass(img, radius, mode),
                               apply_spectral_mask(img, complement, mode), atol=2e-5, rtol=0)


def test_band_dft_at_paper_size():
    from pixmim.models.targets import lowpass_fft

    img = torch.rand(2, 3, 224, 224)
    for mode in ("official", "centered"):
        torch.testing.assert_close(lowpass(img, 40.0, mode), lowpass_fft(img, 40.0, mode),
                                   atol=2e-5, rtol=0)


# ---------------------------------------------- the model's folded target (normalised in/out)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@settings(max_examples=30, deadline=None)
@given(h=st.sampled_from([7, 8, 15, 16, 33, 64]), w=st.sampled_from([8, 9, 16, 31, 64]),
       radius=st.floats(0.0, 40.0), mode=st.sampled_from(["official", "centered"]),
       seed=st.integers(0, 99))
def test_folded_target_equals_unnormalise_fft_renormalise(h, w, radius, mode, seed):
    """The folded filter on normalised images equals mmselfsup's order of operations:
    un-normalise, filter by full FFTs, re-normalise (radii from an empty disk to all bins)."""
    from pixmim.models.targets import lowpass_fft, lowpass_normalised

    m, s = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    raw = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(seed))
    expected = (lowpass_fft(raw, radius, mode) - m) / s
    out = lowpass_normalised((raw - m) / s, radius, mode, MEAN, STD)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)


def test_model_target_is_the_folded_filter_at_paper_size():
    """MAE's lowpass target at 224 px, r=40 (PixMIM Sec. 4.1), both modes, equals the
    un-normalise -> FFT filter -> re-normalise formulation patch for patch."""
    from pixmim.models.base import MIMBase
    from pixmim.models.targets import lowpass_fft

    m, s = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    raw = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    for mode in ("official", "centered"):
        model = MIMBase(patch_size=16, target="lowpass", radius=40.0, lowpass_mode=mode)
        expected = model.patchify((lowpass_fft(raw, 40.0, mode) - m) / s)
        torch.testing.assert_close(model.forward_target((raw - m) / s), expected,
                                   atol=1e-4, rtol=0)
