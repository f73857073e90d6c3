"""MLflow tracking for every stage: one run per (experiment, stage).

Local SQLite store by default (``tracking.tracking_uri``); the ``MLFLOW_TRACKING_URI``
environment variable overrides it, so a shared server is one export away. The workflow
creates the store once (``ensure_store``) before jobs fan out: several processes creating
a brand-new SQLite database at once crash.

Tracking never costs a run: the first call that fails (server down, store locked, disk
full) switches the tracker offline, with one warning naming the cause; that call and every
later one are appended to ``<out>/mlflow_offline.jsonl`` instead, and training goes on.
``python -m pixmim mlflow-sync results/`` replays such logs once the store is back
(:func:`sync`). HTTP calls give up after one retry of at most 5 s (MLflow's default retries
take minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

from pixmim.config import TrackingConfig, flatten

_RETRY_ENV = {
    # A dead server otherwise blocks each call for minutes (MLflow's default retries).
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}
DEFAULT_EXPERIMENT_ID = "0"  # what MLflow's SQL store creates with every database
# The experiment tag by which MLflow 3.x's UI chooses an experiment's first page:
# "custom_model_development" ("Machine learning") the runs table, "genai_development" the
# GenAI overview (traces, latency, tokens). Source: the UI's ExperimentKind enum and its
# lookup of the "mlflow.experimentKind" tag in mlflow/server/js/build/static/js/main.*.js
# (mlflow/demo/generators/traces.py sets the GenAI value with set_experiment_tag). From
# 3.17 on the UI's header switch (GenAI | Model training) decides instead: the URL's
# ``workflowType`` parameter, else the browser's last choice, else GenAI (same bundle: the
# workflow-type context, "mlflow.workflowType" in local storage); so the links we print
# carry ``workflowType=machine_learning`` (:func:`experiment_url`).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
UI_URL = "http://127.0.0.1:5000"  # where `make ui` serves the default store (Makefile)


def experiment_url(experiment_id: str, base: str = UI_URL) -> str:
    """The experiment in the UI, opening on its runs table whatever the browser chose last
    (see :data:`EXPERIMENT_KIND_TAG`)."""
    return f"{base}/#/experiments/{experiment_id}?workflowType=machine_learning"


def resolve_uri(cfg_uri: str) -> str:
    """The tracking URI in force: ``MLFLOW_TRACKING_URI`` if set, else the config's."""
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg_uri


def _store_path(uri: str) -> Path | None:
    """The database file of a SQLite tracking URI, as written (relative stays relative)."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def artifact_root(uri: str) -> str | None:
    """Where a SQLite store keeps its artifacts: ``artifacts/`` beside the database file,
    written in the URI's own frame. The default URI ``sqlite:///results/mlflow/mlflow.db`` is
    relative to the working directory, and so is its artifact root
    (``results/mlflow/artifacts``): whoever opens the store through that URI (the jobs, ``make
    ui``, an ``MlflowClient``, all from the repository root) also finds its artifacts, after
    ``results/`` moved too. An absolute URI gets an absolute root. Other stores keep their own
    (a tracking server's ``mlflow-artifacts:/`` is relative to its artifact destination)."""
    path = _store_path(uri)
    return None if path is None else (path.parent / "artifacts").as_posix()


def _client(uri: str):
    for k, v in _RETRY_ENV.items():
        os.environ.setdefault(k, v)
    from mlflow.tracking import MlflowClient

    if (path := _store_path(uri)) is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri)


def _set_artifact_location(uri: str, experiment_id: str, location: str) -> None:
    """Store ``location`` as written: MLflow's ``create_experiment`` makes every local path
    absolute (``resolve_uri_if_local``) and offers no call that changes it afterwards, so
    the SQLite row is set directly (runs created later derive their artifact URI from it)."""
    import sqlite3

    with closing(sqlite3.connect(_store_path(uri))) as db, db:
        db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
                   (location, int(experiment_id)))


def ensure_store(uri: str, experiment: str) -> str:
    """Create (or upgrade) the store and the experiment; return the experiment id.

    A new SQLite experiment gets the relative artifact root of :func:`artifact_root`.
    MLflow's SQL store creates experiment 0 (``Default``) with every new database, its
    artifacts under ``./mlruns`` of whatever directory first opened it; it is pointed at
    ``<artifact root>/0`` and soft-deleted, so the UI lists only our experiment
    (``mlflow experiments restore --experiment-id 0`` brings it back). The experiment, new
    or existing, is marked a model-training one (:data:`EXPERIMENT_KIND`): the UI opens it on
    its runs."""
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is not None:
        if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:  # a store made before
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id
    root = artifact_root(uri)
    exp_id = client.create_experiment(experiment,
                                      tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    if root is not None:
        _set_artifact_location(uri, exp_id, f"{root}/{exp_id}")
        default = client.get_experiment(DEFAULT_EXPERIMENT_ID)
        if default.lifecycle_stage == "active" and default.name == "Default":
            _set_artifact_location(uri, DEFAULT_EXPERIMENT_ID, f"{root}/{DEFAULT_EXPERIMENT_ID}")
            client.delete_experiment(DEFAULT_EXPERIMENT_ID)
    return exp_id


def git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def source_tags(run_name: str) -> dict[str, str]:
    """MLflow's standard source tags (the UI's "Source" and commit fields): the git commit
    of the working tree, the entry point, a local run."""
    from mlflow.utils.mlflow_tags import (
        MLFLOW_GIT_COMMIT,
        MLFLOW_SOURCE_NAME,
        MLFLOW_SOURCE_TYPE,
    )

    return {MLFLOW_GIT_COMMIT: git_sha(), MLFLOW_SOURCE_TYPE: "LOCAL",
            MLFLOW_SOURCE_NAME: f"python -m pixmim run ({run_name})"}


OFFLINE_LOG = "mlflow_offline.jsonl"
# Metrics wait at most this long (s) before one batched write sends them to the store: each
# write is a transaction (~50 ms on SQLite), so a call per epoch cost a 50-epoch few-shot
# job 3 s of its 10. Tags, artifacts and the end of the run send what waits first.
FLUSH_S = 10.0


_OPEN: list[Tracker] = []  # runs started or reopened by this process and not yet finished


def fail_open_runs() -> None:
    """Mark every run of this process that is still open FAILED: the stage raised after its
    tracked block (a final write, a checkpoint save), which would otherwise leave the run
    RUNNING for good. ``run_main`` calls it on any error."""
    for tracker in list(_OPEN):
        tracker.finish("FAILED")


class Tracker:
    """A thin MLflow run handle; a no-op when ``cfg.enabled`` is false.

    ``step`` has one meaning per metric family (:meth:`log_metrics`):

    * per-epoch records (``train_loss``, ``lr``, ``top1``, ...): the epoch, from 1;
    * iteration curves (``train_loss_step``; a dense run's ``seed<s>/loss``, ``seed<s>/lr``
      and ``seed<s>/val_<metric>``): the optimizer step (mmengine's iteration), from 1;
    * summary metrics, one value per run (``top1_best``, ``miou``, ``mIoU_seed<s>``,
      ``psnr``, ``shape_bias``, ...): step 0.

    Args:
        cfg: the job's tracking config.
        run_name: shown in the UI (``{experiment}/{stage}``).
        tags: run tags; ``mlflow.parentRunId`` nests a downstream run under its pretraining.
        params: the resolved job config (flattened to dotted keys).
        run_id: resume this run instead of starting a new one (a restarted job).
        offline_log: where calls go once tracking fails (None: they are dropped, with a
            warning).
    """

    def __init__(self, cfg: TrackingConfig, run_name: str, tags: dict[str, str],
                 params: dict[str, Any], run_id: str | None = None,
                 offline_log: str | Path | None = None) -> None:
        self.enabled = cfg.enabled
        self.run_id = run_id
        self.offline: str | None = None  # the reason, once tracking failed
        self.offline_log = Path(offline_log) if offline_log else None
        self._pending: list[dict[str, Any]] = []  # metric entries not yet sent
        self._last_flush = self.started = time.monotonic()  # started: the job's wall time
        self.images_per_s: list[float] = []  # each epoch's throughput, as logged (resources)
        if not self.enabled:
            return
        _OPEN.append(self)
        self.uri = resolve_uri(cfg.tracking_uri)
        if self.run_id is None:
            tags = {**source_tags(run_name), **tags}
            self._call({"op": "create_run", "experiment": cfg.experiment, "run_name": run_name,
                        "tags": tags, "params": {k: str(v)[:6000] for k, v in
                                                 sorted(flatten(params).items())}},
                       lambda: self._create(cfg.experiment, run_name, tags, params))

    def _create(self, experiment: str, run_name: str, tags: dict[str, str],
                params: dict[str, Any]) -> None:
        self.client = _client(self.uri)
        exp_id = ensure_store(self.uri, experiment)
        run = self.client.create_run(exp_id, run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        self._log_params(params)

    @property
    def _client_ready(self):
        if not hasattr(self, "client"):
            self.client = _client(self.uri)
        return self.client

    def _record(self, entry: dict[str, Any]) -> None:
        if self.offline_log is None:
            return
        self.offline_log.parent.mkdir(parents=True, exist_ok=True)
        with self.offline_log.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"time_ms": int(time.time() * 1000), "run_id": self.run_id,
                                "uri": getattr(self, "uri", None), **entry}) + "\n")

    def _call(self, entry: dict[str, Any] | list[dict[str, Any]], fn) -> None:
        """Run one tracking call; on failure go offline and log its entries (and what
        follows)."""
        if self.offline is None:
            try:
                fn()
                return
            except Exception as err:  # noqa: BLE001 - any tracking failure, never the run's
                self.offline = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
                where = self.offline_log or "nowhere (no offline log)"
                print(f"[tracking] MLflow failed ({self.offline}); the run goes on, tracking "
                      f"calls are recorded to {where} (sync later: python -m pixmim "
                      f"mlflow-sync)", file=sys.stderr)
        for e in entry if isinstance(entry, list) else [entry]:
            self._record(e)

    def _log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in sorted(flatten(params).items())]
        for i in range(0, len(items), 100):  # MLflow's batch limit is 100 params
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Queue metrics (timestamped now) for the store; sent at most :data:`FLUSH_S`
        seconds later, in one batch with whatever else waits. ``step``: the epoch, the
        optimizer step or 0, by metric family (see the class docstring)."""
        if "images_per_s" in metrics:  # the training loop's, per epoch
            self.images_per_s.append(float(metrics["images_per_s"]))
        if not self.enabled:
            return
        self._pending.append({"op": "log_metrics", "step": step,
                              "metrics": {k: float(v) for k, v in metrics.items()},
                              "timestamp": int(time.time() * 1000)})
        if time.monotonic() - self._last_flush >= FLUSH_S:
            self.flush()

    def pending(self) -> list[dict[str, Any]]:
        """The queued metric entries (plain data): a resume state keeps them, so that a job
        killed before its next flush loses none of what it checkpointed (:meth:`requeue`)."""
        return [dict(e) for e in self._pending]

    def requeue(self, entries: list[dict[str, Any]]) -> None:
        """Queue ``entries`` from a resume state again (MLflow ignores a metric point it
        already holds, so entries sent before the kill are not doubled)."""
        if self.enabled and entries:
            self._pending[:0] = [dict(e) for e in entries]

    def flush(self) -> None:
        """Send the queued metrics now (one ``log_batch`` per 1000 values, MLflow's limit)."""
        if not self.enabled or not self._pending:
            return
        pending, self._pending = self._pending, []
        self._last_flush = time.monotonic()

        def call() -> None:
            from mlflow.entities import Metric

            batch = [Metric(k, v, e["timestamp"], e["step"])
                     for e in pending for k, v in e["metrics"].items()]
            for i in range(0, len(batch), 1000):
                self._client_ready.log_batch(self.run_id, metrics=batch[i : i + 1000])

        self._call(pending, call)

    def log_artifact(self, path: str | Path) -> None:
        if self.enabled:
            self.flush()
            path = str(Path(path).resolve())
            self._call({"op": "log_artifact", "path": path},
                       lambda: self._client_ready.log_artifact(self.run_id, path))

    def log_image(self, path: str | Path, key: str, step: int) -> None:
        """A PNG as an MLflow image of ``key`` at ``step`` (the run page's image view, a
        slider over the steps); the file stays where it is (it is replayed from there
        offline)."""
        if self.enabled:
            self.flush()
            path = str(Path(path).resolve())
            self._call({"op": "log_image", "path": path, "key": key, "step": step},
                       lambda: _log_image(self._client_ready, self.run_id, path, key, step))

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.enabled:
            self.flush()
            def call() -> None:
                for k, v in tags.items():
                    self._client_ready.set_tag(self.run_id, k, v)

            self._call({"op": "set_tags", "tags": dict(tags)}, call)

    def finish(self, status: str = "FINISHED") -> None:
        """End the run with ``status`` (FINISHED | FAILED | KILLED)."""
        if self in _OPEN:
            _OPEN.remove(self)
        if self.enabled:
            self.flush()
            self._call({"op": "finish", "status": status},
                       lambda: self._client_ready.set_terminated(self.run_id, status=status))


def log_report(uri: str, experiment: str, kind: str, name: str, files: list[Path],
               cell_runs: list[str], note: str | list[str] = "") -> str | None:
    """Attach a built table or figure to the experiment as a run of its own, named ``name``
    and tagged ``kind=<kind>``, ``<kind>=<name>``, ``cell_runs`` (the MLflow run ids of its
    cells, comma-separated); ``files`` are its artifacts and ``note`` its description (the
    run page renders it as Markdown): a list is its sections, each kept whole while the
    description fits MLflow's tag limit, the rest replaced by a line pointing to the
    artifacts. A rebuilt table reuses its run (its files replaced, same names), and each
    cell run gets a tag ``<kind>_run.<name>`` with the table run's id.
    Like a stage's tracking, a failure never fails the build: one warning, and None."""
    try:
        return _log_report(uri, experiment, kind, name, files, cell_runs, note)
    except Exception as err:  # noqa: BLE001 - any tracking failure, never the table's
        cause = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}"
        print(f"[tracking] {kind} {name} not logged to MLflow ({cause}); the files are "
              "written, rebuild the target to log it", file=sys.stderr)
        return None


def _log_report(uri: str, experiment: str, kind: str, name: str, files: list[Path],
                cell_runs: list[str], note: str) -> str:
    from mlflow.entities import RunTag
    from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

    client = _client(uri)
    exp_id = ensure_store(uri, experiment)
    found = client.search_runs([exp_id], f"tags.kind = '{kind}' and tags.{kind} = '{name}'",
                               max_results=1)
    tags = {"kind": kind, kind: name, "cell_runs": ",".join(cell_runs)[:MAX_TAG_VAL_LENGTH],
            "mlflow.note.content": fit_sections(note, MAX_TAG_VAL_LENGTH)}
    if found:
        run_id = found[0].info.run_id
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    else:
        tags = {**source_tags(name), **tags}
        run_id = client.create_run(exp_id, run_name=name, tags=tags).info.run_id
    for f in files:
        client.log_artifact(run_id, str(Path(f).resolve()))
    client.set_terminated(run_id, status="FINISHED")
    for cell in dict.fromkeys(cell_runs):  # a link back; a run gone from the store is skipped
        with suppress(Exception):
            client.set_tag(cell, f"{kind}_run.{name}", run_id)
    return run_id


SECTION_LEFT_OUT = "\n_(A section too long for this description is in the artifacts.)_\n"


def fit_sections(note: str | list[str], limit: int) -> str:
    """``note``'s sections joined, in order, each whole or left out (with one line saying
    so) where it would take the text past ``limit`` characters."""
    out, left_out = "", False
    for part in [note] if isinstance(note, str) else note:
        if len(out) + len(part) + len(SECTION_LEFT_OUT) <= limit:
            out += part
        else:
            left_out = True
    return (out + SECTION_LEFT_OUT if left_out else out)[:limit]


def _log_image(client, run_id: str, path: str, key: str, step: int) -> None:
    from PIL import Image

    with Image.open(path) as img:
        client.log_image(run_id, img.convert("RGB"), key=key, step=step)


def sync(log: Path, uri: str | None = None) -> str:
    """Replay one offline log into the store; return the run id. The log is renamed to
    ``*.synced.jsonl`` once every call went through."""
    from mlflow.entities import Metric, Param

    entries = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()
               if line.strip()]
    if not entries:
        raise ValueError(f"{log}: empty offline log")
    run_id = next((e["run_id"] for e in entries if e.get("run_id")), None)
    client = None
    for e in entries:
        uri_now = resolve_uri(uri or e.get("uri") or "sqlite:///results/mlflow/mlflow.db")
        client = client or _client(uri_now)
        if e["op"] == "create_run":
            exp_id = ensure_store(uri_now, e["experiment"])
            run_id = client.create_run(exp_id, run_name=e["run_name"],
                                       tags=e["tags"]).info.run_id
            items = [Param(k, v) for k, v in e["params"].items()]
            for i in range(0, len(items), 100):
                client.log_batch(run_id, params=items[i : i + 100])
        elif run_id is None:
            raise ValueError(f"{log}: no run to replay into (no create_run, no run id)")
        elif e["op"] == "log_metrics":
            client.log_batch(run_id, metrics=[Metric(k, v, e["timestamp"], e["step"])
                                              for k, v in e["metrics"].items()])
        elif e["op"] == "log_artifact" and Path(e["path"]).is_file():
            client.log_artifact(run_id, e["path"])
        elif e["op"] == "log_image" and Path(e["path"]).is_file():
            _log_image(client, run_id, e["path"], e["key"], e["step"])
        elif e["op"] == "set_tags":
            for k, v in e["tags"].items():
                client.set_tag(run_id, k, v)
        elif e["op"] == "finish":
            client.set_terminated(run_id, status=e["status"])
    log.rename(log.with_name(log.name.replace(".jsonl", ".synced.jsonl")))
    return run_id


def sync_main(argv: list[str] | None = None) -> int:
    """``python -m pixmim mlflow-sync [--uri URI] PATH ...``: replay offline logs found
    under each PATH (a run folder or ``results/``)."""
    p = argparse.ArgumentParser(prog="python -m pixmim mlflow-sync")
    p.add_argument("--uri", help="tracking URI (default: MLFLOW_TRACKING_URI or each log's)")
    p.add_argument("paths", nargs="+", help="run folders or results/ to search for offline logs")
    args = p.parse_args(argv)
    logs = sorted({f for path in args.paths for f in
                   ([Path(path)] if Path(path).is_file() else Path(path).rglob(OFFLINE_LOG))})
    if not logs:
        print("mlflow-sync: no offline logs found", file=sys.stderr)
        return 0
    failed = 0
    for log in logs:
        try:
            print(f"{log}: synced into run {sync(log, args.uri)}")
        except Exception as err:  # noqa: BLE001 - report each log, go on with the others
            failed += 1
            print(f"{log}: not synced ({type(err).__name__}: {err})", file=sys.stderr)
    return 1 if failed else 0
