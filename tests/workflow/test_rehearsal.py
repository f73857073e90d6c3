"""The dress rehearsal (config/rehearsal.yaml over config/paper.yaml): it changes nothing but
step caps, batch sizes, device settings, dataset roots and where results go; it runs one
job per job kind and builds every paper table and figure from those."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pixmim import registry
from pixmim import workflow as W
from pixmim.workflow import rehearsal as RH
from pixmim.workflow.specs import target_jobs

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "config" / "paper.yaml"
OVERLAY = ROOT / "config" / "rehearsal.yaml"

# Every key the overlay may change, as a dotted path (fnmatch pattern), with its reason. A
# key of the resolved workflow config or of any resolved job config that differs and is
# not matched here is a departure from the paper's recipe.
ALLOWED = {
    # the switch itself: one representative job per kind, cells read from it
    "rehearsal": "the rehearsal switch",
    "rehearsal_dense_once": "the rehearsal switch (CI: each dense stage once)",
    # where results go
    "results": "results root (results/rehearsal)",
    "mlflow.tracking_uri": "where results go",
    "mlflow.experiment": "where results go",
    "pretrain_dir": "upstream folder under the results root",
    "finetune_dir": "upstream folder under the results root",
    # disk: the weights, one step from initialisation, deleted once read (a CI machine's
    # free disk does not hold all of them)
    "keep_weights": "disk: weights deleted once their readers are done",
    # device settings
    "device": "device (cpu)",
    "train.device": "device (cpu)",
    "threads.*": "device: CPU threads per job",
    "*.num_workers": "device: loader worker processes",
    # bf16 autocast is emulated on a CPU without AVX512-BF16: ViT-B/16 forward + backward
    # at batch 2, 224 px, measured 175 s in bf16 against 11.7 s in fp32 (2-core AMD EPYC)
    "*.precision": "device: numeric precision (bf16 emulated on this CPU)",
    "method_overrides.*.*.num_workers": "device: loader worker processes",
    # the job's layout over processes (the effective batch, checked above, carries the
    # recipe): one process on the CPU
    "*.nodes": "device: the job's layout (one process)",
    "*.gpus": "device: the job's layout (one process)",
    # dataset roots (fixtures in the real layouts)
    "data.root": "dataset root",
    "data.masks_root": "dataset root",
    "data.eval_roots.*": "dataset root",
    "data.pretrain_roots.*": "dataset root",
    "data.ade20k_root": "dataset root",
    "data.coco_root": "dataset root",
    "dense.root": "dataset root",
    "eval.imagenet_*": "dataset root",
    "eval.cue_conflict": "dataset root",
    # batch sizes
    "*.batch_size": "batch size",
    "method_overrides.*.*.batch_size": "batch size (per-method)",
    "dense_recipes.*.*.*.batch_size": "batch size (ConvMAE's detection recipe)",
    # step / iteration caps, the schedule kept
    "*.max_steps": "step cap",
    "*.max_eval_batches": "evaluation batch cap",
    "*.max_batches": "evaluation batch cap",
    # the pretraining monitor's image counts (its k-NN bank and queries, figure rows): caps
    # on what it reads, its schedule (knn_every, recon_every) kept
    "*monitor.knn_bank": "monitor image cap",
    "*monitor.knn_queries": "monitor image cap",
    "*monitor.recon_images": "monitor image cap",
    "*.max_iters": "iteration cap",
    "*.max_eval_images": "evaluation size cap",
    # repetitions of one job (the paper averages two segmentation runs; the averaging is
    # tested in tests/stages): the rehearsal runs the code path once
    "segmentation.runs": "repetition count",
    "dense.runs": "repetition count",
    # evaluation set size: coverage measured on the first N fixture images
    "analysis.coverage.limit": "evaluation size (images read)",
}


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out |= flatten(v, f"{prefix}{k}.")
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: d}


def departures(base: dict[str, Any], over: dict[str, Any], where: str) -> list[str]:
    """Keys that differ between two configs and that ALLOWED does not name."""
    a, b = flatten(base), flatten(over)
    out = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<absent>") != b.get(key, "<absent>") and \
                not any(fnmatch.fnmatchcase(key, p) for p in ALLOWED):
            out.append(f"{where}: {key}: {a.get(key, '<absent>')!r} -> "
                       f"{b.get(key, '<absent>')!r}")
    return out


def all_departures(overlay: dict[str, Any]) -> list[str]:
    paper = W.load_config(PAPER)
    reh = W.merge(paper, overlay)
    W.check_config(reh)
    found = departures(paper, reh, "config")
    exps = W.experiments(paper)
    if W.experiments(reh).keys() != exps.keys():  # other runs: other recipes
        found.append(f"experiments: {sorted(W.experiments(reh).keys() ^ exps.keys())[:4]}")
        return found
    for exp, stage in sorted(RH.paper_jobs(paper)):
        found += departures(W.job_config(paper, exp, stage, exps),
                            W.job_config(reh, exp, stage), f"job {exp}/{stage}")
    return found


def overlay() -> dict[str, Any]:
    return yaml.safe_load(OVERLAY.read_text())


def test_overlay_changes_only_caps_batches_device_roots_and_results() -> None:
    assert all_departures(overlay()) == []


@pytest.mark.parametrize("extra", [
    {"lowpass": {"radius": 30}},  # PixMIM's own knob
    {"pretrain": {"base_lr": 1.0e-3}},  # a new lr
    {"finetune": {"epochs": 1}},  # the schedule, not a cap
    {"detection": {"crop_size": 512}},  # the paper's input size
    {"data": {"img_size": 112}},
])
def test_a_recipe_change_in_the_overlay_is_a_departure(extra: dict[str, Any]) -> None:
    """The check above can fail: each of these recipe changes is reported."""
    assert all_departures(W.merge(overlay(), extra))


def rehearsal_config() -> dict[str, Any]:
    return W.load_config(PAPER, OVERLAY)


def test_one_representative_per_job_kind_on_representative_pretrainings() -> None:
    cfg = rehearsal_config()
    exps = W.experiments(cfg)
    jobs = RH.paper_jobs(cfg)
    reps = RH.representatives(cfg)
    kinds = {RH.job_kind(cfg, e, s, exps) for e, s in jobs}
    assert set(reps) == kinds
    # the kinds the issue names are all there: LSMAE at 448, ViT-S/L, adaptive and
    # high-pass, the crops, Places365, dense at the paper's sizes, robustness and analyses
    stages = {k[0] for k in kinds}
    assert {"pretrain", "linear_probe", "finetune", "finetune_1pct", "finetune_10pct",
            "segment_ade20k", "detect_coco", "robustness", "shape_bias", "frequency"} <= stages
    # Table 18's 2x runs detect_coco's code (its schedule aside): detect_coco's kinds
    assert "detect_coco_2x" not in stages
    pre = {k for k in kinds if k[0] == "pretrain"}
    assert {k[3] for k in pre} == {"pixel", "lowpass", "highpass", "adaptive"}
    assert {k[4] for k in pre} == {"rrc", "src", "cc", "bg", "resize"}
    assert {k[5] for k in pre} == {"default", "places365"}
    assert {k[2] for k in pre} >= {"vit_base_patch16_448", "vit_small_patch16_224",
                                   "vit_large_patch16_224", "convvit_base_224"}
    for (stage, *_), exp in reps.items():
        assert (exp, stage) in {(e, s) for e, s in jobs} or stage != "pretrain"
        for up in W.upstream(cfg, stage):  # every upstream job is its kind's representative
            assert reps[RH.job_kind(cfg, exp, up, exps)] == exp, (exp, stage, up)


# What may differ between two jobs of one kind (pixmim.workflow.rehearsal): who they are,
# how long they run, the low-pass radius (a number of the same filter code) and, for a
# dense job, the method (of one encoder family: the checkpoint the backbone loads).
SAME_KIND = ("experiment", "pretrain_dir", "finetune_dir", "stage", "*.epochs", "*.iters",
             "*.val_interval", "variant.radius")


def test_jobs_of_one_kind_differ_only_in_identity_schedule_and_dense_method() -> None:
    """The folds of the job kinds (detect_coco_2x into detect_coco, MFF's dense jobs into
    MAE's) are checked against the resolved job configs of every paper job."""
    paper = W.load_config(PAPER)
    exps = W.experiments(paper)
    by_kind: dict[tuple, list[tuple[str, str]]] = {}
    for exp, stage in sorted(RH.paper_jobs(paper)):
        by_kind.setdefault(RH.job_kind(paper, exp, stage, exps), []).append((exp, stage))
    found, folded = [], set()
    for kind, members in by_kind.items():
        allowed = SAME_KIND + (("method",) if registry.stage(kind[0]).rule == "dense" else ())
        first = flatten(W.job_config(paper, *members[0], exps))
        for job in members[1:]:
            other = flatten(W.job_config(paper, *job, exps))
            found += [f"{kind}: {members[0]} vs {job}: {k}" for k in set(first) | set(other)
                      if first.get(k) != other.get(k)
                      and not any(fnmatch.fnmatchcase(k, p) for p in allowed)]
            if job[1] != kind[0] or exps[job[0]]["method"] != kind[1]:
                folded.add((job[1], exps[job[0]]["method"]))
    assert found == []
    # the two folds are there (the checks above then ran on them)
    assert ("detect_coco_2x", "mae") in folded
    assert {("segment_ade20k", "mff"), ("detect_coco", "mff")} <= folded


def test_a_stage_override_beyond_the_schedule_is_a_kind_of_its_own() -> None:
    paper = W.load_config(PAPER)
    assert RH.code_stage(paper, "detect_coco_2x") == "detect_coco"
    paper["stage_overrides"]["detect_coco_2x"]["detection"]["crop_size"] = 768
    assert RH.code_stage(paper, "detect_coco_2x") == "detect_coco_2x"


def test_cells_read_representatives_and_tables_say_rehearsal() -> None:
    cfg = rehearsal_config()
    need = set()
    for kind in ("tables", "figures"):
        for name in W.buildable(cfg, kind):
            need |= target_jobs(cfg, name)
    assert need <= RH.rehearsal_jobs(cfg)
    spec = W.table_spec(cfg, "table2")
    assert spec["title"].startswith("[REHEARSAL]") and RH.NOTE in spec["note"]
    assert "rehearsal" not in W.table_spec(W.load_config(PAPER), "table2")["title"].lower()


def test_dense_once_runs_each_dense_stage_once_and_fills_every_table() -> None:
    """CI's rehearsal (rehearsal_dense_once): one job per dense stage, every other kind as
    in the full rehearsal, and every table and figure still built from its jobs."""
    full = rehearsal_config()
    once = {**full, "rehearsal_dense_once": True}
    jobs = RH.rehearsal_jobs(once)
    dense = sorted(s for _, s in jobs if registry.stage(s).rule == "dense")
    assert dense == ["detect_coco", "segment_ade20k"]
    others = {j for j in RH.rehearsal_jobs(full) if registry.stage(j[1]).rule != "dense"}
    assert {j for j in jobs if registry.stage(j[1]).rule != "dense"} == others
    need = set()
    for kind in ("tables", "figures"):
        for name in W.buildable(once, kind):
            need |= target_jobs(once, name)
    assert need <= jobs


def _fixture_data(fixture_roots: Path) -> dict[str, Any]:
    """The overlay's ``data`` roots moved to this session's generated fixtures (the DAG
    build checks the roots the targets read)."""
    data = yaml.safe_load(OVERLAY.read_text())["data"]
    moved = yaml.safe_dump(data).replace("results/rehearsal/fixtures", str(fixture_roots))
    return yaml.safe_load(moved)


# CI's rehearsal: .ci/run's argument as written there (Snakemake parses "True", not "true")
CI_ARGS = re.search(r'make rehearse REHEARSE_ARGS="([^"]*)"',
                    (ROOT / ".ci" / "run").read_text()).group(1).split()


@pytest.mark.parametrize("args", [[], CI_ARGS], ids=["full", "ci"])
def test_dry_run_lists_exactly_the_representatives(tmp_path: Path, fixture_roots: Path,
                                                   args: list[str]) -> None:
    """`snakemake -n` with the overlay (and CI's arguments): the representatives, coverage,
    the tables and figures (and the tracking store), nothing else."""
    cfg = rehearsal_config()
    if "rehearsal_dense_once=True" in args:
        cfg["rehearsal_dense_once"] = True
    where = tmp_path / "where.yaml"
    where.write_text(yaml.safe_dump({"results": str(tmp_path / "r"),
                                     "data": _fixture_data(fixture_roots)}))
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--workflow-profile", "profiles/ci", *args,
         "--configfile", str(PAPER), str(OVERLAY), str(where)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]
    runs = set(re.findall(r"runs/([^/\s,]+)/([^/\s,]+)/metrics\.json", res.stdout))
    assert runs == RH.rehearsal_jobs(cfg)
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", res.stdout, re.M))
    families = {spec.rule for spec in registry.stages().values()}
    n_jobs = sum(int(counts.get(f, 0)) for f in families)
    assert n_jobs == len(RH.rehearsal_jobs(cfg))
    tables = W.buildable(cfg, "tables")
    assert int(counts["make_table"]) == len(tables)
    assert int(counts["coverage"]) == 1
