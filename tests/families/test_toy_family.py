"""A new encoder family is one package: a tests-only hierarchical family
(tests/plugins/toy_family: patch merging, two stages) and its one method
(tests/plugins/toy_simmim) go pretrain -> probe -> fine-tune -> segmentation -> detection
through the DAG and into a table, with no edit outside their modules and catalogue rows."""

import json
import math

import pandas as pd
import pytest

from pixmim import registry
from tests.conftest import ROOT, run_dag, tiny_overrides

PLUGINS = ["tests.plugins.toy_simmim"]
NAMES = ("toyhier", "toy_family", "toy_simmim", "hier_cpu_64", "ToyHierPyramid")


def overlay(tmp_path) -> dict:
    over = tiny_overrides(tmp_path)
    over["segmentation"]["runs"] = 1
    over.update({
        "plugins": PLUGINS,
        "default_archs": {"toyhier": "hier_cpu_64"},
        "arch_map": {"hier_cpu_64": "hier_cpu_64"},  # already CPU-size
        "runs": {"hier_800": {"method": "toyhier", "variant": "base", "epochs": 800}},
        "tables": {"tablehier": {"title": "A new encoder family, end to end",
                                 "columns": ["lin", "ft", "miou", "ap_box"],
                                 "rows": [{"label": "Toy hierarchical", "run": "hier_800"}]}},
        "only_methods": ["toyhier"],
        "targets": ["tablehier"],
    })
    return over


def test_nothing_outside_the_toy_modules_names_the_toy_family():
    for folder in ("pixmim", "workflow", "config", "Snakefile"):
        root = ROOT / folder
        for path in [root] if root.is_file() else root.rglob("*"):
            if path.is_file() and path.suffix in (".py", ".smk", ".yaml", ""):
                text = path.read_text(errors="ignore")
                assert not [n for n in NAMES if n in text], path
    assert registry.method("toyhier", PLUGINS).family == "tests.plugins.toy_family"


@pytest.mark.slow
def test_a_new_family_runs_every_stage_through_the_dag(tmp_path):
    results = run_dag(tmp_path, overlay(tmp_path))
    df = pd.read_csv(results / "tables" / "tablehier.csv")
    assert list(df["method"]) == ["Toy hierarchical"]
    run = df["runs"][0].split(";")[0]
    for stage, key in (("linear_probe", "top1_best"), ("finetune", "top1_best"),
                       ("segment_ade20k", "miou"), ("detect_coco", "ap_box")):
        metrics = json.loads((results / "runs" / run / stage / "metrics.json").read_text())
        assert math.isfinite(metrics[key]), (stage, metrics)
    for col in ("lin", "ft", "miou", "ap_box"):
        assert math.isfinite(df[f"{col}_ours"][0]), col
    # the dense jobs built the family's own backbone (its class in their mm configs)
    for stage in ("segment_ade20k", "detect_coco"):
        configs = list((results / "runs" / run / stage).glob("mm_config_seed*.py"))
        assert configs and all("ToyHierPyramid" in c.read_text() for c in configs), stage
