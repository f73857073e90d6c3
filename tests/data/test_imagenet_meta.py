"""Tests of ImageNet-1k's class metadata read from timm's files (pixmim.data.imagenet_meta)."""

from __future__ import annotations

import re

import pytest

from pixmim.data import imagenet_meta
from pixmim.data.imagenet_meta import imagenet_names, imagenet_wnids


def test_imagenet_wnids_are_1000_unique() -> None:
    wnids = imagenet_wnids()
    assert len(wnids) == 1000 == len(set(wnids))
    assert all(re.fullmatch(r"n\d{8}", w) for w in wnids)
    assert wnids[0] == "n01440764"  # tench: index 0 in every ImageNet-1k ordering
    assert len(imagenet_names()) == 1000 and imagenet_names()[0].startswith("tench")


def test_missing_timm_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imagenet_meta.importlib.util, "find_spec", lambda name: None)
    imagenet_meta.imagenet_info_dir.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match="timm"):
            imagenet_meta.imagenet_info_dir()
    finally:
        imagenet_meta.imagenet_info_dir.cache_clear()
