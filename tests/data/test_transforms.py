"""The pretraining crops (the PixMIM crop knob) on PIL images with foreground masks."""

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from pixmim.data.transforms import CROPS, IMAGENET_MEAN, IMAGENET_STD, build_pretrain_transform


def _object_image(w=120, h=80):
    """White object (left third) on black: the image is its own foreground mask."""
    fg = np.zeros((h, w), dtype=np.uint8)
    fg[10:70, 5:45] = 255
    return Image.fromarray(np.stack([fg] * 3, -1)), Image.fromarray(fg), fg


def _unnormalise(t: torch.Tensor) -> torch.Tensor:
    return t * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)


def _fg_fraction(t: torch.Tensor) -> float:
    return float((_unnormalise(t).mean(0) > 0.5).float().mean())


@pytest.mark.parametrize("crop", sorted(CROPS))
def test_every_crop_gives_a_normalised_square(crop):
    img, mask, _ = _object_image()
    torch.manual_seed(0)
    out = CROPS[crop](64)(img, mask)
    assert out.shape == (3, 64, 64) and out.dtype == torch.float32
    assert out.min() < -1.5  # normalised: black is far below zero
    if crop != "bg":  # every other crop keeps some of the white object
        assert out.max() > 1.5


def test_bg_crop_keeps_little_foreground_and_needs_masks():
    img, mask, fg = _object_image()
    bg = CROPS["bg"](64)
    torch.manual_seed(0)
    kept = [_fg_fraction(bg(img, mask)) for _ in range(20)]
    torch.manual_seed(0)
    plain = [_fg_fraction(CROPS["rrc"](64)(img)) for _ in range(20)]
    # the object covers 25% of the canvas; bg crops hold under 20% of it
    assert max(kept) < 0.25 and np.mean(kept) < 0.5 * np.mean(plain)
    with pytest.raises(ValueError, match="masks_root"):
        bg(img)


def test_src_never_zooms_and_cc_is_deterministic_up_to_flip():
    img, mask, fg = _object_image()
    torch.manual_seed(0)
    for _ in range(5):  # shorter side 80 -> 80: the 60-px-tall object stays 60 px tall
        raw = CROPS["src"](80)(img)
        rows = (_unnormalise(raw).mean(0) > 0.5).any(dim=1).sum().item()
        assert abs(rows - 60) <= 1
    outs = {tuple(CROPS["cc"](64)(img).flatten()[:50].tolist()) for _ in range(8)}
    assert len(outs) <= 2  # centre crop + optional flip


def test_resize_keeps_the_whole_image():
    img, mask, fg = _object_image()
    out = CROPS["resize"](64)(img)
    assert _fg_fraction(out) == pytest.approx(fg.mean() / 255, abs=0.03)


def test_unknown_crop_names_the_key():
    with pytest.raises(KeyError, match="variant.crop: unknown crop 'zoom'"):
        build_pretrain_transform("zoom", 64)


def test_randaugment_posterize_survives_its_top_magnitude():
    # timm maps the top magnitudes of PosterizeIncreasing to 0 bits, which Pillow 13 rejects
    from timm.data.auto_augment import AugmentOp

    from pixmim.data.transforms import use_zero_safe_posterize

    img, _, _ = _object_image()
    use_zero_safe_posterize()
    op = AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=10, hparams={"magnitude_std": 0})
    out = np.asarray(op(img))
    assert out.max() == 0  # keep no bit: black
    op = AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=5, hparams={"magnitude_std": 0})
    assert 0 < np.asarray(op(img)).max() < 255


# ------------------------------------------------------- the uint8 tensor path (loader)
def _photo(w=500, h=375) -> np.ndarray:
    """A real photo at an ImageNet-like size (scikit-image's astronaut, CC0), uint8 HWC."""
    from skimage.data import astronaut

    return np.array(Image.fromarray(astronaut()).resize((w, h), Image.BICUBIC))


def _to_uint8(t: torch.Tensor) -> torch.Tensor:
    """A PIL-path output (normalised float) back to the uint8 levels it was made from."""
    return (_unnormalise(t) * 255).round().to(torch.int16)


@pytest.mark.parametrize("crop", sorted(CROPS))
def test_tensor_path_takes_the_same_boxes_and_pixels_as_the_pil_path(crop, monkeypatch):
    """Same seed -> the same boxes (every get_params draw recorded in both paths) and the
    same pixels up to resampling rounding: PIL's fixed-point kernels and torch's antialiased
    uint8 kernels (same bicubic a = -0.5 / bilinear support) differ by at most 2 of 255
    levels, 1 on nearly every pixel. A different box or flip moves most pixels by tens."""
    from torchvision import transforms as T

    from pixmim.data.loading import UInt8Crop

    arr = _photo()
    mask = Image.fromarray(((arr.mean(-1) > 140) * 255).astype(np.uint8))
    pil, ten = Image.fromarray(arr), torch.from_numpy(arr).permute(2, 0, 1).contiguous()
    draws = []
    for cls in (T.RandomResizedCrop, T.RandomCrop):
        real = cls.get_params
        monkeypatch.setattr(cls, "get_params", staticmethod(
            lambda *a, real=real: draws.append(real(*a)) or draws[-1]))
    old, new = CROPS[crop](224), UInt8Crop(CROPS[crop](224))
    for seed in range(6):
        torch.manual_seed(seed)
        a = _to_uint8(old(pil, mask))
        old_draws, draws[:] = list(draws), []
        torch.manual_seed(seed)
        b = new(ten, mask)
        assert draws == old_draws
        draws.clear()
        assert b.dtype == torch.uint8 and b.shape == (3, 224, 224)
        diff = (a - b.to(torch.int16)).abs()
        assert diff.max() <= 2 and diff.float().mean() < 0.05, (seed, diff.max())


def test_normalise_on_device_equals_to_tensor_and_normalize():
    from torchvision import transforms as T

    from pixmim.data.loading import normalise, to_device

    u8 = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    ref = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)(u8.float() / 255)
    out = normalise(u8)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(to_device(u8, torch.device("cpu")), ref, atol=1e-6, rtol=0)
    assert to_device(ref, torch.device("cpu")) is ref  # a float batch is only moved


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP"])
def test_decode_matches_pils_rgb(tmp_path, fmt):
    from pixmim.data.loading import decode

    path = tmp_path / f"x.{fmt.lower()}"
    Image.fromarray(_photo(120, 90)).convert("L" if fmt == "PNG" else "RGB").save(path, fmt)
    ref = np.asarray(Image.open(path).convert("RGB"))
    out = decode(str(path))
    assert out.dtype == torch.uint8 and out.shape == (3, 90, 120)
    assert np.array_equal(out.permute(1, 2, 0).numpy(), ref)


def test_uint8_path_skips_and_names_corrupt_files(tmp_path):
    from pixmim.data.datasets import ImageDataset
    from pixmim.data.loading import UInt8Crop

    cls = tmp_path / "n01440764"
    cls.mkdir()
    Image.fromarray(_photo(80, 60)).save(cls / "a.jpg")
    (cls / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    crop = UInt8Crop(CROPS["rrc"](32))
    with pytest.raises(ValueError, match="b.jpg"):
        ImageDataset(tmp_path, crop)[1]
    ds = ImageDataset(tmp_path, crop, bad_images="skip")
    img, label = ds[1]
    assert img.shape == (3, 32, 32) and img.dtype == torch.uint8
    assert [p.endswith("b.jpg") for p in ds.skipped] == [True]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU decode (nvjpeg) needs CUDA")
def test_gpu_decode_takes_the_cpu_paths_boxes(tmp_path):
    """decode_jpeg(device='cuda') + crop on the GPU, each sample under its seed: the same
    boxes as the worker path, pixels within JPEG-decoder and rounding differences."""
    from torchvision.io import read_file

    from pixmim.data.datasets import _seeded
    from pixmim.data.loading import DeviceDecode, UInt8Crop, decode, normalise

    path = tmp_path / "x.jpg"
    Image.fromarray(_photo()).save(path, quality=95)
    crop = CROPS["rrc"](224)
    seeds = torch.tensor([3, 4, 5])
    gpu = DeviceDecode(crop, "cuda")([read_file(str(path))] * 3, seeds)
    for k, s in enumerate(seeds.tolist()):
        with _seeded(s):
            cpu = normalise(UInt8Crop(crop)(decode(str(path)))[None])[0]
        assert (gpu[k].cpu() - cpu).abs().mean() < 0.05


def test_uint8_samples_depend_on_their_seed_only_and_leave_the_global_rng(tmp_path):
    from pixmim.data.datasets import ImageDataset
    from pixmim.data.loading import UInt8Crop

    cls = tmp_path / "n01440764"
    cls.mkdir()
    Image.fromarray(_photo(160, 120)).save(cls / "a.png")
    ds = ImageDataset(tmp_path, UInt8Crop(CROPS["rrc"](32)))
    torch.manual_seed(1)
    before = torch.get_rng_state()
    a = ds[(0, 11)][0]
    assert torch.equal(torch.get_rng_state(), before)
    torch.rand(5)  # another global state: the sample must not change
    assert torch.equal(ds[(0, 11)][0], a)
    assert not torch.equal(ds[(0, 12)][0], a)


@settings(max_examples=300, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), th=st.integers(1, 40), tw=st.integers(1, 40),
       pad=st.one_of(st.none(), st.integers(0, 6), st.lists(st.integers(0, 6), min_size=1,
                                                              max_size=1),
                     st.lists(st.integers(0, 6), min_size=2, max_size=2),
                     st.lists(st.integers(0, 6), min_size=4, max_size=4)),
       mode=st.sampled_from(["reflect", "symmetric", "edge", "constant"]),
       seed=st.integers(0, 2**16))
def test_padded_crop_is_pad_then_crop_exactly(h, w, th, tw, pad, mode, seed):
    """SRC's pad-then-random-crop on the uint8 path pads only the box (not the whole image):
    the same box drawn from the same RNG, the same pixels bit for bit, the RNG left in the
    same state, for every padding form and mode torchvision takes."""
    from torchvision import transforms as T
    from torchvision.transforms.v2 import functional as F2

    from pixmim.data.transforms import padded_crop

    op = T.RandomCrop((th, tw), padding=pad, padding_mode=mode, fill=7)
    img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8,
                        generator=torch.Generator().manual_seed(seed))
    try:
        full = F2.pad(img, pad, 7, mode) if pad is not None else img
        torch.manual_seed(seed)
        i, j, bh, bw = op.get_params(full, op.size)
    except (RuntimeError, ValueError, IndexError):
        assume(False)  # torchvision itself refuses (padding wider than the image, box too big)
    ref, after = F2.crop(full, i, j, bh, bw), torch.rand(1)
    torch.manual_seed(seed)
    out = padded_crop(op, img)
    assert torch.equal(out, ref)
    assert torch.equal(torch.rand(1), after)


# ---------------------------------------------------------------- SRC as a paper job runs it
PAD = 4  # SRC's reflect padding in px (PixMIM Sec. 4.2; official config: reference facts)


def _paper_src_crop():
    """The pretraining crop of config/paper.yaml's PixMIM MAE (800 epochs), built as the
    pretrain stage builds it from the resolved job (uint8 path)."""
    from pathlib import Path

    from pixmim.data.loading import UInt8Crop
    from pixmim.workflow.catalogue import experiments, load_config
    from pixmim.workflow.jobs import job_config

    config = load_config(Path(__file__).resolve().parents[2] / "config" / "paper.yaml")
    exps = experiments(config)
    exp = next(e for e, k in exps.items() if "pixmim_mae_800" in k["names"])
    job = job_config(config, exp, "pretrain", exps)
    assert job["data"]["img_size"] == 224  # PixMIM Sec. 5.1: ViT-B at 224 px
    return UInt8Crop(build_pretrain_transform(job["variant"]["crop"], job["data"]["img_size"]))


def _reflect(k: np.ndarray, n: int) -> np.ndarray:
    """Index k of a length-n axis reflect-padded (-1 -> 1, n -> n - 2), written here."""
    k = np.abs(k)
    return np.where(k > n - 1, 2 * (n - 1) - k, k)


def test_src_of_a_paper_job_reflect_pads_4_px_crops_224_and_flips_half():
    """A 224 x 300 image whose pixels name their own row and column goes through the paper
    job's SRC: every output is a 224 crop of the image reflect-padded by 4 px (the rows and
    columns read back are those of some offset in 0..8), every offset 0..8 occurs (a wider
    or no padding, or a constant fill, is not explained), and about half are flipped."""
    crop = _paper_src_crop()
    h, w = 224, 300
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    img = torch.from_numpy(np.stack([rows, cols % 256, cols // 256]).astype(np.uint8))
    y, x = np.arange(224), np.arange(224)
    torch.manual_seed(0)
    tops, lefts, flips = set(), set(), 0
    for _ in range(300):
        out = crop(img).numpy().astype(int)
        assert out.shape == (3, 224, 224)
        got_rows, got_cols = out[0, :, 0], out[1, 0, :] + 256 * out[2, 0, :]
        top = [i for i in range(2 * PAD + 1)
               if np.array_equal(got_rows, _reflect(i - PAD + y, h))]
        found = [(j, f) for j in range(w + 2 * PAD - 224 + 1) for f in (False, True)
                 if np.array_equal(got_cols, _reflect(j - PAD + x, w)[::-1 if f else 1])]
        assert len(top) == 1 and len(found) == 1, (
            "an SRC output is no 224 crop of the image reflect-padded by 4 px: rows "
            f"{got_rows[:6]}..., columns {got_cols[:6]}...")
        tops.add(top[0])
        lefts.add(found[0][0])
        flips += found[0][1]
    assert tops == set(range(2 * PAD + 1)), f"vertical offsets seen {sorted(tops)}"
    assert min(lefts) == 0 and max(lefts) == w + 2 * PAD - 224
    assert 0.4 < flips / 300 < 0.6  # horizontal flip with p 0.5


def test_src_of_a_paper_job_resizes_the_shorter_side_to_224_bilinear():
    """A 112 x 150 noise image: the output is a window of the image resized (bilinear,
    written here with torch's interpolate) to 224 x 300 and reflect-padded by 4 px, within
    1 grey level; a bicubic resize is not."""
    crop = _paper_src_crop()
    gen = torch.Generator().manual_seed(1)
    img = torch.randint(0, 256, (3, 112, 150), dtype=torch.uint8, generator=gen)

    def resized(mode: str) -> np.ndarray:
        big = torch.nn.functional.interpolate(img[None].float(), size=(224, 300), mode=mode,
                                              align_corners=False)[0]
        big = big.round().clamp(0, 255).numpy()
        return np.pad(big, ((0, 0), (PAD, PAD), (PAD, PAD)), mode="reflect")

    torch.manual_seed(0)
    out = crop(img).numpy().astype(float)
    assert out.shape == (3, 224, 224)

    def best(ref: np.ndarray) -> float:
        errs = [np.abs(out - win).max()
                for i in range(2 * PAD + 1) for j in range(ref.shape[2] - 224 + 1)
                for win in (ref[:, i:i + 224, j:j + 224], ref[:, i:i + 224, j:j + 224][:, :, ::-1])
                if np.abs(out[:, 0] - win[:, 0]).max() <= 1]  # the first row first: fast
        return min(errs, default=255.0)

    assert best(resized("bilinear")) <= 1, "SRC's output is no window of the image resized " \
        "bilinearly to 224 x 300 and reflect-padded by 4 px"
    assert best(resized("bicubic")) > 1  # the check tells the two apart


def test_probe_augmentation_is_random_resized_crop_and_flip():
    """PixMIM Tables 10/11: the probe trains on RandomResizedCrop (with flip, MAE's probe)."""
    import torchvision.transforms as T

    from pixmim.data.transforms import build_probe_transform

    ops = build_probe_transform(224).ops.transforms
    assert [type(op) for op in ops] == [T.RandomResizedCrop, T.RandomHorizontalFlip]
    assert tuple(ops[0].size) == (224, 224)
