"""Tracking faults never cost the run: MLflow unreachable, hanging or locked, training
finishes, ``metrics.json`` is written, tracking gives up within seconds, and what could not
be logged is kept in ``<out>/mlflow_offline.jsonl`` for ``python -m pixmim mlflow-sync``."""

import json
import socket
import sqlite3
import sys
import time

import pytest
import torch

from pixmim.config import TrackingConfig
from pixmim.engine import tracking
from pixmim.engine.tracking import OFFLINE_LOG, Tracker, ensure_store
from tests.faults.jobs import (
    history,
    lines,
    mlflow_client,
    pretrain_job,
    run_forked,
    run_ok,
    stage_cmd,
    write,
)

EPOCHS, LOG_EVERY = 2, 2  # 8 steps: step metrics at 2, 4, 6, 8; epoch metrics at 1, 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def offline_ops(out) -> list[dict]:
    return [json.loads(s) for s in (out / OFFLINE_LOG).read_text().splitlines()]


def tracking_failures(stderr: str) -> list[str]:
    return [s for s in lines(stderr) if s.startswith("[tracking] MLflow failed")]


def test_http_retry_settings_parse_and_bound_each_call(monkeypatch):
    """Each setting must be valid for the installed MLflow (an unparsable one fails every
    HTTP call, a healthy server's too) and keep a dead server's cost to seconds."""
    import mlflow.environment_variables as mlflow_env

    for key in tracking._RETRY_ENV:
        monkeypatch.delenv(key, raising=False)
    tracking._client("http://127.0.0.1:9")  # sets the defaults; contacts nothing
    retries = mlflow_env.MLFLOW_HTTP_REQUEST_MAX_RETRIES.get()
    timeout = mlflow_env.MLFLOW_HTTP_REQUEST_TIMEOUT.get()
    backoff = mlflow_env.MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get()
    jitter = mlflow_env.MLFLOW_HTTP_REQUEST_BACKOFF_JITTER.get()
    worst = timeout * (retries + 1) + sum(backoff * 2**i + jitter for i in range(retries))
    assert worst <= 15, (retries, timeout, backoff, jitter)


def test_a_hanging_server_is_given_up_within_seconds(tmp_path, monkeypatch):
    """A server that accepts connections and never answers: the first call times out, the
    tracker goes offline, every later call is recorded at once."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with socket.socket() as hang:
        hang.bind(("127.0.0.1", 0))
        hang.listen(16)
        uri = f"http://127.0.0.1:{hang.getsockname()[1]}"
        t0 = time.perf_counter()
        tracker = Tracker(TrackingConfig(tracking_uri=uri, experiment="faults"), "x/pretrain",
                          {"stage": "pretrain"}, {"train": {"epochs": 1}},
                          offline_log=tmp_path / OFFLINE_LOG)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for step in range(1, 21):
            tracker.log_metrics({"train_loss": 1.0 / step}, step=step)
        tracker.finish()
        later = time.perf_counter() - t0
    print(f"\nhanging server: first call gave up after {first:.1f} s; "
          f"21 later calls took {later:.3f} s")
    assert first < 20 and later < 1
    assert tracker.offline and uri[len("http://"):] in tracker.offline
    ops = [e["op"] for e in offline_ops(tmp_path)]
    assert ops == ["create_run"] + ["log_metrics"] * 20 + ["finish"]


@pytest.fixture(scope="module")
def untracked_wall_s(tmp_path_factory, tiny_data):
    """``wall_s`` of the tiny run with tracking off: the baseline of the tracking costs."""
    tmp = tmp_path_factory.mktemp("untracked")
    cfg = write(tmp / "c.yaml", pretrain_job(tiny_data, epochs=EPOCHS, log_every=LOG_EVERY))
    run_ok(stage_cmd("pretrain", cfg, tmp / "out"), forked=True)
    return json.loads((tmp / "out" / "metrics.json").read_text())["wall_s"]


def assert_finished_untracked(res, out, cause: str) -> dict:
    """The run finished, its outputs are written, one warning names the cause."""
    assert res.returncode == 0, res.stderr[-4000:]
    assert (out / "checkpoint.pth").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    said = tracking_failures(res.stderr)
    assert len(said) == 1 and cause in said[0], said
    assert f"recorded to {out / OFFLINE_LOG}" in said[0]
    ops = offline_ops(out)
    # the step metrics, the epoch metrics, then the job's resources (stages.common.finish)
    assert [e["op"] for e in ops] == (
        ["create_run"] + ["log_metrics"] * (EPOCHS * 4 // LOG_EVERY + EPOCHS + 1)
        + ["log_artifact"] * 2 + ["finish"])
    assert set(ops[-4]["metrics"]) >= {"resources/wall_s", "resources/peak_host_mem_mb"}
    assert ops[-1]["status"] == "FINISHED"
    return metrics


def assert_synced(uri: str, run_id: str, metrics: dict, data) -> None:
    client = mlflow_client(uri)
    synced = client.get_run(run_id)
    assert synced.info.status == "FINISHED"
    assert synced.info.run_name == "mae-pixmim_faults/pretrain"
    assert synced.data.params["train.epochs"] == str(EPOCHS)
    assert synced.data.params["data.root"] == str(data)
    assert synced.data.tags["stage"] == "pretrain"
    curve = history(client, run_id, "train_loss")
    assert curve == dict(enumerate(metrics["loss_curve"], start=1))
    assert sorted(history(client, run_id, "train_loss_step")) == [2, 4, 6, 8]
    assert {"metrics.json", "config.resolved.yaml"} <= \
        {a.path for a in client.list_artifacts(run_id)}


@pytest.mark.slow
def test_unreachable_server_never_costs_the_run_and_is_synced_later(tmp_path, tiny_data,
                                                                      untracked_wall_s):
    port = free_port()  # nothing listens there
    out = tmp_path / "out"
    cfg = write(tmp_path / "c.yaml", pretrain_job(
        tiny_data, tracking=f"http://127.0.0.1:{port}", epochs=EPOCHS, log_every=LOG_EVERY))
    res = run_forked(stage_cmd("pretrain", cfg, out))
    metrics = assert_finished_untracked(res, out, f"http://127.0.0.1:{port}/api/")
    print(f"\nunreachable server: run {res.seconds:.1f} s in all; wall_s {metrics['wall_s']:.2f}"
          f" s vs {untracked_wall_s:.2f} s untracked: tracking cost "
          f"{metrics['wall_s'] - untracked_wall_s:.2f} s")
    assert res.seconds < 60
    assert metrics["wall_s"] - untracked_wall_s < 15

    sync_uri = f"sqlite:///{tmp_path / 'sync.db'}"
    res = run_ok([sys.executable, "-m", "pixmim", "mlflow-sync", "--uri", sync_uri, str(out)],
                 forked=True)
    run_id = res.stdout.split("synced into run ")[1].split()[0]
    assert not (out / OFFLINE_LOG).exists()
    assert (out / "mlflow_offline.synced.jsonl").is_file()
    assert_synced(sync_uri, run_id, metrics, tiny_data)
    again = run_ok([sys.executable, "-m", "pixmim", "mlflow-sync", "--uri", sync_uri, str(out)],
                   forked=True)
    assert "no offline logs found" in again.stderr  # nothing is replayed twice


@pytest.mark.slow
def test_locked_store_never_costs_the_run_and_is_synced_later(tmp_path, tiny_data,
                                                              untracked_wall_s):
    db = tmp_path / "mlflow" / "mlflow.db"
    uri = f"sqlite:///{db}"
    ensure_store(uri, "faults")
    out = tmp_path / "out"
    cfg = write(tmp_path / "c.yaml", pretrain_job(tiny_data, tracking=uri, epochs=EPOCHS,
                                                  log_every=LOG_EVERY))
    lock = sqlite3.connect(db, isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")  # another process holds the store's write lock
        res = run_forked(stage_cmd("pretrain", cfg, out))
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    metrics = assert_finished_untracked(res, out, "database is locked")
    print(f"\nlocked store: run {res.seconds:.1f} s in all; wall_s {metrics['wall_s']:.2f} s vs "
          f"{untracked_wall_s:.2f} s untracked: tracking cost "
          f"{metrics['wall_s'] - untracked_wall_s:.2f} s (waiting out the lock once)")
    assert res.seconds < 90

    res = run_ok([sys.executable, "-m", "pixmim", "mlflow-sync", str(out)])  # the log's URI
    run_id = res.stdout.split("synced into run ")[1].split()[0]
    assert_synced(uri, run_id, metrics, tiny_data)


@pytest.mark.slow
def test_a_failed_final_write_marks_the_run_failed(tmp_path, tiny_data, store):
    """Training done, then ``metrics.json`` cannot be written (a folder is in its place):
    the job fails with one line naming the file, and its MLflow run ends FAILED, not
    RUNNING."""
    out = tmp_path / "out"
    (out / "metrics.json").mkdir(parents=True)
    cfg = write(tmp_path / "c.yaml", pretrain_job(tiny_data, tracking=store, epochs=1))
    res = run_forked(stage_cmd("pretrain", cfg, out))
    assert res.returncode == 1, res.stderr[-3000:]
    said = [s for s in lines(res.stderr) if ": error: " in s]
    assert len(said) == 1 and "metrics.json" in said[0], said
    state = torch.load(out / "_state" / "last.pth", map_location="cpu", weights_only=True)
    assert mlflow_client(store).get_run(state["mlflow_run_id"]).info.status == "FAILED"
