"""Intervals over seeds (pixmim.report.stats) against hand computations, and tables with
several seeds."""

import json
import math

import pytest

from pixmim.report.stats import estimate, paired
from pixmim.report.tables import build_table, to_markdown


def test_interval_of_a_mean_by_hand():
    # values 1, 2, 3, 4: mean 2.5, s = sqrt(5/3) = 1.290994; t(0.975, 3) = 3.182446
    e = estimate([1.0, 2.0, 3.0, 4.0])
    assert e.mean == 2.5 and e.n == 4
    assert e.half_width == pytest.approx(3.182446 * 1.290994 / 2, rel=1e-5)  # 2.054260
    assert (e.low, e.high) == pytest.approx((2.5 - 2.054260, 2.5 + 2.054260), rel=1e-5)
    assert e.text() == "2.5 ± 2.1"


def test_paired_gain_by_hand():
    # differences 2, 3, 2: mean 7/3, s = sqrt(1/3); t(0.975, 2) = 4.302653
    g = paired([3.0, 5.0, 4.0], [1.0, 2.0, 2.0])
    assert g.mean == pytest.approx(7 / 3)
    assert g.half_width == pytest.approx(4.302653 * math.sqrt(1 / 3) / math.sqrt(3), rel=1e-5)
    assert g.text(sign=True) == "+2.3 ± 1.4"
    # pairing removes what the seed moves in both: unpaired spreads are far wider
    assert g.half_width < estimate([3.0, 5.0, 4.0]).half_width
    with pytest.raises(ValueError, match="differ in number"):
        paired([1.0, 2.0], [1.0])


def test_one_seed_has_no_interval():
    e = estimate([40.0])
    assert math.isnan(e.half_width) and e.text() == "40.0"


def test_table_cells_are_means_with_intervals(tmp_path):
    runs = {"MAE": [40.0, 44.0, 42.0], "PixMIM MAE": [43.0, 46.0, 45.0]}
    rows = []
    for label, vals in runs.items():
        files = []
        for s, v in enumerate(vals):
            f = tmp_path / f"{label.replace(' ', '_')}_s{s}.json"
            f.write_text(json.dumps({"top1_best": v}))
            files.append(str(f))
        rows.append({"label": label, "experiment": label, "baseline": None if label == "MAE"
                     else "MAE", "cells": {"lin": {"files": files, "key": "top1_best",
                                                   "header": "lin (%)"}}})
    spec = {"table": "table2", "title": "t", "seeds": [0, 1, 2], "rows": rows}
    df = build_table(spec).set_index("method")
    assert df.loc["MAE", "lin_ours"] == pytest.approx(42.0)
    assert df.loc["MAE", "lin_ours_ci95"] == pytest.approx(estimate([40, 44, 42]).half_width)
    assert df.loc["PixMIM MAE", "lin_gain_ours"] == pytest.approx(8 / 3)
    assert df.loc["PixMIM MAE", "lin_gain_ours_ci95"] == pytest.approx(
        paired([43, 46, 45], [40, 44, 42]).half_width)
    assert (df["seeds"] == 3).all()
    md = to_markdown(build_table(spec), spec)
    assert "42.0 ± 5.0 (65.6)" in md and "+2.7 ± 1.4 (+1.6)" in md and "3 seeds" in md


def test_validation_sampling_error_by_hand():
    from pixmim.stages.common import binomial_se

    # p = 0.5 on 1,024 images: sqrt(0.25 / 1024) = 1 / 64 -> 1.5625 points; 4x fewer, 2x more
    assert binomial_se(50.0, 1024) == pytest.approx(1.5625)
    assert binomial_se(50.0, 256) == pytest.approx(3.125)
    assert binomial_se(100.0, 10) == 0.0
