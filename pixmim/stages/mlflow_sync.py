"""Stage ``mlflow-sync``: replay the tracking calls of runs whose MLflow store was down.

    python -m pixmim mlflow-sync [--uri URI] results/

Every ``mlflow_offline.jsonl`` under the paths is replayed (run created if it never was,
params, metrics with their steps and timestamps, artifacts, tags, final status), then
renamed to ``mlflow_offline.synced.jsonl``.
"""

from pixmim.engine.tracking import sync_main as main

__all__ = ["main"]
