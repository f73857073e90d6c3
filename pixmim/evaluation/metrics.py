"""Robustness metrics (torch-free): ImageNet-C mCE and the ImageNet-A/R 200-class slices.

Units used throughout: ImageNet-C errors are fractions in [0, 1]; ``mce`` and
``unnormalized_ce`` are percentages; every ``top1`` is a percentage.

* mCE (Hendrycks & Dietterich, ICLR 2019): ``E_c`` = mean top-1 error of corruption ``c``
  over its 5 severities; ``mCE = 100 * mean_c(E_c / E_c^AlexNet)`` over the 15 corruptions.
  The *unnormalised* mean error ``100 * mean_c(E_c)`` is a different number (mae#104 users
  compare one to the other): both are reported, under different names.
* ImageNet-A / ImageNet-R hold 200 of the 1000 classes: the 1000-way logits are sliced to
  the subset's columns before the argmax (timm's ``imagenet_{a,r}_indices.txt``), and a
  target is a position in that 200-entry list.

Functions taking logits accept numpy arrays or torch tensors; the module imports torch only
when they are called (top-k is timm's ``accuracy``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# the 200-class subsets' lists are class metadata (torch-free), used here and by the data
from pixmim.data.imagenet_meta import (  # noqa: F401
    SUBSETS,
    imagenet_info_dir,
    imagenet_wnids,
    subset_indices,
    subset_wnids,
)

# Top-1 error of AlexNet on each ImageNet-C corruption, averaged over the 5 severities: the
# mCE normaliser of Hendrycks & Dietterich 2019 ("Benchmarking Neural Network Robustness to
# Common Corruptions and Perturbations", ICLR), as used by its reference code.
ALEXNET_ERRORS: dict[str, float] = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640,
    "defocus_blur": 0.819880, "glass_blur": 0.826268, "motion_blur": 0.785948,
    "zoom_blur": 0.798360, "snow": 0.866816, "frost": 0.826572, "fog": 0.819324,
    "brightness": 0.564592, "contrast": 0.853204, "elastic_transform": 0.646056,
    "pixelate": 0.717840, "jpeg_compression": 0.606500,
}  # fmt: skip
CORRUPTIONS: tuple[str, ...] = tuple(ALEXNET_ERRORS)  # the 15 benchmark corruptions
NUM_SEVERITIES = 5  # ImageNet-C severities 1..5



def _check_errors(errors: Mapping[str, Sequence[float]], names: Sequence[str]) -> None:
    missing = [c for c in names if c not in errors]
    if missing:
        raise ValueError(f"ImageNet-C errors lack corruption(s) {missing}; mCE needs all "
                         f"{len(names)}: {list(names)}")
    for c in names:
        values = list(errors[c])
        if len(values) != NUM_SEVERITIES:
            raise ValueError(f"ImageNet-C corruption {c!r}: expected {NUM_SEVERITIES} "
                             f"severities, got {len(values)}")
        bad = [v for v in values if not 0.0 <= float(v) <= 1.0]
        if bad:
            raise ValueError(f"ImageNet-C corruption {c!r}: top-1 errors must be fractions in "
                             f"[0, 1], got {bad}")


def corruption_errors(errors: Mapping[str, Sequence[float]],
                      names: Sequence[str] = CORRUPTIONS) -> dict[str, float]:
    """``E_c``: the mean top-1 error (fraction) of each corruption over its 5 severities.

    Args:
        errors: ``errors[c][s - 1]`` = top-1 error (fraction) at severity ``s`` of ``c``.
        names: the corruptions to return (all must be present); extra keys are ignored.
    """
    _check_errors(errors, names)
    return {c: float(np.mean([float(v) for v in errors[c]])) for c in names}


def mce(errors: Mapping[str, Sequence[float]],
        baseline: Mapping[str, float] = ALEXNET_ERRORS) -> float:
    """Mean Corruption Error in percent (lower is better; AlexNet scores 100).

    Args:
        errors: ``errors[c][s - 1]`` = top-1 error (fraction) of corruption ``c`` at
            severity ``s``; every corruption of ``baseline`` must be present with 5
            severities. Keys not in ``baseline`` (e.g. the 4 "extra" corruptions) are ignored.
        baseline: per-corruption errors (fractions, averaged over severities) to normalise by.

    Raises:
        ValueError: naming missing corruptions, a wrong severity count or an error outside
            [0, 1].
    """
    e = corruption_errors(errors, list(baseline))
    return 100.0 * float(np.mean([e[c] / baseline[c] for c in baseline]))


def normalized_ce(errors: Mapping[str, Sequence[float]],
                  baseline: Mapping[str, float] = ALEXNET_ERRORS) -> dict[str, float]:
    """The per-corruption ``CE_c = 100 * E_c / E_c^AlexNet`` (percent); mCE is their mean."""
    e = corruption_errors(errors, list(baseline))
    return {c: 100.0 * e[c] / baseline[c] for c in baseline}


def unnormalized_ce(errors: Mapping[str, Sequence[float]],
                    names: Sequence[str] = CORRUPTIONS) -> float:
    """Plain mean top-1 error in percent over the corruptions and severities (not the mCE)."""
    e = corruption_errors(errors, names)
    return 100.0 * float(np.mean(list(e.values())))


def folder_targets(folders: Sequence[str], wnids: Sequence[str], key: str) -> list[int]:
    """Map class-folder names (wnids) to their positions in ``wnids``.

    Args:
        folders: class folder names, e.g. ``ImageFolder.classes``.
        wnids: the label space: a subset list (targets are positions in it) or all 1000.
        key: the config key of the dataset root, named in errors (``eval.imagenet_a``).

    Raises:
        ValueError: naming the first folders that are not in ``wnids``.
    """
    position = {w: i for i, w in enumerate(wnids)}
    unknown = [f for f in folders if f not in position]
    if unknown:
        raise ValueError(f"{key}: class folder(s) {unknown[:5]} are not among the "
                         f"{len(wnids)} classes of this test set")
    return [position[f] for f in folders]


def topk_hits(logits: Any, targets: Any, topk: Sequence[int] = (1,),
              indices: Sequence[int] | None = None) -> list[int]:
    """Number of samples whose target is among the ``k`` best scores, for each ``k`` in
    ``topk``, after slicing to ``indices`` if given: counts, so that batches and ranks sum.

    ``timm.utils.accuracy`` computes them (as percentages of the batch, which float32 holds
    exactly enough for any batch below 2^24 / 100 samples to round back to the count).

    Args:
        logits: [N, C] scores (ndarray or tensor).
        targets: [N] class indices, or positions in ``indices`` when it is given.
        topk: the ``k`` values (a ``k`` above the number of classes counts every sample).
        indices: the subset's columns (ImageNet-A/R); None scores all columns.
    """
    import torch
    from timm.utils import accuracy

    if logits.ndim != 2 or len(logits) != len(targets):
        raise ValueError(f"expected logits [N, C] and targets [N], got {tuple(logits.shape)} "
                         f"and {len(targets)} targets")
    logits = torch.as_tensor(logits)
    if indices is not None:
        if max(indices) >= logits.shape[1]:
            raise ValueError(f"subset index {max(indices)} outside {logits.shape[1]} logits")
        logits = logits[:, list(indices)]
    targets = torch.as_tensor(targets, device=logits.device)
    if len(targets) == 0:
        return [0 for _ in topk]
    return [round(float(pct) * len(targets) / 100) for pct in accuracy(logits, targets, topk)]


def top1_hits(logits: Any, targets: Any, indices: Sequence[int] | None = None) -> int:
    """Number of correct argmax predictions, after slicing to ``indices`` if given
    (:func:`topk_hits` with ``k = 1``)."""
    return topk_hits(logits, targets, (1,), indices)[0]


def top1_sliced(logits: Any, targets_in_subset: Any, indices: Sequence[int]) -> float:
    """Top-1 (%) on a class subset: argmax over the subset's columns only.

    Args:
        logits: [N, 1000] scores (ndarray or tensor).
        targets_in_subset: [N] positions in ``indices`` (not ImageNet indices).
        indices: the subset's ImageNet indices (:func:`subset_indices`).
    """
    n = len(targets_in_subset)
    if n == 0:
        raise ValueError("top1_sliced: no samples")
    return 100.0 * top1_hits(logits, targets_in_subset, indices) / n
