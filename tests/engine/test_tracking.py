"""The MLflow store as users handle it: ``results/`` moved elsewhere keeps its artifacts
readable, the store lists our experiment only, and nothing lands in ``./mlruns``."""

import os
import shutil
import subprocess
import sys

import pytest

from pixmim.config import TrackingConfig
from pixmim.engine.tracking import Tracker, artifact_root, fail_open_runs
from tests.conftest import ROOT

URI = "sqlite:///results/mlflow/mlflow.db"  # the default: relative to the working directory
CFG = TrackingConfig(tracking_uri=URI, experiment="pixmim-bench")


# A job's tracking, as a stage process does it (its own process: MLflow keeps one engine, and
# its open connections, per URI string for the life of a process).
JOB = """
from pathlib import Path
from pixmim.engine.tracking import Tracker, ensure_store
from tests.engine.test_tracking import CFG, URI
ensure_store(URI, CFG.experiment)
Path("note.txt").write_text("logged before the move")
tracker = Tracker(CFG, "x/pretrain", {"stage": "pretrain"}, {"train": {"epochs": 1}})
tracker.log_artifact("note.txt")
tracker.finish()
print(tracker.run_id)
"""


@pytest.fixture(scope="module")
def moved(tmp_path_factory):
    """A run with an artifact, logged by a process in ``a/`` through the default URI; then
    ``a/results`` moved to ``b/results``, and this process in ``b/``. Yields (run id, b)."""
    tmp = tmp_path_factory.mktemp("tracking")
    a, b = tmp / "a", tmp / "b"
    a.mkdir()
    b.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    res = subprocess.run([sys.executable, "-c", JOB], cwd=a, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.name for p in a.iterdir()) == ["note.txt", "results"]  # no ./mlruns
    shutil.move(a / "results", b / "results")
    shutil.rmtree(a)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.chdir(b)
        yield res.stdout.split()[-1], b


def test_a_moved_results_folder_keeps_its_artifacts(moved, tmp_path):
    from mlflow.tracking import MlflowClient

    run_id, b = moved
    client = MlflowClient(tracking_uri=URI)
    run = client.get_run(run_id)
    assert run.info.artifact_uri.startswith("results/mlflow/artifacts/")
    assert [f.path for f in client.list_artifacts(run_id)] == ["note.txt"]
    got = client.download_artifacts(run_id, "note.txt", str(tmp_path))
    assert open(got).read() == "logged before the move"


def test_the_store_lists_our_experiment_only(moved):
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    run_id, b = moved
    client = MlflowClient(tracking_uri=URI)
    assert [e.name for e in client.search_experiments()] == ["pixmim-bench"]
    default = client.get_experiment("0")  # MLflow's SQL store creates it; kept out of sight
    assert default.lifecycle_stage == "deleted"
    assert default.artifact_location == "results/mlflow/artifacts/0"
    assert "mlruns" not in " ".join(e.artifact_location for e in
                                    client.search_experiments(view_type=ViewType.ALL))
    assert not (b / "mlruns").exists()


def test_artifact_root_is_written_in_the_uris_frame():
    assert artifact_root(URI) == "results/mlflow/artifacts"
    assert artifact_root("sqlite:////abs/store/mlflow.db") == "/abs/store/artifacts"
    assert artifact_root("http://127.0.0.1:5000") is None  # the server's own mlflow-artifacts:


def test_a_run_left_open_by_an_error_is_marked_failed(moved):
    from mlflow.tracking import MlflowClient

    done = Tracker(CFG, "x/a", {}, {})
    done.finish()
    left = Tracker(CFG, "x/b", {}, {})
    fail_open_runs()
    fail_open_runs()  # idempotent: each run is finished once
    client = MlflowClient(tracking_uri=URI)
    assert client.get_run(done.run_id).info.status == "FINISHED"
    assert client.get_run(left.run_id).info.status == "FAILED"


def test_the_experiment_opens_on_its_runs(tmp_path, monkeypatch):
    """MLflow 3.x opens an experiment tagged custom_model_development on its runs table (not
    its GenAI overview): a new experiment is tagged, and ``mlflow-init`` tags an older one."""
    from mlflow.tracking import MlflowClient

    from pixmim.engine.tracking import EXPERIMENT_KIND_TAG, ensure_store
    from pixmim.stages import mlflow_init

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    new = client.get_experiment(ensure_store(uri, "new"))
    assert new.tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    old = client.create_experiment("old")  # as a store made before the tag
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    assert mlflow_init.main(["--uri", uri, "--experiment", "old",
                             "--out", str(tmp_path / "store.json")]) == 0
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
