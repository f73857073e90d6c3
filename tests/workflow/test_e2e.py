"""The whole default DAG, end to end, on a tiny overlay of config/config.yaml."""

import json
import math
import re
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT, tiny_overrides
from tests.report.browser import CHROMIUM, NO_CHROMIUM, dom, mlflow_server, render


def snakemake(*args, cwd=ROOT, timeout=2400):
    cmd = [sys.executable, "-m", "snakemake", "--workflow-profile", "profiles/ci", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def write_overlay(tmp_path, **changes):
    overlay = tiny_overrides(tmp_path)
    for key, value in changes.items():
        overlay[key] = value
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(overlay))
    return path


def test_bad_config_key_stops_before_any_job(tmp_path):
    overlay = write_overlay(tmp_path, linear_probe={"epochz": 2})
    res = snakemake("-n", "--configfile", str(overlay))
    assert res.returncode != 0
    assert "linear_probe.epochz: unknown key" in res.stdout + res.stderr
    assert not (tmp_path / "results").exists()


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The default DAG (its targets, on the tiny overlay), run once for this module's tests:
    (its folder, the overlay, Snakemake's result, when it started)."""
    tmp_path = tmp_path_factory.mktemp("default")
    overlay = write_overlay(tmp_path)
    started = time.time()
    return tmp_path, overlay, snakemake("--configfile", str(overlay)), started


@pytest.mark.slow
def test_default_dag_end_to_end(default_run, shared_warm_server, tmp_path_factory):
    tmp_path, overlay, res, started = default_run
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    results = tmp_path / "results"
    if shared_warm_server:  # its jobs forked from the suite's server; it started none itself
        forked = (tmp_path_factory.getbasetemp() / "warm-server.log").read_text()
        assert f"run --config {results}/jobs/" in forked
        assert not (results / "logs" / "warm.log").exists()

    # every cell of every table is a finite number produced by this run
    from pixmim import registry

    for table, columns in (("table2", ["ft", "lin", "ap_box", "ap_mask", "miou"]),
                           ("table4", ["in_c", "in_a", "in_r", "in_s"]),
                           ("table19", ["fs1", "fs10"])):
        df = pd.read_csv(results / "tables" / f"{table}.csv")
        assert list(df["method"]) == ["MAE", "PixMIM MAE"]
        for _, row in df.iterrows():
            for col in columns:
                stage, key = registry.columns()[col].stage, registry.columns()[col].key
                run = row["runs"].split(";")[0]  # the first seed's run
                metrics_file = results / "runs" / run / stage / "metrics.json"
                assert metrics_file.stat().st_mtime >= started
                value = json.loads(metrics_file.read_text())[key]
                assert math.isfinite(row[f"{col}_ours"]), (table, col)
                assert row[f"{col}_ours"] == pytest.approx(value, abs=1e-4)
                assert math.isfinite(row[f"{col}_paper"])
    for fig in ("fig8_shape_bias", "fig5_frequency", "fig1_frequency_example", "fig6_coverage"):
        assert (results / "figures" / f"{fig}.png").stat().st_size > 0, fig
        assert len((results / "figures" / f"{fig}.csv").read_text().splitlines()) > 2, fig
    df = pd.read_csv(results / "tables" / "table2.csv")
    run_ids = {}
    for _, row in df.iterrows():
        run = row["runs"].split(";")[0]
        metrics = json.loads((results / "runs" / run / "linear_probe" / "metrics.json").read_text())
        run_ids[run] = (metrics["pretrain_run_id"], metrics["mlflow_run_id"])
    gain = df.set_index("method").loc["PixMIM MAE", "lin_gain_ours"]
    assert gain == pytest.approx(df["lin_ours"][1] - df["lin_ours"][0], abs=1e-3)
    assert "PixMIM MAE" in (results / "tables" / "table2.md").read_text()

    # MLflow: both pretraining runs with loss curves, probes nested under them
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow' / 'mlflow.db'}")
    for exp, (pre_id, probe_id) in run_ids.items():
        pre, probe = client.get_run(pre_id), client.get_run(probe_id)
        assert pre.info.status == probe.info.status == "FINISHED"
        assert pre.data.tags["experiment"] == exp and pre.data.tags["stage"] == "pretrain"
        assert probe.data.tags["mlflow.parentRunId"] == pre_id
        assert pre.data.params["train.epochs"] == "2"
        curve = client.get_metric_history(pre_id, "train_loss")
        assert sorted(m.step for m in curve) == [1, 2]
        assert all(math.isfinite(m.value) for m in curve)
        assert len(client.get_metric_history(probe_id, "top1")) == 2
        artifacts = {a.path for a in client.list_artifacts(pre_id)}
        assert {"config.resolved.yaml", "metrics.json"} <= artifacts
        used = json.loads((results / "runs" / exp / "pretrain" / "metrics.json").read_text())
        assert used["resources"]["wall_s"] > 0 and used["resources"]["images_per_s"] > 0
        assert pre.data.metrics["resources/wall_s"] == pytest.approx(
            used["resources"]["wall_s"])

    # each table and figure is a run of its own holding its files, with its resources table
    exp_id = client.get_experiment_by_name("pixmim-e2e").experiment_id
    assert client.get_experiment(exp_id).tags["mlflow.experimentKind"] == (
        "custom_model_development")
    for table in ("table2", "table4", "table19"):
        (run,) = client.search_runs([exp_id], f"tags.table = '{table}'")
        assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
            f"{table}{s}" for s in (".md", ".csv", "_resources.md", "_resources.csv")}
        cells = set(run.data.tags["cell_runs"].split(","))
        listed = pd.read_csv(results / "tables" / f"{table}_resources.csv")
        assert cells <= {i for v in listed["mlflow_runs"] for i in v.split(";")}
        assert listed["wall_s_mean"].notna().all(), table
    check_readme_filters(client, exp_id, overlay)

    # dense stages: through mmengine's Runner, nested under the pretraining run, with the
    # generated OpenMMLab config kept; segmentation averages its two runs (seeds 2s, 2s + 1)
    for exp, (pre_id, _) in run_ids.items():
        seg = json.loads((results / "runs" / exp / "segment_ade20k" / "metrics.json").read_text())
        assert seg["seeds"] == [0, 1] and len(seg["miou_per_seed"]) == 2
        assert seg["miou"] == pytest.approx(sum(seg["miou_per_seed"]) / 2)
        det = json.loads((results / "runs" / exp / "detect_coco" / "metrics.json").read_text())
        assert det["iters"] == 4
        for stage, metrics in (("segment_ade20k", seg), ("detect_coco", det)):
            run = client.get_run(metrics["mlflow_run_id"])
            assert run.info.status == "FINISHED"
            assert run.data.tags["mlflow.parentRunId"] == pre_id
            assert client.get_metric_history(run.info.run_id, "seed0/loss")
            assert (results / "runs" / exp / stage / "mm_config_seed0.py").is_file()
            assert not (results / "runs" / exp / stage / "_state").exists()

    # the run is complete: a second invocation has nothing to do
    again = snakemake("-n", "--configfile", str(overlay))
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr

    # the report opens with every table and figure of the run, and their captions
    report = tmp_path / "report.html"
    res = snakemake("--configfile", str(overlay), "--report", str(report))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    html = report.read_text(errors="replace")
    for name in ("table2.csv", "table4.csv", "table19.csv", "fig5_frequency.png",
                 "fig6_coverage.png", "fig8_shape_bias.png"):
        assert name in html, name

    # a table added to the catalogue over finished runs retags them, it reruns nothing
    extra = yaml.safe_load(overlay.read_text())
    extra["tables"] = {"table99": {"title": "t", "columns": ["lin"],
                                   "rows": [{"label": "MAE", "run": "mae_800"}]}}
    overlay2 = tmp_path / "overlay2.yaml"
    overlay2.write_text(yaml.safe_dump(extra))
    targets = [str(results / f"tables/{t}.csv") for t in ("table99", "table2", "table4")]
    res = snakemake("-n", *targets, "--configfile", str(overlay2))  # targets first: the
    # option takes every following word as another config file
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    planned = res.stdout + res.stderr
    for rule in ("pretrain", "linear_probe", "finetune", "dense"):
        assert f"rule {rule}:" not in planned, rule

    # identity is what a job reads: the three ways a config change reaches the DAG
    check_selective_reruns(tmp_path, overlay, results)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_the_defaults_tables_and_figures_in_the_mlflow_ui(default_run, tmp_path):
    """What `make ui` shows of the default's tables and figures, rendered by headless
    Chromium: each table's run page shows the table (its cells as the Markdown file has
    them) and its resources table; each figure's run shows its PNG."""
    from mlflow.tracking import MlflowClient

    root, _, res, _ = default_run
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    results = root / "results"
    with mlflow_server(f"sqlite:///{results / 'mlflow' / 'mlflow.db'}", tmp_path) as url:
        client = MlflowClient(tracking_uri=url)
        exp_id = client.get_experiment_by_name("pixmim-e2e").experiment_id
        for table in ("table2", "table4", "table19"):
            (run,) = client.search_runs([exp_id], f"tags.table = '{table}'")
            md = (results / "tables" / f"{table}.md").read_text()
            title = md.splitlines()[0].removeprefix("# ")
            row = next(line for line in md.splitlines() if line.startswith("| PixMIM MAE"))
            cells = [c.strip() for c in row.strip("|").split("|")]
            resources = (results / "tables" / f"{table}_resources.md").read_text()
            runtime = next(line for line in resources.splitlines()
                           if line.startswith("| PixMIM MAE")).split("|")[4].strip()
            expect = (title, *cells, f"Resources: {title}", runtime)
            text = render(f"{url}/#/experiments/{exp_id}/runs/{run.info.run_id}", tmp_path,
                          expect, tries=5)
            assert all(e in text for e in expect), (table, expect, text[:3000])
            assert "|:--" not in text  # rendered, not raw
        for fig in ("fig5_frequency", "fig6_coverage", "fig8_shape_bias"):
            (run,) = client.search_runs([exp_id], f"tags.figure = '{fig}'")
            page = (f"{url}/#/experiments/{exp_id}/runs/{run.info.run_id}/artifacts/"
                    f"{fig}.png")
            shown = f'<img alt="{fig}.png" src="blob:'  # the fetched PNG, drawn
            html = dom(page, tmp_path, (shown,), tries=5)
            assert shown in html, (fig, html[-3000:])


def readme_filters() -> list[tuple[str, str, dict[str, list[str]]]]:
    """The rows of README's "Comparing runs in MLflow" table: (what, filter, promises), the
    promises a tag -> the values the listed runs show (``...``: and more)."""
    section = (ROOT / "README.md").read_text().split("## Comparing runs in MLflow")[1]
    rows = re.findall(r"^\| (.+?) \| `([^`]+)` \| ([^|`]+) \|$", section.split("\n## ")[0],
                      re.M)
    return [(what, flt, {k.strip(): [v.strip() for v in vs.split(",")]
                         for k, vs in (part.split(":", 1) for part in lists.split(";"))})
            for what, flt, lists in rows]


def compare_families(config) -> dict[tuple, str]:
    """(catalogue names, seed) -> the compare tag of its jobs, without the stage."""
    from pixmim import workflow as W
    from pixmim.config import JobConfig, from_dict
    from pixmim.stages.common import compare_key

    out = {}
    for exp, knobs in W.experiments(config).items():
        job = from_dict(JobConfig, {"experiment": exp, "stage": "pretrain",
                                    "method": knobs["method"], "arch": knobs["arch"]})
        out[(tuple(sorted(knobs["names"])), knobs["seed"])] = compare_key(job).split("/")[0]
    return out


def check_readme_filters(client, exp_id, overlay):
    """Each filter of README's table, on the finished store, lists the runs it promises; a
    compare tag of the default (``..._25e``) is read as the tiny overlay's (``..._2e``)."""
    from pixmim import workflow as W

    default, tiny = compare_families(W.load_config()), compare_families(W.load_config(overlay))
    rename = {default[k]: tiny[k] for k in tiny if k in default}
    rows = readme_filters()
    assert len(rows) >= 6, rows
    for what, flt, promises in rows:
        for old, new in rename.items():
            flt = flt.replace(f"'{old}/", f"'{new}/")
        runs = client.search_runs([exp_id], flt, max_results=1000)
        assert runs, (what, flt)
        for tag, values in promises.items():
            found = {r.data.tags.get(tag) for r in runs}
            want = set(values) - {"..."}
            assert want <= found and ("..." in values or found == want), (what, tag, found)


def planned(text: str) -> dict[str, list[str]]:
    """rule -> the jobs' output folders of a dry run (``rule X:`` ... ``output: ...``)."""
    out: dict[str, list[str]] = {}
    rule = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(("rule ", "localrule ")):
            rule = line.split()[1].rstrip(":")
        elif line.startswith("output:") and rule:
            out.setdefault(rule, []).append(line.split(":", 1)[1].split(",")[0].strip())
    return out


def dry_run(overlay, *extra, cwd=ROOT):
    files = [str(overlay)] + [str(e) for e in extra]
    res = snakemake("-n", "--configfile", *files, cwd=cwd)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return planned(res.stdout + res.stderr)


def check_selective_reruns(tmp_path, overlay, results):
    """On the finished default: (1) a low-pass radius change plans no pretraining of a
    pixel-target run, only the new PixMIM run and what follows it; (2) a linear-probe key
    plans the probes, no pretraining; (3) without .snakemake/ metadata (a copy of the
    checkout over the same results, file times kept) both plan the same; (4) going back to
    the finished config after those previews reruns nothing."""
    import shutil

    radius = tmp_path / "radius30.yaml"
    radius.write_text(yaml.safe_dump({"lowpass": {"radius": 30}}))
    probe = tmp_path / "probe.yaml"
    probe.write_text(yaml.safe_dump({"linear_probe": {"epochs": 3}}))
    # (3) first, before the dry runs below rewrite job configs and specs: a copy of the
    # checkout without .snakemake/, over the same results (the config names them)
    clone = tmp_path / "clone"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (clone / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, clone / f)
    clone_overlay = overlay
    assert not (clone / ".snakemake").exists()
    assert not dry_run(clone_overlay, cwd=clone)  # nothing to do there either
    jobs = dry_run(clone_overlay, radius, cwd=clone)
    pre = jobs.get("pretrain", [])
    assert pre and all("mae-lowpass30-src" in p for p in pre), pre
    assert any("table2" in p for p in jobs["make_table"])
    jobs = dry_run(clone_overlay, probe, cwd=clone)
    assert "pretrain" not in jobs and len(jobs["linear_probe"]) == 2, jobs

    # (1) and (2) on the original, with its .snakemake/ metadata
    jobs = dry_run(overlay, radius)
    pre = jobs.get("pretrain", [])
    assert pre and all("mae-lowpass30-src" in p for p in pre), pre
    assert not any("pixel" in p for p in pre)
    jobs = dry_run(overlay, probe)
    assert "pretrain" not in jobs and len(jobs["linear_probe"]) == 2, jobs
    # (4) the previews rewrote job configs and specs; back to the finished config, no job
    # of a run reruns (a table spec rewritten by a preview rebuilds its table only)
    jobs = dry_run(overlay)
    assert not set(jobs) & {"pretrain", "linear_probe", "finetune", "dense", "evaluate"}, jobs


@pytest.mark.slow
def test_weights_are_temporary_exactly_where_not_kept(default_run):
    """keep_weights: false (the rehearsal's) makes every weights file of the DAG, and
    nothing else, a temp() output Snakemake deletes once its readers are done: asked on the
    finished default run, `--delete-temp-output -n` would delete each checkpoint.pth and
    model.pth it wrote; with the default (true) nothing."""
    root, overlay, res, _ = default_run
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    weights = {str(p) for p in (root / "results" / "runs").rglob("*.pth")}
    assert {p.rsplit("/", 1)[1] for p in weights} == {"checkpoint.pth", "model.pth"}

    def would_delete(*config):
        out = snakemake("--delete-temp-output", "-n", *config, "--configfile", str(overlay))
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        return set(re.findall(r"^Would delete (\S+)$", out.stdout + out.stderr, re.M))

    assert would_delete() == set()
    assert would_delete("--config", "keep_weights=False") == weights
