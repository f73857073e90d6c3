"""A table cell followed back to its MLflow runs, their commit and the data they read.

Real pieces throughout: a generated dataset (its fingerprint.json written by the data
stage), MLflow runs in a SQLite store started and finished by the stages' own
``start_tracker`` / ``finish`` (tags, metrics.json), and the table built by
``python -m pixmim table``; only the training between start and finish is left out.
"""

import csv
import json
import subprocess

import pytest
import yaml

from pixmim.config import DataConfig, JobConfig, TrackingConfig
from pixmim.report import tables
from pixmim.report.provenance import FINGERPRINT, GIT_COMMIT_TAG, commit_label
from pixmim.stages import data as data_stage
from pixmim.stages.common import finish, start_tracker

# (row label, baseline) -> top-1 of seeds 0 and 1
ROWS = {("MAE", None): [40.0, 42.0], ("PixMIM MAE", "MAE"): [43.5, 44.5]}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A tiny generated dataset, four tracked runs (2 rows x 2 seeds) and table2 from them."""
    tmp = tmp_path_factory.mktemp("trace")
    root = tmp / "data" / "synth"
    assert data_stage.main(["synth", "--out", str(root), "--train-per-class", "1",
                            "--val-per-class", "1", "--short-side", "24"]) == 0
    tracking = TrackingConfig(tracking_uri=f"sqlite:///{tmp / 'mlflow' / 'mlflow.db'}",
                              experiment="trace")
    rows = []
    for i, ((label, base), values) in enumerate(ROWS.items()):
        files = []
        for seed, value in enumerate(values):
            exp = f"exp{i}_s{seed}"
            cfg = JobConfig(experiment=exp, stage="linear_probe", data=DataConfig(root=str(root)),
                            tracking=tracking)
            out = tmp / "runs" / exp / "linear_probe"
            tracker = start_tracker(cfg, out)
            finish(out, {"mlflow_run_id": tracker.run_id, "top1_best": value}, tracker, cfg)
            files.append(str(out / "metrics.json"))
        rows.append({"label": label, "experiment": f"exp{i}", "baseline": base,
                     "cells": {"lin": {"files": files, "key": "top1_best"}}})
    spec = tmp / "table2.spec.yaml"
    spec.write_text(yaml.safe_dump({"table": "table2", "title": "t", "rows": rows}))
    assert tables.main(["--spec", str(spec), "--out", str(tmp / "table2")]) == 0
    return {"tmp": tmp, "root": root, "uri": tracking.tracking_uri}


def follow_cell(built, label: str, col: str) -> list[dict]:
    """The chain behind one CSV cell, one entry per seed: what the CSV says, the MLflow
    run it names (tags, the data root it was given) and the metrics.json it logged."""
    from mlflow.tracking import MlflowClient

    with open(built["tmp"] / "table2.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["method"] == label)
    cell = {k: row[f"{col}_{k}"].split(tables.SEP) for k in tables.PROVENANCE}
    client = MlflowClient(built["uri"])
    chain = []
    for i, run_id in enumerate(cell["mlflow_runs"]):
        run = client.get_run(run_id)
        dst = built["tmp"] / "downloaded" / run_id
        dst.mkdir(parents=True, exist_ok=True)
        with open(client.download_artifacts(run_id, "metrics.json", str(dst))) as f:
            logged = json.load(f)
        chain.append({"csv": {k: v[i] for k, v in cell.items()}, "run": run,
                      "logged": logged, "csv_mean": float(row[f"{col}_ours"])})
    return chain


def test_a_table_cell_leads_to_its_runs_commit_and_data(built):
    chain = follow_cell(built, "PixMIM MAE", "lin")
    assert len(chain) == 2  # one run per seed
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    dataset = json.loads((built["root"] / FINGERPRINT).read_text())["sha256"]
    for link in chain:
        csv_, run, logged = link["csv"], link["run"], link["logged"]
        tags = run.data.tags
        # CSV -> MLflow run: its commit and data fingerprint tags are the CSV's
        assert csv_["git_commits"] == commit_label(tags[GIT_COMMIT_TAG],
                                                   tags["git_dirty"] == "true")
        assert tags[GIT_COMMIT_TAG] == head
        assert csv_["data_fingerprints"] == tags["data_fingerprint"] == dataset
        # ... and the dataset it was given holds that fingerprint
        assert run.data.params["data.root"] == str(built["root"])
        # MLflow run -> its metrics.json (logged artifact), which is the CSV's file
        assert logged["mlflow_run_id"] == run.info.run_id
        assert logged["git_commit"] == tags[GIT_COMMIT_TAG]
        assert logged["data_fingerprint"] == dataset
        with open(csv_["metrics_files"]) as f:
            assert json.load(f) == logged
    values = [link["logged"]["top1_best"] for link in chain]
    assert chain[0]["csv_mean"] == pytest.approx(sum(values) / len(values))
    assert values == ROWS[("PixMIM MAE", "MAE")]


def test_markdown_shows_the_runs_commit_and_data(built):
    md = (built["tmp"] / "table2.md").read_text()
    chain = follow_cell(built, "MAE", "lin")
    section = md.split("## Provenance", 1)[1]
    line = next(x for x in section.splitlines() if x.startswith("| MAE "))
    for link in chain:
        assert link["run"].info.run_id in line
    assert link["csv"]["data_fingerprints"][:12] in line
    assert link["run"].data.tags[GIT_COMMIT_TAG][:12] in line


def test_a_resumed_job_keeps_the_provenance_its_run_started_with(built):
    """A preempted job resumed after its dataset's fingerprint changed: metrics.json and
    the run's tags keep what the run was started with (one run, one provenance)."""
    from mlflow.tracking import MlflowClient

    from pixmim.engine.loop import ResumeState
    from pixmim.report.provenance import write_fingerprint

    root = built["tmp"] / "resumed_data"
    (root / "val").mkdir(parents=True)
    (root / "val" / "a.png").write_bytes(b"1")
    before = write_fingerprint(root)["sha256"]
    cfg = JobConfig(experiment="resumed", stage="linear_probe", data=DataConfig(root=str(root)),
                    tracking=TrackingConfig(tracking_uri=built["uri"], experiment="trace"))
    out = built["tmp"] / "runs" / "resumed"
    tracker = start_tracker(cfg, out)
    ResumeState(out).save({"mlflow_run_id": tracker.run_id})
    tracker.finish("KILLED")
    (root / "val" / "b.png").write_bytes(b"2")
    assert write_fingerprint(root)["sha256"] != before
    resumed = start_tracker(cfg, out)
    assert resumed.run_id == tracker.run_id
    finish(out, {"mlflow_run_id": resumed.run_id}, resumed, cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    tags = MlflowClient(built["uri"]).get_run(tracker.run_id).data.tags
    assert metrics["data_fingerprint"] == tags["data_fingerprint"] == before
    assert metrics["data_fingerprints"] == {str(root): before}
