"""MLflow tracking for every stage: one run per (experiment, stage).

Local SQLite store by default (``tracking.tracking_uri``); the ``MLFLOW_TRACKING_URI``
environment variable overrides it, so a shared server is one export away. The workflow
creates the store once (``ensure_store``) before jobs fan out: several processes creating
a brand-new SQLite database at once crash.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

from pixmim.config import TrackingConfig, flatten

_RETRY_ENV = {
    # A dead server otherwise blocks each call for minutes (MLflow's default retries).
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}


def resolve_uri(cfg_uri: str) -> str:
    """The tracking URI in force: ``MLFLOW_TRACKING_URI`` if set, else the config's."""
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg_uri


def _artifact_location(uri: str) -> str | None:
    """For a SQLite store, keep artifacts in ``artifacts/`` beside the database file."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).resolve().parent / "artifacts").as_uri()
    return None


def _client(uri: str):
    for k, v in _RETRY_ENV.items():
        os.environ.setdefault(k, v)
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri)


def ensure_store(uri: str, experiment: str) -> str:
    """Create (or upgrade) the store and the experiment; return the experiment id."""
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(experiment, artifact_location=_artifact_location(uri))


def git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Tracker:
    """A thin MLflow run handle; a no-op when ``cfg.enabled`` is false.

    Args:
        cfg: the job's tracking config.
        run_name: shown in the UI (``{experiment}/{stage}``).
        tags: run tags; ``mlflow.parentRunId`` nests a downstream run under its pretraining.
        params: the resolved job config (flattened to dotted keys).
        run_id: resume this run instead of starting a new one (a restarted job).
    """

    def __init__(self, cfg: TrackingConfig, run_name: str, tags: dict[str, str],
                 params: dict[str, Any], run_id: str | None = None) -> None:
        self.enabled = cfg.enabled
        self.run_id = run_id
        if not self.enabled:
            return
        self.uri = resolve_uri(cfg.tracking_uri)
        self.client = _client(self.uri)
        if self.run_id is None:
            exp_id = ensure_store(self.uri, cfg.experiment)
            run = self.client.create_run(exp_id, run_name=run_name,
                                         tags={**tags, "git_sha": git_sha()})
            self.run_id = run.info.run_id
            self._log_params(params)

    def _log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in sorted(flatten(params).items())]
        for i in range(0, len(items), 100):  # MLflow's batch limit is 100 params
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def log_artifact(self, path: str | Path) -> None:
        if self.enabled:
            self.client.log_artifact(self.run_id, str(path))

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.enabled:
            for k, v in tags.items():
                self.client.set_tag(self.run_id, k, v)

    def finish(self, status: str = "FINISHED") -> None:
        if self.enabled:
            self.client.set_terminated(self.run_id, status=status)
