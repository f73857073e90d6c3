"""Image datasets labelled in the ImageNet-1k index space, with deterministic samples.

Training loaders draw keys ``(index, sample_seed)`` from :class:`EpochSampler`; the dataset
seeds the augmentation of each sample from its key, so a sample's crop (and the mask noise
the training step derives from the same seed) depends only on (seed, epoch, index): not on
the worker, the process rank or where a resumed epoch restarts.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Sampler
from torchvision.datasets import ImageFolder

from pixmim.data.imagenet_meta import imagenet_wnids


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed unique to (run seed, epoch, sample index)."""
    return ((seed * 1_000_003 + epoch) * 10_000_019 + index) % (2**63 - 1)


class ImageDataset(ImageFolder):
    """An ImageFolder whose keys may carry a sample seed and whose samples may carry masks.

    ``dataset[i]`` -> ``(img, label)``; ``dataset[(i, seed)]`` -> ``(img, label, seed)``
    with the transform run under ``torch.manual_seed(seed)``. Transforms whose
    ``needs_mask`` is true also receive the foreground mask (``masks_root/<class>/<file>``).
    """

    def __init__(self, root: str | Path, transform, masks_root: str | Path | None = None,
                 imagenet_labels: bool = True, bad_images: str = "fail") -> None:
        if bad_images not in BAD_IMAGE_POLICIES:
            raise ValueError(f"data.bad_images: {bad_images!r} is not one of "
                             f"{BAD_IMAGE_POLICIES}")
        try:
            super().__init__(str(root), transform=transform)
        except FileNotFoundError as err:  # an empty class folder, no class folder at all
            raise FileNotFoundError(f"data.root: {root}: {err}") from None
        self.bad_images = bad_images
        # Unreadable files met so far (bad_images: skip), one line each in a file that the
        # DataLoader's worker processes append to, so the main process can count them all.
        fd, self._skip_log = tempfile.mkstemp(prefix="pixmim-skipped-", suffix=".txt")
        os.close(fd)
        self._owner = os.getpid()
        self.masks_root = Path(masks_root) if masks_root else None
        if imagenet_labels:
            index = {w: i for i, w in enumerate(imagenet_wnids())}
            unknown = [c for c in self.classes if c not in index]
            if unknown:
                raise ValueError(f"data.root: {root} has non-ImageNet class folders: {unknown[:3]}")
            self.target_transform = [index[c] for c in self.classes].__getitem__

    def _mask(self, path: str) -> Image.Image:
        if self.masks_root is None:
            raise ValueError("variant.crop needs foreground masks: set data.masks_root")
        rel = Path(path).relative_to(self.root)
        mask_path = self.masks_root / rel.with_suffix(".png")
        if not mask_path.is_file():
            raise FileNotFoundError(f"data.masks_root: no mask for {rel}: {mask_path}")
        return Image.open(mask_path).convert("L")

    @property
    def skipped(self) -> list[str]:
        """Unreadable files skipped so far, by any process (bad_images: skip)."""
        try:
            with open(self._skip_log, encoding="utf-8") as f:
                return sorted(set(f.read().split("\n")) - {""})
        except FileNotFoundError:
            return []

    def __del__(self) -> None:
        log = getattr(self, "_skip_log", None)
        if log and os.getpid() == getattr(self, "_owner", None) and os.path.exists(log):
            os.unlink(log)

    def _load(self, index: int) -> tuple[Image.Image, str, int]:
        """The first readable image from ``index`` on (``bad_images: skip``), or raise.

        A transform with a ``loader`` reads its own input (the uint8 pretraining path:
        :mod:`pixmim.data.loading`); others get ImageFolder's PIL image."""
        load = getattr(self.transform, "loader", self.loader)
        for offset in range(len(self.samples)):
            path, label = self.samples[(index + offset) % len(self.samples)]
            try:
                return load(path), path, label
            except (OSError, SyntaxError, ValueError) as err:  # PIL: corrupt / truncated
                if self.bad_images == "fail":
                    raise ValueError(f"data.root: cannot read image {path} ({err}); set "
                                     "data.bad_images: skip to skip and count such files") \
                        from None
                if path not in self.skipped:
                    with open(self._skip_log, "a", encoding="utf-8") as f:
                        f.write(path + "\n")
                    print(f"[data] skipping unreadable image {path} ({err})", file=sys.stderr)
        raise ValueError(f"data.root: no readable image under {self.root}")

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        img, path, label = self._load(index)
        mask = self._mask(path) if getattr(self.transform, "needs_mask", False) else None
        with _seeded(seed, getattr(self.transform, "torch_rng_only", False)):
            img = self.transform(img, mask) if mask is not None else self.transform(img)
        label = self.target_transform(label) if self.target_transform else label
        return (img, label) if seed is None else (img, label, seed)


@contextmanager
def _seeded(seed: int | None, torch_only: bool = False):
    """Seed torch, ``random`` and numpy (timm's RandAugment draws from ``random``) for one
    sample, restoring their states afterwards; ``torch_only``: torch's alone (a transform
    that draws from no other RNG; saves ~0.07 ms per sample, 7% of a uint8 sample)."""
    if seed is None:
        yield
        return
    if torch_only:
        gen = torch.default_generator
        state = gen.get_state()
        gen.manual_seed(seed)
        try:
            yield
        finally:
            gen.set_state(state)
        return
    # The CPU generator directly: torch.random.fork_rng + torch.manual_seed cost ~0.2 ms
    # per sample in their Python wrappers, a sixth of a pretraining sample's loading.
    gen = torch.default_generator
    torch_state, py_state, np_state = gen.get_state(), random.getstate(), np.random.get_state()
    gen.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        gen.set_state(torch_state)
        random.setstate(py_state)
        np.random.set_state(np_state)


class Subset(torch.utils.data.Dataset):
    """``dataset`` restricted to ``indices``; passes ``(index, seed)`` keys through."""

    def __init__(self, dataset, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            return self.dataset[(self.indices[key[0]], key[1])]
        return self.dataset[self.indices[key]]


def class_balanced_subset(targets: list[int], fraction: float, seed: int) -> list[int]:
    """A deterministic class-balanced subset: ``round(fraction * n_c)`` (at least 1) samples
    of each class ``c``, drawn by a seeded permutation (few-shot fine-tuning, Table 19)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"finetune.fraction must be in (0, 1], got {fraction}")
    by_class: dict[int, list[int]] = {}
    for i, t in enumerate(targets):
        by_class.setdefault(int(t), []).append(i)
    chosen = []
    for c, idx in sorted(by_class.items()):
        g = torch.Generator().manual_seed(sample_seed(seed, c, len(idx)))
        k = max(1, round(fraction * len(idx)))
        chosen += [idx[j] for j in torch.randperm(len(idx), generator=g)[:k].tolist()]
    return sorted(chosen)


BAD_IMAGE_POLICIES = ("fail", "skip")


def build_dataset(root: str | Path, split: str, transform, imagenet_labels: bool = True,
                  masks_root: str | Path | None = None, bad_images: str = "fail"
                  ) -> ImageDataset:
    """``root/split`` as an :class:`ImageDataset`; masks under ``masks_root/split``.

    Raises:
        FileNotFoundError: naming ``data.root`` when the split folder is absent.
    """
    folder = Path(root) / split
    if not folder.is_dir():
        raise FileNotFoundError(f"data.root: dataset split folder not found: {folder}")
    masks = Path(masks_root) / split if masks_root else None
    return ImageDataset(folder, transform, masks, imagenet_labels, bad_images)


class EpochSampler(Sampler):
    """Deterministic per-epoch shuffling, sharded over ranks, resumable inside an epoch.

    Yields ``(index, sample_seed)``. Every rank sees ``len(dataset) // world`` samples per
    epoch (the tail is dropped so ranks stay in step): rank ``r`` takes positions
    ``r, r + world, ...`` of the epoch's permutation, so a single process with batch ``B``
    and ``world`` processes with batch ``B / world`` see the same samples at each step.
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.size, self.seed, self.rank, self.world = size, seed, rank, world
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Start ``epoch``, skipping the first ``skip`` samples of this rank (resume)."""
        self.epoch, self.skip = epoch, skip

    def __len__(self) -> int:
        return self.size // self.world - self.skip

    def __iter__(self):
        g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, 0))
        perm = torch.randperm(self.size, generator=g)[: self.size // self.world * self.world]
        for i in perm[self.rank :: self.world][self.skip :].tolist():
            yield i, sample_seed(self.seed, self.epoch, i)
