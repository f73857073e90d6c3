"""Dataset roots checked at DAG build: one line per problem naming the config key and path.

Each dataset: its fixture root passes (tests/data/test_fixtures.py), a missing root and a
malformed one (built beside it from symlinks, nothing copied) give the line; through
``snakemake -n`` the DAG build stops in seconds on a root the targets read, and a target
that does not read it plans as before.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from snakemake.cli import get_argument_parser

from pixmim.data.generate.fixtures import ROOTS
from pixmim.workflow import load_config
from pixmim.workflow.roots import check_root, target_problems
from pixmim.workflow.targets import cli_targets

ROOT = Path(__file__).resolve().parents[2]
PARSER = get_argument_parser()


def _link(src: Path, dst: Path, keep=lambda name: True) -> Path:
    """``dst/`` holding symlinks to the entries of ``src`` that ``keep`` accepts."""
    dst.mkdir(parents=True)
    for e in src.iterdir():
        if keep(e.name) and e.name not in ("meta.json", "fingerprint.json"):
            (dst / e.name).symlink_to(e)
    return dst


def _outside(names: list[str], allowed: list[str]) -> str:
    return next(n for n in names if n not in set(allowed))


def _imagenet_wnids() -> list[str]:
    from pixmim.data.imagenet_meta import imagenet_wnids

    return imagenet_wnids()


# key -> (make a malformed copy of the fixture root under tmp, a phrase of the problem line)
def _no_val(src, dst):
    return _link(src, dst, lambda n: n != "val")


def _too_few_classes(src, dst):
    _link(src, dst, lambda n: n == "val")
    _link(src / "train", dst / "train", lambda n: n != _imagenet_wnids()[5])
    return dst


def _masks_without_train(src, dst):
    return _link(src, dst, lambda n: n != "train")


def _places_empty_category(src, dst):
    (dst / "train" / "airfield").mkdir(parents=True)
    return dst


def _ade_without_annotations(src, dst):
    return _link(src, dst, lambda n: n != "annotations")


def _coco_without_json(src, dst):
    return _link(src, dst, lambda n: n != "annotations")


def _in_c_missing_severity(src, dst):
    _link(src, dst, lambda n: n != "fog")
    return _link(src / "fog", dst / "fog", lambda n: n != "5") and dst


def _subset_foreign_wnid(name):
    def make(src, dst):
        from pixmim.evaluation.metrics import subset_wnids

        _link(src, dst)
        (dst / _outside(_imagenet_wnids(), subset_wnids(name))).mkdir()
        return dst
    return make


def _sketch_archive_folder(src, dst):
    dst.mkdir()
    (dst / "sketch").symlink_to(src)
    return dst


def _cue_conflict_bad_name(src, dst):
    _link(src, dst, lambda n: n != "airplane")
    (dst / "airplane").mkdir()
    (dst / "airplane" / "airplane1-zebra1.png").write_bytes(b"")
    return dst


MALFORMED = {
    "data.root": (_no_val, "no val/ folder"),
    "data.masks_root": (_masks_without_train, "no train/ folder"),
    "data.pretrain_roots.places365": (_places_empty_category, "no image files"),
    "data.ade20k_root": (_ade_without_annotations, "no annotations/ folder"),
    "data.coco_root": (_coco_without_json, "no annotations/instances_train2017.json"),
    "data.eval_roots.imagenet_c": (_in_c_missing_severity,
                                   "no corruption/severity folders ['fog/5']"),
    "data.eval_roots.imagenet_a": (_subset_foreign_wnid("imagenet_a"), "not among the "
                                   "imagenet-a wnids"),
    "data.eval_roots.imagenet_r": (_subset_foreign_wnid("imagenet_r"), "not among the "
                                   "imagenet-r wnids"),
    "data.eval_roots.imagenet_sketch": (_sketch_archive_folder, "wnid folders are under "
                                        "sketch/"),
    "data.eval_roots.cue_conflict": (_cue_conflict_bad_name, "airplane/airplane1-zebra1.png: not "
                                     "<shape><i>-<texture><j>.png"),
}


def test_every_fixture_root_has_a_malformed_case():
    assert set(MALFORMED) == set(ROOTS)


@pytest.mark.parametrize("key", sorted(ROOTS))
def test_missing_root_names_key_and_path(tmp_path, key):
    path = tmp_path / "absent"
    assert check_root(key, path, 1000) == [f"{key}: {path}: folder not found"]


@pytest.mark.parametrize("key", sorted(ROOTS))
def test_malformed_root_names_key_and_path(fixture_roots, tmp_path, key):
    make, phrase = MALFORMED[key]
    bad = make(fixture_roots / ROOTS[key], tmp_path / "bad")
    lines = check_root(key, bad, 1000)
    assert lines and all(ln.startswith(f"{key}: {bad}: ") for ln in lines), lines
    assert any(phrase in ln for ln in lines), lines


def test_class_count_must_match_num_classes(fixture_roots, tmp_path):
    bad = _too_few_classes(fixture_roots / "imagenet", tmp_path / "bad")
    assert check_root("data.root", bad, 1000) == [
        f"data.root: {bad}: train/: 999 class folders, data.num_classes is 1000"]
    root = fixture_roots / "imagenet"
    assert check_root("data.root", root, 100) == [
        f"data.root: {root}: {s}/: 1000 class folders, data.num_classes is 100"
        for s in ("train", "val")]


def test_no_wnid_folders(tmp_path):
    (tmp_path / "train" / "dogs").mkdir(parents=True)
    (tmp_path / "val").mkdir()
    lines = check_root("data.root", tmp_path, 1000)
    assert lines[0].startswith(f"data.root: {tmp_path}: train/: 1 folder(s) not among the "
                               "ImageNet-1k wnids: ['dogs']")
    assert lines[1] == (f"data.root: {tmp_path}: val/: no class folders (expected <wnid>/ "
                        "folders such as n01440764/)")


def _paper(tmp_path: Path, fixture_roots: Path, **broken: str) -> Path:
    """An overlay of config/paper.yaml: results under tmp, every root at its fixture,
    ``broken`` keys (``coco_root=...``) elsewhere."""
    data: dict = {"eval_roots": {}, "pretrain_roots": {}}
    for key, rel in ROOTS.items():
        parts = key.split(".")[1:]
        value = str(fixture_roots / rel)
        if len(parts) == 1:
            data[parts[0]] = broken.get(parts[0], value)
        else:
            data[parts[0]][parts[1]] = broken.get(parts[1], value)
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"results": str(tmp_path / "results"), "data": data}))
    return overlay


def test_only_the_roots_the_targets_read_are_checked(fixture_roots, tmp_path):
    from pixmim.workflow import merge
    from pixmim.workflow.catalogue import BASE_CONFIGS

    overlay = _paper(tmp_path, fixture_roots, coco_root=str(tmp_path / "no-coco"),
                     places365=str(tmp_path / "no-places"),
                     cue_conflict=str(tmp_path / "no-cues"))
    layers = [yaml.safe_load(Path(ROOT / p).read_text()) for p in
              (*BASE_CONFIGS, "config/paper.yaml")] + [yaml.safe_load(overlay.read_text())]
    config = {}
    for layer in layers:
        config = merge(config, layer)
    R = config["results"]
    assert target_problems(config, [f"{R}/tables/table5a.csv"]) == []
    assert target_problems(config, [f"{R}/tables/table18.md"]) == [
        f"data.coco_root: {tmp_path / 'no-coco'}: folder not found"]
    assert target_problems(config, [f"{R}/tables/table6.csv"]) == [
        f"data.pretrain_roots.places365: {tmp_path / 'no-places'}: folder not found"]
    # the robustness stage reads IN-C/A/R/Sketch, the shape-bias stage the cue-conflict set
    assert target_problems(config, [f"{R}/tables/table4.csv"]) == []
    assert target_problems(config, [f"{R}/figures/fig8_shape_bias.png"]) == [
        f"data.eval_roots.cue_conflict: {tmp_path / 'no-cues'}: folder not found"]
    assert len(target_problems(config, ["everything"])) == 3
    assert target_problems({**config, "data": {**config["data"], "source": "synth"}},
                           ["everything"]) == []


def test_cli_targets_are_snakemakes():
    assert cli_targets(["-n", "results/tables/table5a.csv", "--cores", "2"], PARSER) == [
        "results/tables/table5a.csv"]
    assert cli_targets(["--configfile", "config/paper.yaml", "-n"], PARSER) == []


def _snakemake(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", "-n", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_dag_build_stops_on_a_root_the_targets_read(fixture_roots, tmp_path):
    missing = tmp_path / "no-coco"
    overlay = _paper(tmp_path, fixture_roots, coco_root=str(missing))
    R = tmp_path / "results"
    t0 = time.perf_counter()
    res = _snakemake(f"{R}/tables/table18.csv", "--configfile", "config/paper.yaml",
                     str(overlay))
    seconds = time.perf_counter() - t0
    assert res.returncode != 0
    assert f"data.coco_root: {missing}: folder not found" in res.stderr.splitlines()
    assert "Building DAG of jobs" not in res.stdout + res.stderr
    assert not (R / "runs").exists() and seconds < 60
    ok = _snakemake(f"{R}/tables/table19.csv", "--configfile", "config/paper.yaml",
                    str(overlay))
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "data.coco_root" not in ok.stdout + ok.stderr
    off = tmp_path / "off.yaml"
    off.write_text("data: {check_roots: false}\n")
    skip = _snakemake(f"{R}/tables/table18.csv", "--configfile", "config/paper.yaml",
                      str(overlay), str(off))
    assert skip.returncode == 0, skip.stderr[-2000:]


def test_check_roots_is_a_declared_key():
    config = load_config()
    assert config["data"]["check_roots"] is True
