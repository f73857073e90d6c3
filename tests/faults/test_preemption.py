"""Preemption: SIGTERM (or SIGINT) saves the state at the next optimizer step and exits 75
(EX_TEMPFAIL), so the scheduler requeues the job; the rerun resumes there."""

import json
import os
import random
import re
import signal

import pytest
import torch
import torch.nn as nn

from pixmim.config import TrainConfig
from pixmim.engine.loop import Preempted, ResumeState, fit, make_loader
from tests.faults.jobs import (
    assert_same_weights,
    interrupt,
    lines,
    mlflow_client,
    pretrain_job,
    run_ok,
    stage_cmd,
    write,
)
from tests.faults.test_kill_resume import Toy


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_state_at_the_next_step_and_raises_preempted(tmp_path, sig):
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    cfg = TrainConfig(epochs=2, batch_size=8, ckpt_every_steps=0, ckpt_every_minutes=0, seed=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = {"n": 0}

    def loss_fn(batch):
        calls["n"] += 1
        if calls["n"] == 3:  # arrives during the 3rd step's forward pass
            os.kill(os.getpid(), sig)
        return nn.functional.cross_entropy(model(batch[0]), batch[1])

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    with pytest.raises(Preempted, match=rf"{sig.name} at epoch 1, step 3: state saved to "
                                        rf"{re.escape(str(tmp_path / '_state' / 'last.pth'))}"):
        fit(model, loss_fn, opt, make_loader(Toy(), cfg, train=True), cfg, tmp_path)
    assert Preempted.exit_code == 75
    state = ResumeState(tmp_path).load()
    assert (state["epoch"], state["step"], state["batches_done"]) == (0, 3, 3)
    for key, value in model.state_dict().items():  # the weights after step 3
        torch.testing.assert_close(state["model"][key], value, rtol=0, atol=0)
    # the handlers were restored: the process is not left ignoring SIGTERM / SIGINT
    assert {s: signal.getsignal(s) for s in before} == before


@pytest.mark.slow
def test_sigterm_exits_75_with_state_and_the_rerun_finishes_the_same_run(
        tmp_path, tiny_data, store, reference_pretrain):
    cfg = write(tmp_path / "config.yaml", pretrain_job(tiny_data, tracking=store))
    out = tmp_path / "preempted"
    delay = random.Random("sigterm").uniform(0.1, 0.7) * reference_pretrain.window_s
    alive, rc, stderr = interrupt(stage_cmd("pretrain", cfg, out), out, delay, signal.SIGTERM)
    assert alive, "the job ended before SIGTERM"
    assert rc == 75, stderr[-3000:]
    assert "Traceback" not in stderr
    state_path = out / "_state" / "last.pth"
    said = [s for s in lines(stderr) if "SIGTERM" in s]
    assert len(said) == 1, said
    m = re.fullmatch(rf"pixmim pretrain: SIGTERM at epoch (\d+), step (\d+): state saved to "
                     rf"{re.escape(str(state_path))}; exit 75 .*", said[0])
    assert m, said[0]
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    assert (state["epoch"] + 1, state["step"]) == (int(m[1]), int(m[2]))
    assert not (out / "metrics.json").exists() and not (out / "checkpoint.pth").exists()
    client = mlflow_client(store)
    assert client.get_run(state["mlflow_run_id"]).info.status == "KILLED"
    print(f"\nSIGTERM {delay:.2f} s after the first checkpoint: {said[0]}")

    res = run_ok(stage_cmd("pretrain", cfg, out))
    assert f"resumed from {state_path}: epoch {m[1]}, step {m[2]}" in res.stderr
    assert_same_weights(reference_pretrain.out / "checkpoint.pth", out / "checkpoint.pth")
    ref = json.loads((reference_pretrain.out / "metrics.json").read_text())
    got = json.loads((out / "metrics.json").read_text())
    assert got["loss_curve"] == ref["loss_curve"]
    assert got["mlflow_run_id"] == state["mlflow_run_id"]
    assert client.get_run(got["mlflow_run_id"]).info.status == "FINISHED"
