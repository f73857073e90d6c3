"""ImageFolder datasets labelled in the ImageNet-1k index space."""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets import ImageFolder

from pixmim.data.imagenet_meta import imagenet_wnids


def build_dataset(root: str | Path, split: str, transform, imagenet_labels: bool = True):
    """An ImageFolder over ``root/split`` whose labels are ImageNet-1k indices.

    Folder names must be ImageNet wnids (``n01440764``); on the real ImageNet the
    mapping is the identity, on the embedded dataset it maps 16 folders to their indices.

    Raises:
        FileNotFoundError: naming ``data.root`` when the split folder is absent.
    """
    folder = Path(root) / split
    if not folder.is_dir():
        raise FileNotFoundError(f"data.root: dataset split folder not found: {folder}")
    ds = ImageFolder(str(folder), transform=transform)
    if imagenet_labels:
        index = {w: i for i, w in enumerate(imagenet_wnids())}
        unknown = [c for c in ds.classes if c not in index]
        if unknown:
            raise ValueError(f"data.root: {folder} has non-ImageNet class folders: {unknown[:3]}")
        to_imagenet = [index[c] for c in ds.classes]
        ds.target_transform = to_imagenet.__getitem__
    return ds
