"""Preemption of a dense stage, two processes under torchrun (gloo), as SLURM runs a
multi-GPU job: a SIGTERM to every process stops all at the same iteration, rank 0 saves
mmengine's state once and each process says so and exits 75; the rerun resumes at that
iteration in the same MLflow run, whose training curve was logged live, and ends where an
uninterrupted run ends (CPU). Outputs are written once, by rank 0; the job log shows loss, lr
and ETA. (That the dense stage's hook raises Preempted in one process:
tests/downstream/test_dense_distributed.py; that Preempted exits 75: tests/faults/
test_preemption.py.)"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import ROOT
from tests.faults.jobs import ARCH, env, history, lines, mlflow_client, run_ok, write

pytest.importorskip("mmseg")

ITERS = 16


@pytest.fixture(scope="module")
def dense_inputs(tmp_path_factory):
    """Generated ADE20K-like scenes and an (untrained) pretraining checkpoint."""
    from pixmim.data.generate.scenes import SceneConfig, generate
    from pixmim.models import create_model

    tmp = tmp_path_factory.mktemp("dense_faults")
    generate(SceneConfig(seed=0, train=8, val=2), tmp / "scenes")
    torch.manual_seed(0)
    (tmp / "pretrain").mkdir()
    torch.save({"model": create_model("mae", ARCH).state_dict(),
                "meta": {"method": "mae", "arch": ARCH}}, tmp / "pretrain" / "checkpoint.pth")
    return tmp


def dense_job(inputs, store: str) -> dict:
    return {
        "experiment": "mae-pixmim_faults", "stage": "segment_ade20k", "method": "mae",
        "arch": ARCH, "pretrain_dir": str(inputs / "pretrain"),
        "dense": {"root": str(inputs / "scenes" / "ade20k"), "iters": ITERS,
                  "val_interval": 8, "batch_size": 2, "crop_size": 64, "scale": [192, 64],
                  "head_channels": 16, "num_workers": 0, "warmup_iters": 2, "runs": 1,
                  "drop_path": 0.0},
        "tracking": {"tracking_uri": store, "experiment": "faults"},
    }


def trained_iters(out) -> int:
    """Training log points mmengine wrote so far (one per iteration here)."""
    return sum(1 for f in out.glob("_state/seed*/*/vis_data/scalars.json")
               for row in f.read_text().splitlines() if '"loss"' in row)


def sigterm_after(cmd, out, iters: int, group: bool = False) -> tuple[int, str]:
    """Start ``cmd``; SIGTERM once it logged ``iters`` training iterations (``group``: to
    every process of its session, as SLURM signals all processes of a job)."""
    log = out.parent / f"{out.name}.log"
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=group)
        deadline = time.time() + 300
        while trained_iters(out) < iters and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, f"ended before SIGTERM:\n{log.read_text()[-3000:]}"
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=300)
    return rc, log.read_text()


def torchrun_cmd(stage: str, cfg, out) -> list[str]:
    """``stage_cmd`` as two CPU processes under torchrun (gloo)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            "2", "-m", "pixmim", stage, "--config", str(cfg), "--out", str(out)]


@pytest.mark.slow
def test_dense_stage_with_two_processes_writes_once_and_resumes_after_sigterm(
        tmp_path, dense_inputs, store):
    job = dense_job(dense_inputs, store)
    job["experiment"] = "mae-pixmim_faults2p"  # its own runs in the session's store
    job["dense"]["batch_size"] = 2  # one image per process: the PPM's BN syncs over gloo
    cfg = write(tmp_path / "config.yaml", job)
    ref, out = tmp_path / "ref", tmp_path / "preempted"
    done = run_ok(torchrun_cmd("segment_ade20k", cfg, ref))
    log = done.stdout + done.stderr
    assert "SyncBN layers synchronise their statistics over gloo" in log
    # the job log: mmengine's iteration lines with loss, lr and ETA (rank 0's, log_level INFO)
    said = [s for s in lines(log) if re.search(rf"Iter\(train\) \[\s*\d+/{ITERS}\]", s)]
    assert len(said) == ITERS, log[-3000:]  # interval 1 at 16 iterations
    assert all(re.search(r"lr: \S+ .*eta: .*loss: \d", s) for s in said), said[0]
    a = json.loads((ref / "metrics.json").read_text())
    assert sorted(p.name for p in ref.iterdir()) == ["config.resolved.yaml", "metrics.json",
                                                     "mm_config_seed0.py"]
    client = mlflow_client(store)
    exp = client.get_experiment_by_name("faults")
    runs = client.search_runs([exp.experiment_id],
                              "tags.experiment = 'mae-pixmim_faults2p'")
    assert [r.info.run_id for r in runs] == [a["mlflow_run_id"]]  # one run, rank 0's
    assert runs[0].info.status == "FINISHED"
    assert history(client, a["mlflow_run_id"], "miou") == {0: pytest.approx(a["miou"])}
    # one curve point per iteration, logged once (rank 0)
    assert sorted(history(client, a["mlflow_run_id"], "seed0/loss")) == \
        list(range(1, ITERS + 1))

    rc, log = sigterm_after(torchrun_cmd("segment_ade20k", cfg, out), out, 3, group=True)
    # each process stops at the same iteration (one that has not seen the signal yet names
    # the other's)
    stops = [s for s in lines(log) if re.search(
        r"^pixmim segment_ade20k: (SIGTERM|a stop signal \(another process\)) at iteration "
        r"\d+ of seed0: state saved", s)]
    assert len(stops) == 2 and "SIGTERM" in stops[0] + stops[1], log[-3000:]
    # no traceback from a worker (torchrun's agent prints its own SignalException's)
    assert not re.search(r'File "[^"]*/pixmim/', log), log[-3000:]
    at = {int(re.search(r"iteration (\d+)", s)[1]) for s in stops}
    assert len(at) == 1, stops
    (at,) = at
    assert 3 <= at < ITERS
    work = out / "_state" / "seed0"
    saved = str(work / f"preempt_iter_{at}.pth")
    # each process names the one file rank 0 saved, and the exit status that requeues the job
    # (Preempted.exit_code; torchrun's own status is its agent's)
    assert all(re.search(rf"state saved to {re.escape(saved)}; exit 75 ", s) for s in stops)
    assert sorted(p.name for p in work.glob("preempt_iter_*.pth")) == [f"preempt_iter_{at}.pth"]
    assert (work / "last_checkpoint").read_text().strip() == saved
    ckpt = torch.load(saved, map_location="cpu", weights_only=False)
    assert ckpt["meta"]["iter"] == at and {"optimizer", "param_schedulers"} <= set(ckpt)
    assert not (out / "metrics.json").exists()
    killed = torch.load(out / "_state" / "last.pth", weights_only=True)["mlflow_run_id"]
    assert client.get_run(killed).info.status == "KILLED"
    # logged live: the stopped attempt's curve holds every iteration it trained
    assert sorted(history(client, killed, "seed0/loss")) == list(range(1, at + 1))
    print(f"\nSIGTERM to every process after iteration {at} of {ITERS}; torchrun exit {rc}")

    res = run_ok(torchrun_cmd("segment_ade20k", cfg, out))
    assert f"resumed epoch: 0, iter: {at}" in res.stdout + res.stderr, res.stdout[-3000:]
    resumed = [int(x) for x in re.findall(rf"Iter\(train\) \[\s*(\d+)/{ITERS}\]",
                                          res.stdout + res.stderr)]
    assert resumed == list(range(at + 1, ITERS + 1))  # no iteration trained twice
    b = json.loads((out / "metrics.json").read_text())
    run_id = b["mlflow_run_id"]
    assert run_id == killed != a["mlflow_run_id"]  # the resumed attempt finishes the same run
    assert client.get_run(run_id).info.status == "FINISHED"
    curve, ref_curve = (history(client, r, "seed0/loss") for r in (run_id, a["mlflow_run_id"]))
    assert sorted(curve) == list(range(1, ITERS + 1))
    print(f"mIoU {b['miou']:.4f} resumed vs {a['miou']:.4f} uninterrupted")
    assert curve == ref_curve  # every rank resumed from rank 0's state
    assert b["per_seed"] == a["per_seed"]
    # summaries at step 0 (the step of each metric family: pixmim.engine.tracking.Tracker)
    assert history(client, run_id, "miou") == {0: pytest.approx(b["miou"])}
    assert sorted(history(client, run_id, "mIoU_seed0")) == [0]
