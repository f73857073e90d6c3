"""The measured resource table (benchmarks/results/rehearsal_resources.csv) covers every job
kind of config/paper.yaml, and the SLURM profile's memory requests follow it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pixmim import workflow as W
from pixmim.workflow import rehearsal as RH
from pixmim.workflow import resources as RES

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "config" / "paper.yaml"
OVERLAY = ROOT / "config" / "rehearsal.yaml"
PROFILE = ROOT / "profiles" / "slurm" / "config.yaml"
MARGIN = 1.25  # the stated margin: a request is at least 25% above the extrapolated peak


def rows() -> list[dict[str, str]]:
    return RES.read(RES.TABLE)


def test_every_paper_job_kind_has_a_row() -> None:
    cfg = W.load_config(PAPER, OVERLAY)
    kinds = {"/".join(str(k) for k in kind) for kind in RH.representatives(cfg)}
    table = {r["kind"] for r in rows()}
    assert kinds - table == set(), "job kinds without a measured row"
    for r in rows():  # a measurement, or said plainly that there is none
        if r["rehearsal_max_rss_mb"] != "not measured":
            assert float(r["rehearsal_max_rss_mb"]) > 0 and float(r["rehearsal_s"]) > 0
            assert float(r["peak_mb"]) >= float(r["rehearsal_max_rss_mb"])
        else:
            assert r["request_mb"] == "" and r["peak_mb"] == ""


def test_slurm_requests_cover_the_extrapolated_peak_with_margin() -> None:
    yte = pytest.importorskip("yte")
    with open(PROFILE) as f:
        profile = yte.process_yaml(f, require_use_yte=True)
    res = profile["set-resources"]
    measured = [r for r in rows() if r["peak_mb"]]
    assert measured
    for r in measured:
        assert int(res[r["rule"]]["mem_mb"]) >= float(r["peak_mb"]) * MARGIN, r["kind"]


def test_growth_extrapolates_the_index_to_imagenet() -> None:
    """The index term of a paper pretraining job: per-entry bytes x ImageNet's 1,281,167
    training images in the main process and each of its 10 loader workers (paper.yaml),
    in each of the 8 GPU processes of its node (config/paper.yaml's layout), plus the 50,000
    val images."""
    paper = W.load_config(PAPER)
    exp = "mae-pixel-rrc_vit_base_patch16_224_1600e_s0"
    got = RES.growth(paper, exp, "pretrain", {"index_entry": 100.0})
    assert got["index_mb"] == pytest.approx(100 * (1_281_167 * 8 * 11 + 50_000) / 2**20)
    # decoded float32 batches in flight: 8 processes x 10 workers x 2 x (4096 / 8) x 3x224x224
    assert got["batches_mb"] == pytest.approx(8 * 10 * 2 * 512 * 3 * 224 * 224 * 4 / 2**20)
