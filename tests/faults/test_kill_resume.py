"""Kill anywhere, lose at most one checkpoint interval (steps or minutes of wall time).

A SIGKILL at a random moment of a pretraining, linear-probe or fine-tune job, then a rerun:
the job resumes from ``_state/last.pth`` and ends with the weights and metrics of an
uninterrupted run (CPU, deterministic), in the same MLflow run. The jobs run in forks of the
test process (tests.faults.jobs.Forked; a SIGKILL ends a fork as it ends a subprocess).
"""

import copy
import json
import random
import time

import pytest
import torch
import torch.nn as nn

from pixmim.config import ConfigError, JobConfig, TrainConfig, from_dict
from pixmim.engine.loop import ResumeState, fit, make_loader
from pixmim.workflow import experiments, job_config, validate_config
from tests.faults.jobs import (
    STEPS_PER_EPOCH,
    assert_same_weights,
    finetune_job,
    history,
    interrupt,
    linear_probe_job,
    mlflow_client,
    pretrain_job,
    run_ok,
    run_watched,
    stage_cmd,
    write,
)

# stage -> (job config, epochs, weights file, metrics.json keys that must match)
STAGES = {
    "pretrain": (pretrain_job, 4, "checkpoint.pth", ("loss_curve", "final_loss", "epochs")),
    "linear_probe": (linear_probe_job, 12, None,
                     ("top1_curve", "top1_best", "top1_last", "best_epoch")),
    "finetune": (finetune_job, 4, "model.pth",
                 ("top1_curve", "top1_best", "top1_last", "top5_last", "best_epoch")),
}


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_sigkill_at_a_random_moment_then_rerun_matches_an_uninterrupted_run(
        stage, tmp_path, tiny_data, store, reference_pretrain):
    make_job, epochs, weights, keys = STAGES[stage]
    if stage == "pretrain":
        cfg = write(tmp_path / "config.yaml", make_job(tiny_data, tracking=store))
        ref, window = reference_pretrain.out, reference_pretrain.window_s
    else:
        cfg = write(tmp_path / "config.yaml",
                    make_job(tiny_data, reference_pretrain.out, tracking=store))
        ref = tmp_path / "ref"
        _, window = run_watched(stage_cmd(stage, cfg, ref), ref, forked=True)

    # a seeded random moment of the window in which the reference run wrote resume states
    delay = random.Random(f"sigkill-{stage}").uniform(0.1, 0.7) * window
    out = tmp_path / "killed"
    alive, rc, _ = interrupt(stage_cmd(stage, cfg, out), out, delay, forked=True)
    assert alive, f"{stage} ended within {delay:.2f} s of its first checkpoint: nothing killed"
    assert rc == -9
    state = out / "_state" / "last.pth"
    killed_at = torch.load(state, map_location="cpu", weights_only=True)
    assert killed_at["step"] < epochs * STEPS_PER_EPOCH
    assert not (out / "metrics.json").exists()
    assert weights is None or not (out / weights).exists()
    print(f"\n{stage}: SIGKILL {delay:.2f} s after the first checkpoint (window {window:.1f} s);"
          f" state at epoch {killed_at['epoch'] + 1}, step {killed_at['step']}, "
          f"{killed_at['batches_done']} batches into the epoch")

    res = run_ok(stage_cmd(stage, cfg, out), forked=True)
    assert f"resumed from {state}: epoch {killed_at['epoch'] + 1}, step {killed_at['step']}" \
        in res.stderr
    assert not state.parent.exists()  # resume state dropped once the outputs are written
    if weights:
        assert_same_weights(ref / weights, out / weights)
    a = json.loads((ref / "metrics.json").read_text())
    b = json.loads((out / "metrics.json").read_text())
    for key in keys:
        assert b[key] == a[key], key

    # the rerun reopened the killed attempt's MLflow run, which now has the reference's curve
    client = mlflow_client(store)
    assert b["mlflow_run_id"] == killed_at["mlflow_run_id"] != a["mlflow_run_id"]
    assert client.get_run(b["mlflow_run_id"]).info.status == "FINISHED"
    ref_curve = history(client, a["mlflow_run_id"], "train_loss")
    curve = history(client, b["mlflow_run_id"], "train_loss")
    assert sorted(ref_curve) == list(range(1, epochs + 1))
    if killed_at["batches_done"] == 0 and killed_at["epoch"] > 0:
        # killed between the epoch-end save and its MLflow call: that one point is lost
        curve.setdefault(killed_at["epoch"], ref_curve[killed_at["epoch"]])
    assert curve == ref_curve


# ---------------------------------------------------------------- interval in minutes
class Interrupt(Exception):
    pass


class Toy(torch.utils.data.Dataset):
    """48 samples (6 steps of 8), keys (index, seed) as the training sampler yields them."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(48, 6, generator=g), torch.randint(0, 3, (48,), generator=g)

    def __len__(self):
        return 48

    def __getitem__(self, key):
        i, seed = key
        return self.x[i], self.y[i], seed


@pytest.mark.parametrize("minutes,steps,saved_at", [
    (0.0001, 0, 4),  # 6 ms of wall time: every 10 ms step is due -> state after step 4
    (10.0, 0, None),  # not due within the epoch: nothing saved before its end
    (0.0, 0, None),  # both intervals off: only epoch ends save
    (0.0, 2, 4),  # every 2 steps: steps 2 and 4
])
def test_checkpoint_interval_in_minutes_saves_mid_epoch(tmp_path, minutes, steps, saved_at):
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    cfg = TrainConfig(epochs=1, batch_size=8, ckpt_every_steps=steps,
                      ckpt_every_minutes=minutes, seed=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = {"n": 0}

    def loss_fn(batch):
        calls["n"] += 1
        if calls["n"] == 5:  # the 5th batch of 6: mid-epoch, after 4 optimizer steps
            raise Interrupt
        time.sleep(0.01)
        return nn.functional.cross_entropy(model(batch[0]), batch[1])

    with pytest.raises(Interrupt):
        fit(model, loss_fn, opt, make_loader(Toy(), cfg, train=True), cfg, tmp_path)
    state = ResumeState(tmp_path).load()
    if saved_at is None:
        assert state is None
    else:
        assert (state["epoch"], state["batches_done"], state["step"]) == (0, saved_at, saved_at)


@pytest.mark.parametrize("section,stage", [("pretrain", "pretrain"),
                                           ("linear_probe", "linear_probe"),
                                           ("finetune", "finetune")])
def test_checkpoint_interval_keys_reach_every_training_job(default_config, section, stage):
    config = copy.deepcopy(default_config)
    config[section].update(ckpt_every_steps=0, ckpt_every_minutes=0.5)
    validate_config(config)
    exp = sorted(experiments(config))[0]
    train = from_dict(JobConfig, job_config(config, exp, stage)).train
    assert (train.ckpt_every_steps, train.ckpt_every_minutes) == (0, 0.5)
    config[section]["ckpt_every_minutes"] = -1
    with pytest.raises(ConfigError, match=rf"{section}\.ckpt_every_minutes: -1 is less than"):
        validate_config(config)
