"""Identity is what a job reads: which job configs a config change touches, and how the
written files carry a change to Snakemake (fast; the end-to-end test runs the DAG)."""

import copy
import json
import os
import time

import yaml

from pixmim.workflow import experiments, job_config, materialize
from pixmim.workflow.jobs import write_job_config


def all_jobs(config):
    exps = experiments(config)
    stages = ("pretrain", "linear_probe", "finetune", "frequency", "robustness",
              "segment_ade20k")
    return {(e, s): job_config(config, e, s, exps) for e in exps for s in stages}


def changed(config, mutate):
    before = all_jobs(config)
    other = copy.deepcopy(config)
    mutate(other)
    after = all_jobs(other)
    return {k for k in before if k in after and before[k] != after[k]}, set(after) - set(before)


def test_radius_touches_only_filtered_targets_pretraining(default_config):
    touched, new = changed(default_config, lambda c: c["lowpass"].update(radius=30))
    # pixel runs have no radius and lf40 keeps its own; the adaptive target reads its initial
    # radius from lowpass.radius, so its pretraining (and nothing after it) changes
    assert touched == {(f"mae-adaptive20-60-src_vit_cpu_patch8_64_25e_s{s}", "pretrain")
                       for s in default_config["seeds"]}
    # new: the PixMIM runs (no radius of their own) under their new ids, of every method
    assert new and all("-lowpass30-src_" in e for e, _ in new)
    assert {e.split("-")[0] for e, _ in new} == {"mae", "mff", "convmae", "lsmae"}
    pixel = job_config(default_config, "mae-pixel-rrc_vit_cpu_patch8_64_25e_s0", "pretrain")
    assert pixel["variant"] == {"target": "pixel", "crop": "rrc"}


def test_a_probe_key_touches_only_probes(default_config):
    touched, new = changed(default_config, lambda c: c["linear_probe"].update(epochs=3))
    assert touched and {s for _, s in touched} == {"linear_probe"} and not new


def test_downstream_jobs_carry_no_variant(default_config):
    exp = "mae-lowpass40-src_vit_cpu_patch8_64_25e_s0"
    for stage in ("linear_probe", "finetune", "robustness", "segment_ade20k", "frequency"):
        job = job_config(default_config, exp, stage)
        assert "variant" not in job and "norm_pix_loss" not in job, stage
    scaled = job_config({**default_config, "lowpass": {**default_config["lowpass"],
                                                       "scale_with_size": False}},
                        exp, "pretrain")
    assert scaled["variant"]["scale_with_size"] is False  # what the job reads, it carries


def test_materialize_writes_only_what_changed(default_config, tmp_path):
    config = {**default_config, "results": str(tmp_path)}
    first = materialize(config)
    assert any(p.endswith("/config.yaml") for p in first)
    assert materialize(config) == []  # nothing changed: nothing rewritten, times kept
    probe = copy.deepcopy(config)
    probe["linear_probe"]["epochs"] = 3
    again = materialize(probe)
    assert again and all("/linear_probe/" in p for p in again if p.endswith("config.yaml"))


def test_a_config_back_at_its_finished_content_is_dated_before_the_outputs(tmp_path):
    import hashlib

    run = tmp_path / "runs" / "e" / "s"
    run.mkdir(parents=True)
    cfg = tmp_path / "jobs" / "e" / "s" / "config.yaml"
    finished = {"stage": "s", "train": {"epochs": 2}}
    text = yaml.safe_dump(finished, sort_keys=False)
    metrics = run / "metrics.json"
    metrics.write_text(json.dumps({"config_sha256": hashlib.sha256(text.encode()).hexdigest()}))
    outputs = [metrics]
    # a preview changes the config: it is newer than the outputs (the job would rerun)
    assert write_job_config(cfg, {**finished, "train": {"epochs": 3}}, outputs)
    assert cfg.stat().st_mtime >= metrics.stat().st_mtime
    # back to the content the outputs were made from: dated before them (nothing reruns)
    time.sleep(0.01)
    assert write_job_config(cfg, finished, outputs)
    assert cfg.stat().st_mtime < metrics.stat().st_mtime
    # another content again: newer
    assert write_job_config(cfg, {**finished, "train": {"epochs": 4}}, outputs)
    assert cfg.stat().st_mtime >= metrics.stat().st_mtime
    os.remove(metrics)  # no finished outputs: written as any change
    assert write_job_config(cfg, finished, outputs)


def test_where_a_job_logs_is_not_its_identity(default_config, tmp_path):
    """Another MLflow store or experiment name touches no job config: the tracking settings
    reach the job with its tags."""
    touched, new = changed(default_config, lambda c: c["mlflow"].update(
        experiment="elsewhere", tracking_uri="sqlite:///other.db"))
    assert not touched and not new
    from pixmim.stages.common import parse_args
    from pixmim.workflow import job_tags

    exp = "mae-pixel-rrc_vit_cpu_patch8_64_25e_s0"
    config = {**default_config, "mlflow": {"tracking_uri": "sqlite:///x.db",
                                           "experiment": "elsewhere"}}
    cfg_file, tags_file = tmp_path / "config.yaml", tmp_path / "tags.yaml"
    cfg_file.write_text(yaml.safe_dump(job_config(config, exp, "linear_probe")))
    tags_file.write_text(yaml.safe_dump(job_tags(config, exp)))
    cfg, _ = parse_args(["--config", str(cfg_file), "--tags", str(tags_file), "--out", "o"],
                        "linear_probe")
    assert (cfg.tracking.tracking_uri, cfg.tracking.experiment) == ("sqlite:///x.db",
                                                                     "elsewhere")
    assert "tracking" not in cfg.tags and cfg.tags["seed"] == "0"
