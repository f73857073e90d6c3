"""The 15 ImageNet-C corruptions x 5 severities, made meaningful for small images.

The corruptions and their severity constants are those of Hendrycks & Dietterich
("Benchmarking neural network robustness to common corruptions and perturbations",
ICLR 2019), run through the ``imagecorruptions-imaug`` package (a maintained fork of
``imagecorruptions`` that works on numpy 2 / scikit-image >= 0.19). The constants are tuned
for 224 px images, so each corruption runs at one of two working sizes:

* ``AT_224``: corruptions whose constants are lengths in px (blur radii, pixel shuffles,
  snowflake streaks, frost crystals, elastic displacements) run on the image upsampled to a
  shorter side of 224 px and are then downsampled back (bicubic, antialiased): a 10 px
  defocus disc on a 224 px ImageNet image becomes ~3.6 px on our 80 px image.
* the rest are per-pixel (noise, brightness, contrast, JPEG) or already relative to the
  image size (pixelate, zoom blur, fog), and run at the source size: resampling would
  average the per-pixel noise away (a 224 -> 80 px round trip divides its std by ~2.8).

Every call is deterministic: numpy's global generator is seeded from (seed, corruption,
severity, image key) and restored afterwards, and the two corruptions with their own
generators (glass_blur, impulse_noise) get the same seed explicitly.
"""

from __future__ import annotations

import functools
from types import ModuleType

import numpy as np
from PIL import Image

# ImageNet-C's 15 benchmark corruptions, in the order of Hendrycks & Dietterich (2019), Fig. 1.
CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog",
    "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
FAMILIES: dict[str, tuple[str, ...]] = {
    "noise": CORRUPTIONS[0:3],
    "blur": CORRUPTIONS[3:7],
    "weather": CORRUPTIONS[7:10],
    "digital": CORRUPTIONS[10:15],
}
# Corruptions whose constants are lengths in px at 224 px (see the module docstring).
AT_224: frozenset[str] = frozenset(
    {"defocus_blur", "glass_blur", "motion_blur", "snow", "frost", "elastic_transform"}
)
REFERENCE_SIZE = 224  # ImageNet-C's image size (centre crops of 224 px)
_MIN_SIZE = 32  # imagecorruptions rejects images with a side below 32 px
_OWN_RNG = frozenset({"glass_blur", "impulse_noise"})  # take a `seed` argument
_REQUIREMENTS = (
    "imagecorruptions-imaug==1.1.5 (pip install --no-deps) with scikit-image, scipy, "
    "opencv-python-headless and numba"
)


@functools.lru_cache(maxsize=1)
def _library() -> ModuleType:
    """Import imagecorruptions lazily (it pulls in OpenCV, numba and scikit-image)."""
    try:
        import imagecorruptions
    except ImportError as err:
        raise ImportError(f"the ImageNet-C view needs {_REQUIREMENTS}: {err}") from err
    # glass_blur's pixel shuffle is a numba function compiled in every process (~3-5 s);
    # cache the compiled code on disk like @njit(cache=True) would (numba's own cache dir).
    shuffle = getattr(imagecorruptions.corruptions, "_shuffle_pixels_njit_glass_blur", None)
    if hasattr(shuffle, "enable_caching"):
        shuffle.enable_caching()
    return imagecorruptions


def package_versions() -> dict[str, str]:
    """Versions of the corruption library and its numeric dependencies (for meta.json)."""
    from importlib.metadata import PackageNotFoundError, version

    names = ("imagecorruptions-imaug", "scikit-image", "scipy", "opencv-python-headless", "numba")
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "missing"
    return found


def corruption_seed(seed: int, corruption: str, severity: int, *key: int) -> int:
    """A 31-bit seed unique to (seed, corruption, severity, image key).

    Args:
        seed: Seed of the view.
        corruption: One of :data:`CORRUPTIONS`.
        severity: 1..5.
        *key: Non-negative ints naming the image, e.g. (class_id, index).

    Returns:
        An int in [0, 2**31), usable by numpy's legacy and numba's generators.
    """
    entropy = [seed, CORRUPTIONS.index(corruption), severity, *key]
    return int(np.random.default_rng(entropy).integers(2**31))


def _working_size(w: int, h: int, corruption: str) -> tuple[int, int]:
    """Size (W, H) at which `corruption` runs on a w x h image (aspect kept)."""
    short = min(w, h)
    target = REFERENCE_SIZE if corruption in AT_224 else max(short, _MIN_SIZE)
    if target == short:
        return w, h
    k = target / short
    return max(target, round(w * k)), max(target, round(h * k))


def corrupt(image: Image.Image, corruption: str, severity: int, seed: int) -> Image.Image:
    """Apply one ImageNet-C corruption to an image, deterministically.

    Args:
        image: RGB image of any size (the shorter side is ideally >= 32 px).
        corruption: One of :data:`CORRUPTIONS`.
        severity: 1 (mild) .. 5 (strong).
        seed: Seed of all randomness of this call (see :func:`corruption_seed`).

    Returns:
        The corrupted RGB image, same size as `image`.
    """
    if corruption not in CORRUPTIONS or severity not in SEVERITIES:
        raise ValueError(
            f"unknown corruption/severity {corruption!r}/{severity}; "
            f"expected one of {CORRUPTIONS} x {SEVERITIES}"
        )
    lib = _library()
    size = image.size
    work = _working_size(*size, corruption)
    x = image.convert("RGB")
    if work != size:
        x = x.resize(work, Image.Resampling.BICUBIC)
    kwargs = {"seed": seed} if corruption in _OWN_RNG else {}
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        y = lib.corrupt(np.asarray(x), severity=severity, corruption_name=corruption, **kwargs)
    finally:
        np.random.set_state(state)
    out = Image.fromarray(np.ascontiguousarray(y, dtype=np.uint8))
    return out if work == size else out.resize(size, Image.Resampling.BICUBIC)
