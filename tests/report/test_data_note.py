"""A table's note says what data its cells came from, as their runs recorded it.

A run on ``data.source: folder`` (real JPEGs in ImageNet layout) must not be described as
the embedded dataset: the note names the folder, says it is a folder read in place and
gives its fingerprint; a run on the generated dataset keeps saying it is the embedded one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from pixmim.config import DataConfig, JobConfig
from pixmim.report import tables
from pixmim.report.provenance import UNFINGERPRINTED
from pixmim.stages import data as data_stage
from pixmim.stages.common import provenance
from pixmim.workflow import load_config, table_spec


def _jpeg_folder(root: Path) -> Path:
    for split, name in (("train", "n01440764_10026.JPEG"), ("val", "ILSVRC2012_val_00000001.JPEG")):
        (root / split / "n01440764").mkdir(parents=True)
        Image.new("RGB", (40, 30), (120, 60, 30)).save(root / split / "n01440764" / name)
    return root


def _table19(tmp: Path, root: Path) -> str:
    """Table 19 of the default config, its cells' metrics.json written as a finished
    finetune job on ``root`` records them (``finish`` adds ``provenance(cfg)``)."""
    config = {**load_config(), "results": str(tmp / "results")}
    spec = table_spec(config, "table19")
    for row in spec["rows"]:
        for cell in row["cells"].values():
            for f in cell["files"]:
                cfg = JobConfig(experiment="x", stage="finetune_1pct",
                                data=DataConfig(root=str(root)))
                Path(f).parent.mkdir(parents=True, exist_ok=True)
                Path(f).write_text(json.dumps({cell["key"]: 50.0, **provenance(cfg)}))
    return tables.to_markdown(tables.build_table(spec), spec)


def _note(md: str) -> str:
    return md.split("## Provenance")[0]


def test_folder_data_are_named_with_their_fingerprint(tmp_path):
    root = _jpeg_folder(tmp_path / "imagenet")
    assert data_stage.main(["fingerprint", "--root", str(root)]) == 0
    fp = json.loads((root / "fingerprint.json").read_text())["sha256"]
    note = _note(_table19(tmp_path, root))
    assert f"{root} (folder; fingerprint {fp[:12]})" in note
    for word in ("embedded", "generated", "synthetic"):
        assert word not in note, note


def test_folder_without_fingerprint_says_so(tmp_path):
    root = _jpeg_folder(tmp_path / "imagenet")
    note = _note(_table19(tmp_path, root))
    assert f"{root} (folder; fingerprint {UNFINGERPRINTED})" in note
    assert "embedded" not in note


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "synth"
    assert data_stage.main(["synth", "--out", str(root), "--train-per-class", "1",
                            "--val-per-class", "1", "--short-side", "24"]) == 0
    return root


def test_embedded_data_keep_saying_so(tmp_path, synth_root):
    fp = json.loads((synth_root / "fingerprint.json").read_text())["sha256"]
    note = _note(_table19(tmp_path, synth_root))
    assert f"{synth_root} (generated: the embedded synthetic-shapes dataset" in note
    assert f"[pixmim-synth-shapes/1]; fingerprint {fp[:12]})" in note
