"""Fixtures shared by the fault tests: a tiny dataset, one MLflow store, one reference run."""

from types import SimpleNamespace

import pytest

from pixmim.data.generate.synth import SynthConfig, generate
from tests.faults.jobs import pretrain_job, run_watched, stage_cmd, write


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """16 classes x (2 train, 1 val) images, 48 px short side."""
    out = tmp_path_factory.mktemp("faults_data") / "synth"
    generate(SynthConfig(seed=2, train_per_class=2, val_per_class=1, short_side=48), out)
    return out


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    """One SQLite MLflow store for the stage runs of the session (created once: creating a
    store costs seconds)."""
    from pixmim.engine.tracking import ensure_store

    uri = f"sqlite:///{tmp_path_factory.mktemp('faults_mlflow') / 'mlflow.db'}"
    ensure_store(uri, "faults")
    return uri


@pytest.fixture(scope="session")
def reference_pretrain(tmp_path_factory, tiny_data, store):
    """An uninterrupted pretraining run: the reference of the kill and preemption tests and
    the pretrain_dir of the downstream ones. ``window_s``: how long it ran after its first
    resume state (kills are timed inside that window)."""
    tmp = tmp_path_factory.mktemp("faults_reference")
    cfg = write(tmp / "config.yaml", pretrain_job(tiny_data, tracking=store))
    _, window = run_watched(stage_cmd("pretrain", cfg, tmp / "pretrain"), tmp / "pretrain",
                            forked=True)
    return SimpleNamespace(out=tmp / "pretrain", window_s=window)
