"""Config validation (workflow schema and job dataclasses) names the culprit key."""

import copy

import pytest

from pixmim.config import ConfigError, JobConfig, from_dict, load_job_config, to_dict
from pixmim.workflow import experiments, job_config, table_spec, validate_config, write_yaml


def test_default_config_is_valid(default_config):
    validate_config(default_config)
    exps = experiments(default_config)
    assert {"mae-pixel-rrc_vit_cpu_patch8_64_25e_s0", "mae-lowpass40-src_vit_cpu_patch8_64_25e_s0",
            "mae-pixel-rrc_vit_cpu_patch8_64_12e_s0"} <= set(exps)
    # identity is the resolved config: names resolving alike share one job
    assert sorted(exps["mae-pixel-rrc_vit_cpu_patch8_64_12e_s0"]["names"]) == ["mae_300", "rrc_300"]


@pytest.mark.parametrize("mutate,message", [
    (lambda c: c["pretrain"].update(epoch=3), "pretrain.epoch: unknown key"),
    (lambda c: c.update(lowpas={}), "lowpas: unknown key"),
    (lambda c: c["pretrain"].update(epochs="ten"), "pretrain.epochs: 'ten' is not of type"),
    (lambda c: c["linear_probe"].update(batch_size=0), "linear_probe.batch_size: 0 is less"),
    (lambda c: c["lowpass"].update(mode="gaussian"), "lowpass.mode: 'gaussian' is not one of"),
    (lambda c: c["variants"]["pixmim"].update(crop="zoom"), "variants.pixmim.crop"),
    (lambda c: c["runs"].update(x={"method": "mae", "variant": "nope"}),
     "runs.x.variant: unknown variant 'nope'"),
    (lambda c: c["tables"]["table2"]["rows"][0].update(run="nope"),
     "tables.table2.rows.0.run: unknown run 'nope'"),
    (lambda c: c.update(targets=["table16"]), "targets.0: table16 cannot be built"),
    (lambda c: c["tables"]["table2"]["rows"][1].update(baseline="BEiT"),
     "tables.table2.rows.1.baseline: no row labelled 'BEiT'"),
    (lambda c: c["data"].update(source="folder"), "data.root: None is not of type 'string'"),
    (lambda c: c.update(device="tpu"), "device: 'tpu' does not match"),
])
def test_bad_config_names_the_key(default_config, mutate, message):
    cfg = copy.deepcopy(default_config)
    mutate(cfg)
    with pytest.raises(ConfigError, match="config key") as err:
        validate_config(cfg)
    assert message in str(err.value)


def test_job_configs_round_trip_through_the_dataclass(default_config, tmp_path):
    for exp in ["mae-pixel-rrc_vit_cpu_patch8_64_25e_s0",
                "mae-lowpass40-src_vit_cpu_patch8_64_25e_s0"]:
        for stage in ("pretrain", "linear_probe"):
            path = tmp_path / exp / stage / "config.yaml"
            write_yaml(path, job_config(default_config, exp, stage))
            cfg = load_job_config(path)
            assert cfg.experiment == exp and cfg.stage == stage
            assert cfg.train.epochs == (default_config["schedules"][800] if stage == "pretrain"
                                        else default_config[stage]["epochs"])
            assert from_dict(JobConfig, to_dict(cfg)) == cfg
    pix = job_config(default_config, "mae-lowpass40-src_vit_cpu_patch8_64_25e_s0", "pretrain")
    assert pix["variant"]["target"] == "lowpass" and pix["variant"]["crop"] == "src"
    # the radius in the paper's unit (bins at 224 px); the job scales it to its input size
    assert pix["variant"]["radius"] == 40 and pix["variant"]["reference_size"] == 224
    model = load_job_config(path.parent.parent / "pretrain" / "config.yaml")
    assert model.variant.model_kwargs(64)["radius"] == pytest.approx(40 * 64 / 224, abs=1e-4)


def test_job_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.epochs: expected int, got 'x'"):
        from_dict(JobConfig, {"experiment": "e", "stage": "pretrain", "train": {"epochs": "x"}})
    with pytest.raises(ConfigError, match=r"variant\.radiuss: unknown key"):
        from_dict(JobConfig, {"experiment": "e", "stage": "pretrain",
                              "variant": {"radiuss": 3}})
    with pytest.raises(ConfigError, match="experiment: required key is missing"):
        from_dict(JobConfig, {"stage": "pretrain"})
    with pytest.raises(ConfigError, match="config file not found"):
        load_job_config(tmp_path / "missing.yaml")


def test_table_spec_points_at_linear_probe_metrics(default_config):
    spec = table_spec(default_config, "table2")
    assert [r["label"] for r in spec["rows"]] == ["MAE", "PixMIM MAE"]
    cell = spec["rows"][1]["cells"]["lin"]
    assert cell["files"][0].endswith(
        "mae-lowpass40-src_vit_cpu_patch8_64_25e_s0/linear_probe/metrics.json")
    assert cell["key"] == "top1_best"
