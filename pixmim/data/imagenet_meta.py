"""ImageNet-1k class metadata read from the files shipped inside the timm wheel (and the
200-class subsets of ImageNet-A and -R: ``imagenet_{a,r}_{indices,synsets}.txt``).

timm bundles the class lists in ``timm/data/_info/``: ``imagenet_synsets.txt``
holds the 1000 ImageNet-1k WordNet ids in class-index order and
``imagenet_synset_to_lemma.txt`` maps every ImageNet-21k wnid to its lemma
(one ``wnid<TAB>lemma`` line per synset). The folder is located with ``importlib.util.find_spec``
so that torch (which ``import timm`` pulls in) is never imported here.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

_SYNSETS_FILE = "imagenet_synsets.txt"
_LEMMA_FILE = "imagenet_synset_to_lemma.txt"
_NUM_CLASSES = 1000


@functools.lru_cache(maxsize=1)
def imagenet_info_dir() -> Path:
    """Return the ``timm/data/_info`` folder without importing timm.

    Raises:
        FileNotFoundError: timm is not installed or lacks the metadata files.
    """
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "timm is not installed; it is needed for the ImageNet class metadata "
            "(timm/data/_info/imagenet_synsets.txt)"
        )
    info = Path(spec.submodule_search_locations[0]) / "data" / "_info"
    for name in (_SYNSETS_FILE, _LEMMA_FILE):
        if not (info / name).is_file():
            raise FileNotFoundError(
                f"timm metadata file {info / name} is missing; "
                "reinstall timm (>= 0.9) to get the ImageNet class lists"
            )
    return info


@functools.lru_cache(maxsize=1)
def imagenet_wnids() -> list[str]:
    """Return the 1000 ImageNet-1k wnids in class-index order.

    Returns:
        1000 wnids such as ``"n01440764"`` (cached; treat as read-only).
    """
    text = (imagenet_info_dir() / _SYNSETS_FILE).read_text(encoding="utf-8")
    wnids = [line.strip() for line in text.splitlines() if line.strip()]
    if len(wnids) != _NUM_CLASSES:
        raise ValueError(
            f"expected {_NUM_CLASSES} wnids in timm's {_SYNSETS_FILE}, got {len(wnids)}"
        )
    return wnids


@functools.lru_cache(maxsize=1)
def imagenet_names() -> list[str]:
    """Return the WordNet lemma of each ImageNet-1k class, in class-index order.

    Each entry is the full lemma line, e.g. ``"brown bear, bruin, Ursus arctos"``;
    ``name.split(",")[0]`` gives the short name.

    Returns:
        1000 lemma strings (cached; treat as read-only).
    """
    lemmas: dict[str, str] = {}
    text = (imagenet_info_dir() / _LEMMA_FILE).read_text(encoding="utf-8")
    for line in text.splitlines():
        wnid, _, lemma = line.partition("\t")
        lemmas[wnid.strip()] = lemma.strip()
    missing = [w for w in imagenet_wnids() if w not in lemmas]
    if missing:
        raise ValueError(f"timm's {_LEMMA_FILE} lacks lemmas for {missing[:5]}")
    return [lemmas[w] for w in imagenet_wnids()]


SUBSETS = ("imagenet_a", "imagenet_r")  # 200-class test sets with a timm index list


@functools.cache
def _subset(name: str) -> tuple[tuple[int, ...], tuple[str, ...]]:
    if name not in SUBSETS:
        raise ValueError(f"unknown class subset {name!r}; expected one of {SUBSETS}")
    short = name.removeprefix("imagenet_")
    info = imagenet_info_dir()
    files = [info / f"imagenet_{short}_indices.txt", info / f"imagenet_{short}_synsets.txt"]
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"timm metadata file {f} is missing; reinstall timm (>= 0.9)")
    indices = tuple(int(x) for x in files[0].read_text().split())
    wnids = tuple(files[1].read_text().split())
    expected = tuple(imagenet_wnids()[i] for i in indices)
    if len(indices) != 200 or wnids != expected or list(indices) != sorted(set(indices)):
        raise ValueError(f"timm's {files[0].name} and {files[1].name} disagree with each other "
                         "or with imagenet_synsets.txt (expected 200 sorted, matching classes)")
    return indices, wnids


def subset_indices(name: str) -> list[int]:
    """The 200 ImageNet-1k indices (sorted) of ``"imagenet_a"`` or ``"imagenet_r"``."""
    return list(_subset(name)[0])


def subset_wnids(name: str) -> list[str]:
    """The 200 wnids of ``name``, in the order of :func:`subset_indices`."""
    return list(_subset(name)[1])
