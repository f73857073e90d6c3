"""The texture-sweep figure from fabricated probe metrics: the PNG and CSV are written, the
gain is the paired (same-seed) difference, its interval the one of pixmim.report.stats."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pixmim.report import figures
from pixmim.report.stats import estimate, paired
from pixmim.workflow import sweep_spec

# top-1 per (value, role) and seed: the seed moves both runs alike, so the paired interval
# is much narrower than the one of the difference of the means.
TOP1 = {
    0.0: {"baseline": [30.0, 40.0, 50.0], "variant": [34.0, 43.5, 54.5]},
    0.5: {"baseline": [35.0, 45.0, 52.0], "variant": [36.0, 47.0, 52.5]},
    1.0: {"baseline": [41.0, 48.0, 60.0], "variant": [40.0, 48.5, 59.0]},
}


@pytest.fixture
def spec(default_config, tmp_path) -> dict:
    config = {**default_config, "results": str(tmp_path / "results"), "seeds": [0, 1, 2]}
    spec = sweep_spec(config)
    for row in spec["rows"]:
        for role, cell in row["cells"].items():
            for f, v in zip(cell["files"], TOP1[row["value"]][role], strict=True):
                Path(f).parent.mkdir(parents=True, exist_ok=True)
                Path(f).write_text(json.dumps({cell["key"]: v, "top1": v - 1}))
    return spec


def test_texture_sweep_figure_and_csv(spec, tmp_path):
    out = figures.texture_sweep(spec, tmp_path / "fig" / "texture_sweep.png")
    assert out.is_file() and out.stat().st_size > 0
    df = pd.read_csv(out.with_suffix(".csv"))
    assert list(df["texture_class_bound"]) == [0.0, 0.5, 1.0]
    assert list(df["dataset"]) == ["synth_tex0", "synth_tex0.5", "default"]
    for _, row in df.iterrows():
        top1 = TOP1[row["texture_class_bound"]]
        gain = paired(top1["variant"], top1["baseline"])
        assert row["gain"] == pytest.approx(gain.mean, abs=1e-4)
        assert row["gain_ci95"] == pytest.approx(gain.half_width, abs=1e-4)
        assert row["seeds"] == 3
        assert row["baseline_top1"] == pytest.approx(estimate(top1["baseline"]).mean, abs=1e-4)
        assert row["variant_top1"] == pytest.approx(estimate(top1["variant"]).mean, abs=1e-4)
        assert (row["baseline"], row["variant"]) == ("mae_800", "pixmim_mae_800")
    # paired, not the difference of two unpaired means: far narrower here
    first = df.iloc[0]
    unpaired = estimate([v - b for v in TOP1[0.0]["variant"] for b in TOP1[0.0]["baseline"]])
    assert first["gain_ci95"] < unpaired.half_width / 3


def test_texture_sweep_cli_one_seed(spec, tmp_path):
    """The CLI the rule runs; with one seed there is no interval (empty in the CSV)."""
    one = {**spec, "seeds": [0], "rows": [
        {**r, "cells": {k: {**c, "files": c["files"][:1]} for k, c in r["cells"].items()}}
        for r in spec["rows"]]}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(one))
    out = tmp_path / "texture_sweep.png"
    assert figures.main(["texture_sweep", "--spec", str(path), "--out", str(out)]) == 0
    df = pd.read_csv(out.with_suffix(".csv"))
    assert out.is_file() and df["gain_ci95"].isna().all()
    assert df["gain"].tolist() == pytest.approx([4.0, 1.0, -1.0])
