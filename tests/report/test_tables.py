"""Table assembly from metrics.json files (pixmim.report.tables)."""

import json
import math

import pytest

from pixmim.report.tables import build_table, main, paper_values


def _spec(tmp_path, values):
    rows = []
    for i, (label, value) in enumerate(values.items()):
        f = tmp_path / f"m{i}.json"
        f.write_text(json.dumps({"top1_best": value}))
        rows.append({"label": label, "experiment": f"exp{i}", "baseline": None if i == 0 else "MAE",
                     "cells": {"lin": {"file": str(f), "key": "top1_best"}}})
    return {"table": "table2", "title": "t", "rows": rows}


def test_paper_values_hold_table2():
    t2 = paper_values()["table2"]
    assert t2["MAE"]["lin"] == 65.6 and t2["PixMIM MAE"]["lin"] == 67.2  # PixMIM Table 2


def test_build_table_ours_beside_paper_with_gains(tmp_path):
    df = build_table(_spec(tmp_path, {"MAE": 40.0, "PixMIM MAE": 43.5}))
    row = df.set_index("method").loc["PixMIM MAE"]
    assert row["lin_ours"] == 43.5 and row["lin_paper"] == 67.2
    assert row["lin_gain_ours"] == pytest.approx(3.5)
    assert row["lin_gain_paper"] == pytest.approx(1.6)
    assert row["lin_ours_minus_paper"] == pytest.approx(43.5 - 67.2)
    assert math.isnan(df.set_index("method").loc["MAE", "lin_gain_ours"])


def test_main_writes_csv_and_markdown(tmp_path):
    import yaml

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(_spec(tmp_path, {"MAE": 40.0, "PixMIM MAE": 41.0})))
    assert main(["--spec", str(spec), "--out", str(tmp_path / "table2")]) == 0
    md = (tmp_path / "table2.md").read_text()
    assert "41.0 (67.2)" in md and "+1.0 (+1.6)" in md
    assert (tmp_path / "table2.csv").read_text().startswith("method,")


def test_missing_or_non_finite_values_are_errors(tmp_path):
    spec = _spec(tmp_path, {"MAE": 40.0})
    spec["rows"][0]["cells"]["lin"]["key"] = "top1"
    with pytest.raises(KeyError, match="no key 'top1'"):
        build_table(spec)
    (tmp_path / "m0.json").write_text('{"top1_best": NaN}')
    spec["rows"][0]["cells"]["lin"]["key"] = "top1_best"
    with pytest.raises(ValueError, match="not finite"):
        build_table(spec)


def test_chance_level_written_by_the_runs_is_in_the_note(tmp_path):
    import yaml

    spec = _spec(tmp_path, {"MAE": 40.0, "PixMIM MAE": 41.0})
    for i in range(2):  # the stages write chance_<metric> beside top1_best
        f = tmp_path / f"m{i}.json"
        f.write_text(json.dumps({**json.loads(f.read_text()), "chance_top1": 6.25,
                                 "sampling_se_top1": 1.5 + i / 10}))
    for row in spec["rows"]:
        row["cells"]["lin"]["header"] = "lin (%)"
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    main(["--spec", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "t")])
    md = (tmp_path / "t.md").read_text()
    assert "Chance level: lin (%) 6.2." in md
    assert "(SE, at most): lin (%) 1.6." in md
    assert build_table(spec)["lin_chance"].tolist() == [6.25, 6.25]


def test_no_chance_level_when_the_runs_wrote_none(tmp_path):
    import yaml

    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(_spec(tmp_path, {"MAE": 40.0})))
    main(["--spec", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "t")])
    assert "Chance level" not in (tmp_path / "t.md").read_text()


def test_rows_on_a_released_checkpoint_are_named_in_the_note(tmp_path):
    """A row whose run is a released checkpoint (config key checkpoints): the table's spec
    says so, and the note names the row, the checkpoint and its source."""
    from pathlib import Path

    from pixmim.report.tables import to_markdown
    from pixmim.workflow.catalogue import load_config
    from pixmim.workflow.specs import table_spec

    root = Path(__file__).resolve().parents[2]
    over = tmp_path / "over.yaml"
    over.write_text(json.dumps({"results": str(tmp_path / "results"), "tables": {"table2": {
        "rows": [{"label": "MAE", "run": "mmpretrain_mae_vit_base_800e"},
                 {"label": "PixMIM MAE", "run": "pixmim_mae_800", "baseline": "MAE"}]}}}))
    config = load_config(root / "config" / "paper.yaml", root / "config" / "released.yaml", over)
    spec = table_spec(config, "table2")
    assert spec["rows"][0]["released"]["name"] == "mmpretrain_mae_vit_base_800e"
    assert "released" not in spec["rows"][1]
    for i, row in enumerate(spec["rows"]):  # values written here, one per column
        for j, cell in enumerate(row["cells"].values()):
            f = tmp_path / f"r{i}c{j}.json"
            f.write_text(json.dumps({cell["key"]: 50.0 + i}))
            cell["files"] = [str(f)]
    md = to_markdown(build_table(spec), spec)
    source = config["checkpoints"]["mmpretrain_mae_vit_base_800e"]["source"]
    assert (f"Rows from released checkpoints, fetched and evaluated here, not pretrained here: "
            f"MAE: mmpretrain_mae_vit_base_800e ({source}).") in md
    assert "PixMIM MAE: " not in md
