"""Facts the README states that the code decides: each is read from both and compared, so
the README cannot drift from the config, the job ids, the MLflow tags or the budget."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pixmim import workflow as W
from pixmim.config import JobConfig, from_dict
from pixmim.stages.common import compare_key
from pixmim.workflow.budget import budget

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PAPER = ROOT / "config" / "paper.yaml"


def test_the_job_ids_it_names_are_jobs_of_the_default() -> None:
    exps = W.experiments(W.load_config())
    ids = {i for i in re.findall(r"`((?:mae|mff|convmae|lsmae)-[\w.-]+_\d+e_s\d+)`", README)
           if "..." not in i}  # an elided id ("mae-pixel-rrc_..._25e_s0") is an example
    assert ids, "the README names no job id"
    assert ids <= set(exps), sorted(ids - set(exps))


def test_the_schedules_row_is_the_defaults() -> None:
    row = re.search(r"^\| epochs 300 / 800 / 1600 \| ([\d /]+) \(`schedules`\)", README, re.M)
    assert row, "no schedules row"
    ours = [int(x) for x in row.group(1).split("/")]
    assert ours == [W.load_config()["schedules"][e] for e in (300, 800, 1600)]


def test_the_compare_filters_match_the_runs_tags() -> None:
    """Each `tags.compare = '...'` filter of "Comparing runs in MLflow" is the compare tag
    of a baseline job and of its PixMIM variant of the default (so it lists both)."""
    cfg = W.load_config()
    exps = W.experiments(cfg)
    keys: dict[str, set[str]] = {}
    for exp, knobs in exps.items():
        for stage in ("pretrain", "linear_probe"):
            job = from_dict(JobConfig, {"experiment": exp, "stage": stage,
                                        "method": knobs["method"], "arch": knobs["arch"]})
            keys.setdefault(compare_key(job), set()).add(knobs["target"])
    filters = re.findall(r"tags\.compare = '([^']+)'", README)
    assert len(filters) >= 2
    for f in filters:
        assert f in keys, f"{f!r} is no run's compare tag"
        assert {"pixel", "lowpass"} <= keys[f], (f, keys[f])


def test_the_paper_budget_it_quotes_is_the_budgets(tmp_path: Path) -> None:
    """"Table 5a-c together N GPU-hours, the whole paper about M" (to 1%)."""
    cfg = W.load_config(PAPER)
    cfg["results"] = str(tmp_path)  # nothing done: every job counted
    quoted = re.search(r"Table 5a-c together ([\d,]+) GPU-hours, the whole\s+paper about "
                       r"([\d,]+)", README)
    assert quoted, "no paper budget in the README"
    t5, whole = (float(q.replace(",", "")) for q in quoted.groups())
    assert t5 == pytest.approx(budget(cfg, ["table5a", "table5b", "table5c"])
                               ["total_gpu_hours"], rel=0.01)
    assert whole == pytest.approx(budget(cfg, list(cfg["targets"]))["total_gpu_hours"],
                                  rel=0.01)
