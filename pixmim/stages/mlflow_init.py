"""Stage ``mlflow-init``: create the tracking store and experiment once, before jobs fan out.

The experiment, new or from an older store, is marked a model-training experiment
(:data:`pixmim.engine.tracking.EXPERIMENT_KIND`), so MLflow 3.x's UI opens it on its runs
(3.17: through the link it prints, :func:`pixmim.engine.tracking.experiment_url`).

``python -m pixmim mlflow-init --uri URI --experiment NAME --out MARKER``
"""

from __future__ import annotations

import argparse

from pixmim.engine.tracking import ensure_store, experiment_url, resolve_uri
from pixmim.io import write_json


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pixmim mlflow-init")
    p.add_argument("--uri", required=True, help="tracking URI (MLFLOW_TRACKING_URI overrides)")
    p.add_argument("--experiment", required=True, help="experiment name to create")
    p.add_argument("--out", required=True, help="marker file written when the store is ready")
    args = p.parse_args(argv)
    uri = resolve_uri(args.uri)
    exp_id = ensure_store(uri, args.experiment)
    write_json(args.out, {"tracking_uri": uri, "experiment": args.experiment,
                          "experiment_id": exp_id})
    print(f"MLflow store ready: {uri} (experiment {args.experiment!r}, id {exp_id}); "
          f"with `make ui`: {experiment_url(exp_id)}")
    return 0
