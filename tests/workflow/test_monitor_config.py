"""pretrain.monitor in the workflow config: checked against MonitorConfig's fields, and
read by the pretraining jobs only."""

import pytest

from pixmim.config import ConfigError
from pixmim.workflow import load_config
from pixmim.workflow.jobs import experiments, job_config
from pixmim.workflow.schema import validate_config


@pytest.mark.parametrize("section, key, value, message", [
    ("pretrain", "knn_k", 0, "pretrain.monitor.knn_k: 0 is less than the minimum of 1"),
    ("pretrain", "knn_evry", 5, "pretrain.monitor.knn_evry: unknown key"),
    ("linear_probe", None, None, "linear_probe.monitor: unknown key"),
])
def test_monitor_keys_are_checked(section, key, value, message):
    config = load_config()
    if key is None:
        config[section]["monitor"] = {"knn_every": 1}
    else:
        config[section]["monitor"][key] = value
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_only_the_pretraining_reads_the_monitor():
    config = load_config()
    exp = sorted(e for e in experiments(config) if e.startswith("mae-pixel"))[0]
    assert job_config(config, exp, "pretrain")["monitor"] == config["pretrain"]["monitor"]
    for stage in ("linear_probe", "finetune", "frequency"):
        job = job_config(config, exp, stage)
        assert "monitor" not in job and "monitor" not in job.get("train", {}), stage
