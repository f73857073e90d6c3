"""A figure is one declaration: a toy figure declared only in a test config (its drawing
function in tests/plugins/toy_figure.py) builds through the DAG with no other edit."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest
import yaml

from pixmim.config import ConfigError
from pixmim.workflow import (
    experiments_of,
    figure_inputs,
    figure_spec,
    load_config,
    target_jobs,
    validate_config,
)
from tests.conftest import ROOT, tiny_overrides

DRAW = "tests.plugins.toy_figure:draw"


def toy(**decl) -> dict:
    """A toy figure's declaration: the tracking store (another rule's file) as its input."""
    return {"rows": [], "inputs": ["mlflow/store.json"], "draw": DRAW,
            "files": ["figtoy.txt", "figtoy.csv"], **decl}


def config_with(tmp_path, **figure) -> dict:
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump({**tiny_overrides(tmp_path),
                                    "figures": {"figtoy": toy(**figure)}}))
    return load_config(path)


def test_a_toy_figure_reads_what_it_declares(tmp_path):
    config = config_with(tmp_path, rows=[{"label": "MAE", "run": "mae_800"}], stage="pretrain")
    validate_config(config)
    R = config["results"]
    exps = experiments_of(config, "mae_800")
    spec = figure_spec(config, "figtoy")
    assert spec["rows"][0]["files"] == [f"{R}/runs/{e}/pretrain/metrics.json" for e in exps]
    assert spec["inputs"] == [f"{R}/mlflow/store.json"]
    assert figure_inputs(config, "figtoy") == sorted(
        [f"{R}/mlflow/store.json"] + spec["rows"][0]["files"])
    assert target_jobs(config, "figtoy") == {(e, "pretrain") for e in exps}


@pytest.mark.parametrize("decl, line", [
    ({"stage": "pretrian"}, "figures.figtoy.stage: unknown stage 'pretrian'"),
    ({"draw": "tests.plugins.no_such:draw"}, "figures.figtoy.draw: no module "
                                             "'tests.plugins.no_such'"),
    ({"draw": "draw"}, "figures.figtoy.draw: 'draw' does not match"),
    ({"captions": {"figtoy.png": "fig5.rst"}}, "figures.figtoy.captions: 'figtoy.png' is not "
                                              "one of its files"),
])
def test_a_bad_figure_declaration_is_one_line(tmp_path, decl, line):
    with pytest.raises(ConfigError, match=line):
        validate_config(config_with(tmp_path, **decl))


def test_a_toy_figure_builds_through_the_dag(tmp_path):
    """Declared in the overlay only (and made the default target): Snakemake runs the
    rule that writes its input, then its drawing function through the figure rule."""
    over = tmp_path / "overlay.yaml"
    over.write_text(yaml.safe_dump({**tiny_overrides(tmp_path), "targets": ["figtoy"],
                                    "figures": {"figtoy": toy()}}))
    res = subprocess.run([sys.executable, "-m", "snakemake", "--workflow-profile",
                          "profiles/ci", "--configfile", str(over)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "rule plot_figtoy:" in res.stdout + res.stderr
    figures = tmp_path / "results" / "figures"
    store = tmp_path / "results" / "mlflow" / "store.json"
    assert (figures / "figtoy.txt").read_text() == "figtoy: 1 file(s)\n"
    rows = list(csv.DictReader((figures / "figtoy.csv").open()))
    assert rows == [{"label": "input", "file": str(store), "bytes": str(store.stat().st_size)}]


def test_the_package_never_names_the_toy_figure():
    for folder in ("pixmim", "workflow", "config"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in (".py", ".smk", ".yaml", ".rst"):
                text = path.read_text()
                assert "figtoy" not in text and "toy_figure" not in text, path
