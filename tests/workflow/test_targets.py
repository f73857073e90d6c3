"""What a target needs, and what a dry run leaves behind: the specs, job configs and tags
of the requested targets only (in results/.specs/ and results/jobs/), any job's output
path as a target, one line for a path that no job writes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pixmim.config import ConfigError
from pixmim.workflow import (
    experiment_of,
    experiments,
    load_config,
    materialize,
    requested,
    target_jobs,
)
from tests.conftest import ROOT


def snakemake_n(tmp_path: Path, *args: str, configfiles: tuple[str, ...] = (),
                **keys) -> subprocess.CompletedProcess:
    """``snakemake -n ARGS --configfile CONFIGFILES`` with results under ``tmp_path`` and the
    overlay keys ``keys``."""
    over = tmp_path / "over.yaml"
    over.write_text(yaml.safe_dump({"results": str(tmp_path / "results"), **keys}))
    return subprocess.run([sys.executable, "-m", "snakemake", "-n", *args, "--configfile",
                           *configfiles, str(over)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def job_folders(results: Path) -> set[tuple[str, str]]:
    return {(p.parent.parent.name, p.parent.name) for p in results.glob("jobs/*/*/config.yaml")}


def test_a_paper_dry_run_adds_nothing_to_the_tables_folder(tmp_path):
    """The paper's whole DAG planned: nothing under results/tables/ or results/figures/,
    its specs under results/.specs/; then one table: the job folders of its jobs alone."""
    res = snakemake_n(tmp_path, configfiles=("config/paper.yaml",),
                      data={"check_roots": False})
    assert res.returncode == 0, res.stderr[-3000:]
    results = tmp_path / "results"
    assert {p.name for p in results.iterdir()} == {".specs", "jobs"}
    config = load_config(ROOT / "config" / "paper.yaml")
    assert {p.stem for p in (results / ".specs" / "tables").iterdir()} == \
        {t for t in config["targets"] if t in config["tables"]}

    one = tmp_path / "one"
    one.mkdir()
    res = snakemake_n(one, str(one / "results" / "tables" / "table5a.csv"),
                      configfiles=("config/paper.yaml",), data={"check_roots": False})
    assert res.returncode == 0, res.stderr[-3000:]
    config["results"] = str(one / "results")
    assert job_folders(one / "results") == target_jobs(config, "table5a")
    assert [p.name for p in (one / "results" / ".specs" / "tables").iterdir()] == ["table5a.yaml"]
    assert not (one / "results" / "tables").exists()


def test_any_jobs_output_path_is_a_target(tmp_path):
    """targets: [table19] (no linear probe): a probe's metrics.json asked for by its path
    gets its job config (and its pretraining's) and is planned."""
    exp = experiment_of(load_config(), "mae_800")
    path = tmp_path / "results" / "runs" / exp / "linear_probe" / "metrics.json"
    res = snakemake_n(tmp_path, str(path), targets=["table19"])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "rule linear_probe:" in res.stdout and "MissingInputException" not in res.stderr
    assert job_folders(tmp_path / "results") == {(exp, "linear_probe"), (exp, "pretrain")}
    assert not (tmp_path / "results" / ".specs").exists()


def test_a_path_no_job_writes_is_one_line(tmp_path):
    R = tmp_path / "results"
    res = snakemake_n(tmp_path, str(R / "runs" / "nope_s0" / "linear_probe" / "metrics.json"),
                      targets=["table19"])
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if "Error" in ln or "Exception" in ln]
    n = len(experiments(load_config()))
    assert lines == [f"ConfigError: target {R}/runs/nope_s0/linear_probe/metrics.json: "
                     f"no experiment 'nope_s0' in this config (it has {n})"], res.stderr
    assert not (R / "jobs").exists()


@pytest.fixture(scope="module")
def config():
    return {**load_config(), "results": "R"}


def test_requested_reads_each_kind_of_target(config):
    exp = experiment_of(config, "mae_800")
    assert requested(config, [f"R/runs/{exp}/robustness/metrics.json"]).jobs == {
        (exp, "robustness"), (exp, "finetune"), (exp, "pretrain")}
    # its log, benchmark and job config name the same job
    for path in (f"R/logs/{exp}/robustness.log", f"R/benchmarks/{exp}/robustness.tsv",
                 f"R/jobs/{exp}/robustness/config.yaml"):
        assert (exp, "robustness") in requested(config, [path]).jobs, path
    assert requested(config, ["R/tables/table2.md"]).names == {"table2"}
    assert requested(config, ["R/figures/table2_curves.png"]).names == {"table2"}
    fig5 = requested(config, ["R/figures/fig1_frequency_example.png"])
    assert fig5.names == {"fig5"} and {s for _, s in fig5.jobs} == {"frequency", "pretrain"}
    assert requested(config, ["R/figures/fig6_coverage.csv"]).analyses == {"coverage"}
    assert requested(config, ["texture_sweep"]).names == {"texture_sweep"}
    default = requested(config, [])  # rule all
    assert default.names == set(config["targets"])
    assert requested(config, ["everything"]).names > default.names
    # what Snakemake's own rules make, paths outside the results folder: nothing to write
    other = requested(config, ["R/data/synth", "R/mlflow/store.json", "/elsewhere/x",
                               "init_mlflow"])
    assert (other.names, other.jobs, other.analyses) == (set(), set(), set())


@pytest.mark.parametrize("path, line", [
    ("R/runs/e_s0/linear_probe/metrics.json", "no experiment 'e_s0'"),
    ("R/runs/{exp}/linear_prob/metrics.json",
     "no stage 'linear_prob' in this config (did you mean linear_probe?)"),
    ("R/runs/{exp}/linear_probe/top1.json", "stage linear_probe writes metrics.json, not top1"),
    ("R/tables/table99.csv", "no table 'table99'"),
    ("R/figures/fig9.png", "no figure of this config writes fig9.png"),
])
def test_a_target_no_job_writes_names_itself(config, path, line):
    path = path.format(exp=experiment_of(config, "mae_800"))
    with pytest.raises(ConfigError, match=f"^{re.escape(f'target {path}: {line}')}"):
        requested(config, [path])


def test_materialize_writes_the_requested_jobs_only(config, tmp_path):
    config = {**config, "results": str(tmp_path)}
    written = materialize(config, [f"{tmp_path}/tables/table19.csv"])
    jobs = target_jobs(config, "table19")
    assert job_folders(tmp_path) == jobs
    assert {p for p in written if p.endswith("config.yaml")} == {
        f"{tmp_path}/jobs/{e}/{s}/config.yaml" for e, s in jobs}
    assert f"{tmp_path}/.specs/tables/table19.yaml" in written
    assert sorted(p.name for p in tmp_path.iterdir()) == [".specs", "jobs"]
