"""The analyses' figures: band PSNR (Fig. 1 and 5) and object coverage (Fig. 6)."""

import csv
import json

import pytest

from pixmim.report import plots


def test_plot_frequency(tmp_path):
    rows = []
    for label, shift in (("MAE", 0.0), ("PixMIM", 1.0)):
        m = {"n_bands": 4, "band_edges": [0, 8, 16, 24, 32],
             "band_psnr": [20 + shift, 18, 17 - shift, None]}
        (tmp_path / f"{label}.json").write_text(json.dumps(m))
        rows.append((label, tmp_path / f"{label}.json"))
    example = plots.plot_frequency(rows, tmp_path / "e.png", tmp_path / "e.csv",
                                   key="band_psnr", title="one image")
    assert example.is_file()
    png = plots.plot_frequency(rows, tmp_path / "f.png", tmp_path / "f.csv")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with (tmp_path / "f.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 8 and table[4]["model"] == "PixMIM" and table[4]["psnr_db"] == "21.0000"
    assert table[3]["psnr_db"] == "" and table[1]["r_mid"] == "12.0000"


def test_plot_frequency_seeds_control_and_paired_difference(tmp_path):
    """Two seeds per model: mean lines with intervals, the untrained controls, and a panel of
    the paired (same-seed) difference to the first model, in the CSV too."""
    rows = []
    for label, shift in (("MAE", 0.0), ("PixMIM", 1.0)):
        paths = []
        for seed in (0, 1):
            m = {"n_bands": 2, "band_edges": [0, 8, 16],
                 "band_psnr": [20 + shift + seed, 18 - shift],
                 "band_psnr_untrained": [9.0 + seed, 8.0]}
            paths.append(tmp_path / f"{label}{seed}.json")
            paths[-1].write_text(json.dumps(m))
        rows.append((label, paths))
    plots.plot_frequency(rows, tmp_path / "f.png", tmp_path / "f.csv")
    with (tmp_path / "f.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["model"] for r in table] == ["MAE", "MAE", "MAE untrained", "MAE untrained",
                                           "PixMIM", "PixMIM", "PixMIM untrained",
                                           "PixMIM untrained"]
    assert table[0]["psnr_db"] == "20.5000" and table[0]["seeds"] == "2"
    assert float(table[0]["ci95"]) == pytest.approx(12.7062 * 0.5, rel=1e-4)  # t(.975,1)=12.71
    assert (tmp_path / "f.png").stat().st_size > 0


def test_plot_coverage(tmp_path):
    rows = [{"crop": "rrc", "masking": False, "J_mean": 0.65, "J_std": 0.05, "n": 2},
            {"crop": "rrc", "masking": True, "J_mean": 0.15, "J_std": 0.05, "n": 2},
            {"crop": "src", "masking": False, "J_mean": 0.9, "J_std": 0.0, "n": 1}]
    (tmp_path / "c.csv").write_text(plots.to_csv(rows))
    assert (tmp_path / "c.csv").read_text().splitlines()[:2] == [
        "crop,masking,J_mean,J_std,n", "rrc,false,0.650000,0.050000,2"]
    assert plots.read_csv(tmp_path / "c.csv") == rows
    png = plots.plot_coverage(tmp_path / "c.csv", tmp_path / "c.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
