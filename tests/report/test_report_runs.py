"""Tables and figures as MLflow runs of their own, and the resources table beside each table
(pixmim.report.tables, pixmim.report.figures, pixmim.engine.tracking.log_report)."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pixmim.report import figures, tables

RUN_IDS = {"base": ["a" * 32, "b" * 32], "pix": ["c" * 32, "d" * 32]}


def _results(tmp_path, with_runs: bool = True):
    """A results folder in the workflow's layout: per experiment and seed a pretraining and
    a linear probe with their resources, checkpoints and logs; returns the table spec."""
    results = tmp_path / "results"
    rows = []
    for label, key in (("MAE", "base"), ("PixMIM MAE", "pix")):
        files = []
        for seed in (0, 1):
            exp = f"mae-{key}_vit_2e_s{seed}"
            for stage, wall, rss in (("pretrain", 3600.0 * (seed + 1), 900.0 + seed),
                                     ("linear_probe", 60.0 * (seed + 1), 500.0)):
                run = results / "runs" / exp / stage
                run.mkdir(parents=True)
                used = {"wall_s": wall, "peak_host_mem_mb": rss, "gpus": 2,
                        "gpu_hours": 2 * wall / 3600, "images_per_s": 100.0 * (seed + 1)}
                if stage == "linear_probe":
                    del used["images_per_s"]  # (a stage that reports none)
                run_id = RUN_IDS[key][seed] if with_runs and stage == "linear_probe" else ""
                (run / "metrics.json").write_text(json.dumps(
                    {"top1_best": 40.0 + seed + (key == "pix"), "resources": used,
                     "mlflow_run_id": run_id}))
                name = "checkpoint.pth" if stage == "pretrain" else "head.pth"
                (run / name).write_bytes(b"\0" * (2**20 * (seed + 1)))
                log = results / "logs" / exp / f"{stage}.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                log.write_text("ok\n")
            files.append(str(results / "runs" / exp / "linear_probe" / "metrics.json"))
        rows.append({"label": label, "experiment": f"mae-{key}", "baseline": None
                     if key == "base" else "MAE",
                     "cells": {"lin": {"files": files, "key": "top1_best"}}})
    return {"table": "table2", "title": "Table 2", "rows": rows}


def test_resources_table_per_row_and_stage(tmp_path):
    spec = _results(tmp_path)
    df = tables.resources_table(spec).set_index(["method", "stage"])
    assert list(df.index) == [("MAE", "pretrain"), ("MAE", "linear_probe"),
                              ("PixMIM MAE", "pretrain"), ("PixMIM MAE", "linear_probe")]
    pre = df.loc[("MAE", "pretrain")]
    assert pre["seeds"] == 2
    assert pre["wall_s_mean"] == pytest.approx(5400.0)  # mean of 1 h and 2 h
    assert pre["gpu_hours_total"] == pytest.approx(6.0)  # 2 GPUs x (1 h + 2 h)
    assert pre["peak_host_mem_mb"] == 901.0  # the larger of the seeds'
    assert pd.isna(pre["peak_gpu_mem_mb"])  # off GPU: none recorded
    assert pre["images_per_s_mean"] == pytest.approx(150.0)
    results = tmp_path / "results"
    assert pre["checkpoints"].split(";") == [
        str(results / "runs" / f"mae-base_vit_2e_s{s}" / "pretrain" / "checkpoint.pth")
        for s in (0, 1)]
    assert pre["checkpoint_mb"] == "1.0;2.0"
    assert pre["logs"].split(";") == [
        str(results / "logs" / f"mae-base_vit_2e_s{s}" / "pretrain.log") for s in (0, 1)]
    probe = df.loc[("PixMIM MAE", "linear_probe")]
    assert probe["mlflow_runs"] == ";".join(RUN_IDS["pix"])
    assert pd.isna(probe["images_per_s_mean"])
    md = tables.resources_markdown(tables.resources_table(spec), spec)
    line = next(r for r in md.splitlines() if r.startswith("| MAE ") and "| pretrain " in r)
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:8] == ["MAE", "pretrain", "2", "1:30:00", "6.000", "901", "-", "150.0"]
    assert cells[9] == "mae-base_vit_2e_s0/pretrain.log, mae-base_vit_2e_s1/pretrain.log"
    assert f"[{RUN_IDS['pix'][1][:8]}]({tables.UI_URL}/#/runs/{RUN_IDS['pix'][1]})" in md
    assert "checkpoint.pth (2.0 MB)" in md


def test_main_logs_the_table_as_one_run_reused_when_rebuilt(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec_data = _results(tmp_path, with_runs=False)
    # the cells' runs: real runs of the store, which get a link back
    from pixmim.engine.tracking import ensure_store

    client = MlflowClient(tracking_uri=uri)
    exp_id = ensure_store(uri, "t")
    cells = []
    for row in spec_data["rows"]:
        for f in row["cells"]["lin"]["files"]:
            run_id = client.create_run(exp_id, run_name=f).info.run_id
            m = json.loads(Path(f).read_text())
            Path(f).write_text(json.dumps({**m, "mlflow_run_id": run_id}))
            cells.append(run_id)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(spec_data))
    out = tmp_path / "tables" / "table2"
    args = ["--spec", str(spec), "--out", str(out), "--tracking-uri", uri, "--experiment", "t"]
    assert tables.main(args) == 0
    for f in ("table2.md", "table2.csv", "table2_resources.md", "table2_resources.csv"):
        assert (out.parent / f).stat().st_size > 0, f
    (run,) = client.search_runs([exp_id], "tags.kind = 'table'")
    assert run.info.run_name == "table2" and run.data.tags["table"] == "table2"
    assert run.info.status == "FINISHED"
    assert run.data.tags["cell_runs"].split(",") == cells
    note = run.data.tags["mlflow.note.content"]  # the table, then its resources, on its page
    assert note.index("| PixMIM MAE ") < note.index("## Resources: Table 2")
    assert re.search(r"^\| MAE +\| pretrain +\| 2 +\| 1:30:00 ", note, re.M), note
    assert "## Provenance" not in note and "`table2.md` in the artifacts" in note
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert arts == {"table2.md", "table2.csv", "table2_resources.md", "table2_resources.csv"}
    assert all(client.get_run(c).data.tags["table_run.table2"] == run.info.run_id
               for c in cells)
    # rebuilt with another value: the same run, its Markdown replaced
    first = (out.parent / "table2.md").read_text()
    f = spec_data["rows"][1]["cells"]["lin"]["files"][0]
    Path(f).write_text(json.dumps({**json.loads(Path(f).read_text()), "top1_best": 77.25}))
    assert tables.main(args) == 0
    (again,) = client.search_runs([exp_id], "tags.kind = 'table'")
    assert again.info.run_id == run.info.run_id
    local = client.download_artifacts(run.info.run_id, "table2.md", str(tmp_path / "dl"))
    assert Path(local).read_text() == (out.parent / "table2.md").read_text() != first


def test_a_store_that_fails_never_fails_the_build(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(_results(tmp_path)))
    blocker = tmp_path / "file"  # the store's folder cannot be made under a file
    blocker.write_text("")
    out = tmp_path / "table2"
    assert tables.main(["--spec", str(spec), "--out", str(out), "--tracking-uri",
                        f"sqlite:///{blocker / 'sub' / 'mlflow.db'}", "--experiment", "t"]) == 0
    assert "table table2 not logged to MLflow" in capsys.readouterr().err
    assert (tmp_path / "table2_resources.md").is_file()


def test_a_figure_is_logged_with_its_files(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**_results(tmp_path), "title": "Curves"}))

    def draw(spec, out):  # a figure's PNG and CSV
        out.write_bytes(b"png")
        out.with_suffix(".csv").write_text("a\n1\n")

    monkeypatch.setitem(figures.FIGURES, "toy", draw)
    out = tmp_path / "fig9_toy.png"
    args = ["toy", "--spec", str(spec), "--out", str(out), "--tracking-uri", uri,
            "--experiment", "t"]
    assert figures.main(args) == 0
    assert figures.main(args) == 0  # rebuilt: no second run
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.get_experiment_by_name("t").experiment_id
    (run,) = client.search_runs([exp_id], "tags.kind = 'figure'")
    assert run.data.tags["figure"] == "fig9_toy" and run.info.run_name == "fig9_toy"
    assert run.data.tags["cell_runs"].split(",") == RUN_IDS["base"] + RUN_IDS["pix"]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"fig9_toy.png",
                                                                          "fig9_toy.csv"}


def test_a_description_keeps_whole_sections_only():
    from pixmim.engine.tracking import SECTION_LEFT_OUT, fit_sections

    assert fit_sections("abc", 100) == "abc"
    assert fit_sections(["ab", "cd", "ef"], 100) == "abcdef"
    limit = 4 + len(SECTION_LEFT_OUT)  # room for "ab" + "cd" and the line, not "efg"
    assert fit_sections(["ab", "efg", "cd"], limit) == "abcd" + SECTION_LEFT_OUT
    assert fit_sections(["x" * 50], 20) == SECTION_LEFT_OUT[:20]
