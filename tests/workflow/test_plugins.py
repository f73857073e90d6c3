"""A method and an evaluation stage defined only under tests/ (tests/plugins/), registered
the way a user registers them (the config key ``plugins``), go through the whole DAG."""

import json
import math

import pandas as pd
import pytest
import yaml

from pixmim import registry
from pixmim.config import ConfigError
from pixmim.workflow import job_config, load_config, validate_config
from tests.conftest import ROOT, run_dag, tiny_overrides

PLUGINS = ["tests.plugins.toy_mae", "tests.plugins.knn_probe"]


def overlay(tmp_path) -> dict:
    """The tiny overlay plus the plugins, their catalogue rows and the stage's section."""
    over = tiny_overrides(tmp_path)
    over.update({
        "plugins": PLUGINS,
        "default_archs": {"toymae": "vit_base_patch16_224"},
        "runs": {"toy_800": {"method": "toymae", "variant": "base", "epochs": 800},
                 "pixmim_toy_800": {"method": "toymae", "variant": "pixmim", "epochs": 800}},
        "tables": {"tabletoy": {"title": "A plugin method and a plugin stage",
                                # no ft: a plugin method's fine-tune runs in the toy
                                # family's DAG (tests/families/test_toy_family.py)
                                "columns": ["lin", "knn"],
                                "rows": [{"label": "Toy", "run": "toy_800"},
                                         {"label": "PixMIM Toy", "run": "pixmim_toy_800",
                                          "baseline": "Toy"}]}},
        "knn_probe": {"k": 3},
        "seeds": [0, 1],  # two seeds: every cell and gain gets its interval
        "only_methods": ["toymae"],
        "targets": ["tabletoy"],
    })
    return over


def config_with(tmp_path, **changes) -> dict:
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump({**overlay(tmp_path), **changes}))
    return load_config(path)


def test_plugins_register_and_resolve(tmp_path):
    config = config_with(tmp_path)
    validate_config(config)
    assert registry.method("toymae", PLUGINS).family == "vit"
    assert registry.columns(PLUGINS)["knn"].stage == "knn_probe"
    job = job_config(config, "toymae-pixel-rrc_vit_cpu_patch8_64_2e_s0", "knn_probe")
    assert job["options"] == {"k": 3}
    assert job["plugins"] == PLUGINS  # the job's own method and stage modules
    pre = job_config(config, "toymae-pixel-rrc_vit_cpu_patch8_64_2e_s0", "pretrain")
    assert pre["plugins"] == ["tests.plugins.toy_mae"]
    # the plugin stage's section is validated by the schema it declares
    with pytest.raises(ConfigError, match="knn_probe.k: 0 is less than the minimum"):
        validate_config(config_with(tmp_path, knn_probe={"k": 0}))
    # without the plugins, the stage's section is an unknown key, the rows an unknown method
    with pytest.raises(ConfigError, match="knn_probe: unknown key"):
        validate_config(config_with(tmp_path, plugins=[]))
    no_method = config_with(tmp_path, plugins=[])
    del no_method["knn_probe"]
    with pytest.raises(ConfigError, match=r"'toymae' is not one of \['convmae'"):
        validate_config(no_method)


def test_the_package_never_names_the_plugins():
    for folder in ("pixmim", "workflow", "config"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in (".py", ".smk", ".yaml"):
                text = path.read_text()
                assert "toymae" not in text and "knn_probe" not in text, path


@pytest.mark.slow
def test_plugin_method_and_stage_run_through_the_dag(tmp_path):
    results = run_dag(tmp_path, overlay(tmp_path))
    df = pd.read_csv(results / "tables" / "tabletoy.csv")
    assert list(df["method"]) == ["Toy", "PixMIM Toy"]
    first = [r.split(";")[0] for r in df["runs"]]  # the seed-0 run of each row
    for run in first:
        for stage, key in (("linear_probe", "top1_best"), ("knn_probe", "top1")):
            metrics = json.loads((results / "runs" / run / stage
                                  / "metrics.json").read_text())
            assert math.isfinite(metrics[key])
    knn = json.loads((results / "runs" / first[0] / "knn_probe"
                      / "metrics.json").read_text())
    assert knn["k"] == 3 and 0.0 <= knn["top1"] <= 100.0
    md = (results / "tables" / "tabletoy.md").read_text()
    assert "k-NN (%) ours (paper)" in md and "2 seeds" in md and " ± " in md
    # each cell is the mean of its two seeds' runs, with an interval
    assert (df["seeds"] == 2).all() and all(len(r.split(";")) == 2 for r in df["runs"])
    for col, stage, key in (("lin", "linear_probe", "top1_best"), ("knn", "knn_probe", "top1")):
        for _, row in df.iterrows():
            vals = [json.loads((results / "runs" / r / stage / "metrics.json").read_text())[key]
                    for r in row["runs"].split(";")]
            assert row[f"{col}_ours"] == pytest.approx(sum(vals) / 2, abs=1e-4)
            assert math.isfinite(row[f"{col}_ours_ci95"])
        assert math.isfinite(df[f"{col}_gain_ours_ci95"][1])
    # the checkpoint was written by the plugin's class (its meta names the method)
    import torch

    ckpt = torch.load(results / "runs" / first[0] / "pretrain" / "checkpoint.pth",
                      map_location="cpu", weights_only=True)
    assert ckpt["meta"]["method"] == "toymae"
