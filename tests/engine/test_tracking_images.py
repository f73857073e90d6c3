"""Tracker.log_image: a PNG as an MLflow image at its step, online and replayed from the
offline log (python -m pixmim mlflow-sync)."""

import numpy as np
from mlflow.tracking import MlflowClient

from pixmim.config import TrackingConfig
from pixmim.engine.tracking import OFFLINE_LOG, Tracker, sync
from pixmim.report.plots import plot_reconstructions


def image_steps(client, run_id: str, key: str) -> list[int]:
    paths = [a.path for a in client.list_artifacts(run_id, "images")]
    return sorted(int(p.split("+step+")[1].split("+")[0]) for p in paths
                  if p.startswith(f"images/{key}+step+") and not p.endswith("compressed.webp"))


def test_images_logged_online_and_replayed_offline(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    png = plot_reconstructions(np.random.default_rng(0).random((1, 4, 8, 8, 3)),
                               tmp_path / "r.png")
    tracker = Tracker(TrackingConfig(tracking_uri=uri, experiment="t"), "x/pretrain", {}, {},
                      offline_log=tmp_path / OFFLINE_LOG)
    tracker.log_image(png, "reconstructions", step=5)
    tracker.offline = "the store went away"  # every later call goes to the offline log
    tracker.log_image(png, "reconstructions", step=10)
    tracker.finish()
    client = MlflowClient(uri)
    assert image_steps(client, tracker.run_id, "reconstructions") == [5]
    assert sync(tmp_path / OFFLINE_LOG, uri) == tracker.run_id
    assert image_steps(client, tracker.run_id, "reconstructions") == [5, 10]
