"""The texture sweep (`snakemake texture_sweep`): its datasets, runs and jobs, and that it
changes none of the default's."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from pixmim.config import ConfigError
from pixmim.workflow import (
    data_root,
    default_targets,
    experiments,
    experiments_of,
    job_config,
    load_config,
    materialize,
    sweep_spec,
    sweep_unavailable,
    texture_dataset,
    validate_config,
)
from tests.workflow.test_catalogue import ROOT, dry_run, job_counts


def _outputs(text: str, rule: str) -> list[str]:
    """The first output of every job of ``rule`` in a dry run's listing."""
    out, current = [], None
    for line in text.splitlines():
        if line.startswith("rule "):
            current = line[5:].rstrip(":")
        elif current == rule and line.startswith("    output: "):
            out.append(line[12:].split(", ")[0])
    return out


def test_sweep_dry_run_lists_its_jobs(tmp_path):
    """values x runs x seeds pretrain + linear_probe jobs; the default value's are the
    default's own jobs (same ids as Table 2's runs), the others read their own dataset."""
    seeds = tmp_path / "seeds.yaml"
    seeds.write_text("seeds: [0, 1]\n")
    text = dry_run(tmp_path, "texture_sweep", configfiles=(str(seeds),))
    config = load_config(seeds)
    values = config["texture_sweep"]["values"]
    assert values == [0.0, 0.5, 1.0]
    counts = job_counts(text)
    assert counts["pretrain"] == counts["linear_probe"] == 3 * 2 * 2
    assert counts["generate_texture_data"] == 2 and counts["generate_data"] == 1
    assert counts["texture_sweep"] == 1
    results = tmp_path / "results"
    ids = {Path(p).relative_to(results / "runs").parts[0] for p in _outputs(text, "pretrain")}
    default = set(experiments_of(config, "mae_800") + experiments_of(config, "pixmim_mae_800"))
    assert default <= ids  # texture_class_bound 1 is the default dataset: shared jobs
    assert {i for i in ids if "_synth_tex" not in i} == default
    assert len(ids) == 12
    for exp in ids - default:  # the probe reads the dataset the encoder was pretrained on
        dataset = "synth_tex0.5" if "_synth_tex0.5_" in exp else "synth_tex0"
        for stage in ("pretrain", "linear_probe"):
            job = yaml.safe_load((results / "jobs" / exp / stage / "config.yaml").read_text())
            assert job["data"]["root"] == str(results / "data" / dataset)
    assert sorted(_outputs(text, "generate_texture_data")) == [
        str(results / "data" / "synth_tex0"), str(results / "data" / "synth_tex0.5")]


def test_sweep_is_not_a_default_target(tmp_path):
    config = load_config()
    assert "texture_sweep" not in config["targets"]
    assert not any("texture_sweep" in t for t in default_targets(config))
    text = dry_run(tmp_path, "--forceall")
    assert "generate_texture_data" not in job_counts(text)
    assert "texture_sweep" not in job_counts(text)


def test_sweep_changes_no_default_job(default_config, tmp_path):
    """With or without the sweep key, the default's job configs, tags and specs are the
    same files with the same text; the sweep only adds its own."""
    with_sweep = {**default_config, "results": str(tmp_path / "a")}
    without = {k: v for k, v in with_sweep.items() if k != "texture_sweep"}
    without["results"] = str(tmp_path / "b")
    validate_config(without)

    def files(config, *targets):
        root = Path(config["results"])
        materialize(config, ["everything", *targets])
        return {str(p.relative_to(root)): p.read_text().replace(str(root), "R")
                for p in root.rglob("*") if p.is_file()}

    a, b = files(with_sweep, "texture_sweep"), files(without)
    assert {k: a[k] for k in b} == b
    added = set(a) - set(b)
    assert added and all("_synth_tex" in k or "texture_sweep" in k for k in added)
    tags = {k: yaml.safe_load(v) for k, v in a.items() if k.endswith("tags.yaml")}
    assert {k for k, t in tags.items() if "texture_sweep" in t["figures"]} == \
        {k for k in tags if "_synth_tex" in k}


def test_generate_data_rule_is_as_before_the_knob(tmp_path):
    """Snakemake reruns a job whose rule's shell text or params changed (rerun triggers
    code, params): generate_data keeps both as they were before texture_class_bound, so an
    existing data/synth, and everything made from it, stays up to date."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    with SnakemakeApi(OutputSettings()) as api:
        wf = api.workflow(resource_settings=ResourceSettings(),
                          config_settings=ConfigSettings(config={"results": str(tmp_path)}),
                          snakefile=ROOT / "Snakefile", workdir=ROOT)._workflow  # parsed
        rule = wf.get_rule("generate_data")
        assert dict(rule.params) == {"synth": {
            k: load_config()["data"]["synth"][k]
            for k in ("seed", "train_per_class", "val_per_class", "short_side")}}
        assert "texture" not in rule.shellcmd


def test_default_texture_bound_moves_the_default_dataset(default_config):
    """data.synth.texture_class_bound != 1: the default dataset is data/synth_tex<v> and the
    sweep's value equal to it is the default dataset (no suffix); 1 gets a suffix."""
    config = copy.deepcopy(default_config)
    config["data"]["synth"]["texture_class_bound"] = 0.5
    validate_config(config)
    assert data_root(config) == "results/data/synth_tex0.5"
    assert texture_dataset(config, 0.5) == "default"
    assert texture_dataset(config, 1.0) == "synth_tex1"
    ids = {e for e, k in experiments(config).items() if k["dataset"] == "synth_tex1"}
    assert len(ids) == 2 * len(config["seeds"])
    job = job_config(config, sorted(ids)[0], "linear_probe")
    assert job["data"]["root"] == "results/data/synth"  # the bound dataset, reused


def test_sweep_needs_generated_data(default_config):
    config = load_config(ROOT / "config" / "paper.yaml")
    assert "data.source" in sweep_unavailable(config)
    with pytest.raises(ConfigError, match="texture_sweep cannot be built"):
        sweep_spec(config)
    bad = copy.deepcopy(default_config)
    bad["texture_sweep"]["variant"] = "nope"
    with pytest.raises(ConfigError, match="texture_sweep.variant"):
        validate_config(bad)
    bad = copy.deepcopy(default_config)
    bad["texture_sweep"]["values"] = [1.5]
    with pytest.raises(ConfigError, match="texture_sweep.values"):
        validate_config(bad)
