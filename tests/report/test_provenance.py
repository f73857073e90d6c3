"""Dataset fingerprints and their lookup (pixmim.report.provenance)."""

import json

import pytest

from pixmim.report import provenance as P


def dataset(root, meta=None):
    """A small folder in a generated dataset's shape: files in sub-folders and meta.json."""
    for split, n in (("train", 3), ("val", 2)):
        (root / split / "n01").mkdir(parents=True)
        for i in range(n):
            (root / split / "n01" / f"{i}.png").write_bytes(b"x" * (10 + i))
    meta = meta or {"generator": "g/1", "config": {"seed": 0}, "seconds": 1.5}
    (root / "meta.json").write_text(json.dumps(meta))
    return root


def test_fingerprint_follows_listing_and_settings_not_timings(tmp_path):
    root = dataset(tmp_path / "d")
    first = P.write_fingerprint(root)
    assert (first["files"], first["bytes"]) == (5, 10 + 11 + 12 + 10 + 11)
    assert first["parts"] == ["train", "val"]
    assert P.fingerprint(root)["sha256"] == first["sha256"]  # its own file is left out
    (root / "meta.json").write_text(json.dumps({"generator": "g/1", "config": {"seed": 0},
                                                "seconds": 9.9}))
    assert P.fingerprint(root)["sha256"] == first["sha256"]  # a timing is no setting
    (root / "meta.json").write_text(json.dumps({"generator": "g/1", "config": {"seed": 1}}))
    assert P.fingerprint(root)["sha256"] != first["sha256"]  # another generator setting
    (root / "meta.json").write_text(json.dumps({"generator": "g/1", "config": {"seed": 0}}))
    (root / "val" / "n01" / "0.png").write_bytes(b"y" * 11)  # another size
    assert P.fingerprint(root)["sha256"] != first["sha256"]
    (root / "val" / "n01" / "0.png").write_bytes(b"y" * 10)
    (root / "val" / "n01" / "9.png").write_bytes(b"")  # one more file
    assert P.fingerprint(root)["sha256"] != first["sha256"]


def test_a_real_dataset_is_fingerprinted_by_its_listing(tmp_path):
    root = dataset(tmp_path / "d")
    (root / "meta.json").unlink()
    record = P.write_fingerprint(root)
    assert record["settings"] is None and record["files"] == 5


def test_a_part_reads_the_fingerprint_of_its_dataset(tmp_path):
    root = dataset(tmp_path / "views")
    sha = P.write_fingerprint(root)["sha256"]
    assert P.read_fingerprint(root) == P.read_fingerprint(root / "val") == sha
    (tmp_path / "other").mkdir()
    assert P.read_fingerprint(tmp_path / "other") == P.UNFINGERPRINTED
    (root / "extra").mkdir()  # made after the fingerprint: not one of its parts
    assert P.read_fingerprint(root / "extra") == P.UNFINGERPRINTED
    (root / "val" / P.FINGERPRINT).write_text("{}")
    with pytest.raises(ValueError, match="no sha256"):
        P.read_fingerprint(root / "val")


def test_what_a_job_read_is_one_fingerprint():
    a, b = "a" * 64, "b" * 64
    assert P.combine({}) == P.NO_DATA
    assert P.combine({"x/c": a, "x/r": a}) == a
    assert P.combine({"x": a, "y": b}) == P.combine({"y": b, "x": a}) not in (a, b)
    assert P.combine({"x": a, "y": P.UNFINGERPRINTED}) == P.UNFINGERPRINTED


def test_commit_label_marks_a_dirty_tree():
    assert P.commit_label("abc", True) == "abc-dirty"
    assert P.commit_label("abc", False) == P.commit_label("abc", None) == "abc"


def test_the_data_command_fingerprints_a_real_dataset(tmp_path):
    from pixmim.stages import data

    root = dataset(tmp_path / "imagenet")
    (root / "meta.json").unlink()
    assert data.main(["fingerprint", "--root", str(root)]) == 0
    written = json.loads((root / P.FINGERPRINT).read_text())
    assert written == P.fingerprint(root) and P.read_fingerprint(root) == written["sha256"]
