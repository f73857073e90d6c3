"""The experiment catalogue: identity by resolved config, targets, paper scale, budget."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pixmim.config import ConfigError
from pixmim.workflow import (
    experiment_of,
    experiments,
    load_config,
    table_spec,
    unavailable,
    validate_config,
)
from pixmim.workflow.budget import budget, jobs_of

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def dry_run(tmp_path, *args: str, configfiles: tuple[str, ...] = (), roots: bool = True) -> str:
    """``snakemake -n ARGS`` with the config files, results under ``tmp_path`` (a dry run
    writes the job configs it plans); ``roots=False``: without the dataset-root check (the
    paper's /datasets roots do not exist here)."""
    results = tmp_path / "results.yaml"
    results.write_text(f"results: {tmp_path / 'results'}\n"
                       + ("" if roots else "data: {check_roots: false}\n"))
    res = subprocess.run([*SNAKEMAKE, "-n", *args, "--configfile", *configfiles, str(results)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout + res.stderr


def job_counts(text: str) -> dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", text, re.M)}


def test_table5_needs_eleven_pretraining_jobs(tmp_path):
    """5a, 5b and 5c name 15 runs; alike resolved configs are one job: 11."""
    tables = [str(tmp_path / "results" / "tables" / f"{t}.csv")
              for t in ("table5a", "table5b", "table5c")]
    counts = job_counts(dry_run(tmp_path, *tables, "--forceall"))
    assert counts["pretrain"] == 11 * len(load_config()["seeds"])
    config = load_config()
    names = [r["run"] for t in ("table5a", "table5b", "table5c")
             for r in config["tables"][t]["rows"]]
    assert len(names) == 15 and len({experiment_of(config, n) for n in names}) == 11


def test_paper_scale_dry_run_lists_every_table(tmp_path):
    config = load_config(ROOT / "config" / "paper.yaml")
    validate_config(config)
    text = dry_run(tmp_path, "--forceall", configfiles=("config/paper.yaml",), roots=False)
    for table in config["tables"]:
        assert f"results/tables/{table}.csv" in text, table
    for fig in ("fig5_frequency", "fig6_coverage", "fig7_epochs", "fig8_shape_bias"):
        assert f"results/figures/{fig}.png" in text
    counts = job_counts(text)
    assert counts["pretrain"] == len(experiments(config)) == 41


def test_identity_is_the_resolved_config(default_config):
    exps = experiments(default_config)
    # mae_300 and rrc_300: same method, knobs, epochs -> one id
    assert experiment_of(default_config, "mae_300") == experiment_of(default_config, "rrc_300")
    # lf40_300 and lf_300 too; pixmim at 300 and 800 epochs are two jobs
    assert experiment_of(default_config, "lf40_300") == experiment_of(default_config, "lf_300")
    assert experiment_of(default_config, "pixmim_mae_300") != \
        experiment_of(default_config, "pixmim_mae_800")
    assert sum(len(e["names"]) for e in exps.values()) > len(exps)


def test_paper_scale_only_tables_say_why(default_config):
    assert "arch_map" in unavailable(default_config, "table16")
    assert "places365" in unavailable(default_config, "table6")
    with pytest.raises(ConfigError, match="table6 cannot be built"):
        table_spec(default_config, "table6")


def test_only_methods_filters_rows(default_config):
    spec = table_spec(default_config, "table2")
    assert [r["label"] for r in spec["rows"]] == ["MAE", "PixMIM MAE"]
    spec = table_spec({**default_config, "only_methods": None}, "table2")
    assert len(spec["rows"]) == 8


def test_budget_counts_done_jobs_zero(default_config, tmp_path):
    config = {**default_config, "results": str(tmp_path)}
    jobs = jobs_of(config, "table2")
    before = budget(config, ["table2"])
    assert before["pending"] == len(jobs) and before["total_gpu_hours"] > 0
    exp = experiment_of(config, "mae_800")
    d = tmp_path / "runs" / exp / "pretrain"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text("{}")
    (d / "checkpoint.pth").write_text("")
    after = budget(config, ["table2"])
    assert after["pending"] == before["pending"] - 1
    assert after["total_gpu_hours"] < before["total_gpu_hours"]


def test_budget_cli_paper_scale():
    res = subprocess.run([sys.executable, "-m", "pixmim", "budget", "--configfile",
                          "config/paper.yaml", "results/tables/table5a.csv", "table5b"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = {ln.split()[0]: ln.split() for ln in res.stdout.splitlines()[1:]}
    assert set(lines) == {"table5a", "table5b", "total"}
    assert float(lines["total"][3]) > 0


def test_seeds_multiply_runs_and_fill_cells(default_config, tmp_path):
    """Each catalogue run is made once per seed; a cell lists every seed's file, paired
    across rows by position; the seed reaches every stage of the chain; the budget counts
    every seed's jobs."""
    from pixmim.workflow import experiments_of, job_config, job_tags

    one = {**default_config, "results": str(tmp_path), "seeds": [0]}
    three = {**one, "seeds": [0, 1, 2]}
    assert len(experiments(three)) == 3 * len(experiments(one))
    ids = experiments_of(three, "pixmim_mae_800")
    assert [i.rsplit("_", 1)[1] for i in ids] == ["s0", "s1", "s2"]
    spec = table_spec(three, "table2")
    base, pix = spec["rows"]
    assert [f.split("/")[-3] for f in pix["cells"]["lin"]["files"]] == ids
    assert [f.split("/")[-3][-2:] for f in base["cells"]["lin"]["files"]] == ["s0", "s1", "s2"]
    for stage in ("pretrain", "linear_probe", "finetune", "frequency"):
        assert job_config(three, ids[2], stage)["train"]["seed"] == 2
    tags = job_tags(three, ids[1])
    assert tags["seed"] == "1" and tags["group"] == ids[1][:-3]
    assert budget(three, ["table2"])["jobs"] == 3 * budget(one, ["table2"])["jobs"]


def test_paper_scale_keeps_the_papers_values_where_the_default_shrinks_them():
    """The CPU default narrows detection (100 proposals, 64 RoIs) and raises the few-shot
    lr; config/paper.yaml must not inherit either (mmdet's Mask R-CNN: 1000 / 512; the
    few-shot fine-tune uses the recipe's base lr, PixMIM Table 9: 1e-3)."""
    from pixmim.workflow.jobs import job_config
    config = load_config(ROOT / "config" / "paper.yaml")
    exps = experiments(config)
    exp = next(e for e, k in exps.items() if k["method"] == "mae")
    dense = job_config(config, exp, "detect_coco", exps)["dense"]
    assert (dense["proposals"], dense["rois_per_image"]) == (1000, 512)
    few = job_config(config, exp, "finetune_10pct", exps)["train"]
    assert few["base_lr"] == pytest.approx(1e-3) and few["batch_size"] == 1024
    default = load_config()
    exp = next(e for e, k in experiments(default).items() if k["method"] == "mae")
    assert job_config(default, exp, "finetune_10pct")["train"]["base_lr"] == pytest.approx(0.4)


def test_budget_costs_lsmae_evaluations_at_the_evaluation_size():
    """LSMAE pretrains at 448 px (costed from its own step at 448), but is fine-tuned at
    data.img_size (224): its fine-tune costs what MAE's does (costed from the long-sequence
    pretraining step, it cost 1.8x MAE's)."""
    from pixmim.workflow.budget import job_hours
    from pixmim.workflow.jobs import pretrain_size

    config = load_config(ROOT / "config" / "paper.yaml")
    exps = experiments(config)
    ids = {exps[e]["method"]: e for e in exps
           if exps[e]["epochs"] == 800 and exps[e]["target"] == "pixel"
           and exps[e]["crop"] == "rrc" and exps[e]["dataset"] == "default"
           and exps[e]["method"] in ("mae", "lsmae") and exps[e]["seed"] == 0}
    assert pretrain_size(config, "lsmae", exps[ids["lsmae"]]["arch"]) == 448
    ft = {m: job_hours(config, exps, e, "finetune")[0] for m, e in ids.items()}
    pre = {m: job_hours(config, exps, e, "pretrain")[0] for m, e in ids.items()}
    assert ft["lsmae"] == pytest.approx(ft["mae"], rel=0.01)
    # its pretraining reads 4x the pixels (measured: 1.8x the time)
    assert pre["lsmae"] > pre["mae"]


def test_config_files_merge_as_snakemake_merges_them(tmp_path):
    """Nested mappings merge key by key; a list or scalar replaces; later files win."""
    base = load_config()
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("pretrain: {epochs: 7}\nseeds: [4, 5]\nmlflow: null\n")
    second.write_text("pretrain: {batch_size: 3}\nseeds: [6]\nmlflow: {experiment: x}\n")
    config = load_config(first, second)
    assert config["pretrain"] == {**base["pretrain"], "epochs": 7, "batch_size": 3}
    assert config["seeds"] == [6] and config["mlflow"] == {"experiment": "x"}
    assert {k: v for k, v in config.items() if k not in ("pretrain", "seeds", "mlflow")} == {
        k: v for k, v in base.items() if k not in ("pretrain", "seeds", "mlflow")}


def test_our_merge_is_snakemakes_update_config():
    """The package's copy of the merge (the core install has no Snakemake) gives what
    Snakemake gives for the same files: the shipped configs and a hand-made edge case."""
    import copy

    import yaml
    from snakemake.utils import update_config

    from pixmim.workflow import BASE_CONFIGS, merge

    layers = [yaml.safe_load(Path(p).read_text()) for p in (*BASE_CONFIGS, "config/paper.yaml")]
    layers.append({"pretrain": {"epochs": 3, "extra": {"a": [1]}}, "seeds": [9], "mlflow": None})
    layers.append({"pretrain": {"extra": {"b": {}}}, "mlflow": {"experiment": "x"}})
    ours: dict = {}
    theirs: dict = {}
    for layer in layers:
        ours = merge(ours, copy.deepcopy(layer))
        update_config(theirs, copy.deepcopy(layer))
    assert ours == theirs


@pytest.mark.parametrize("kind, owner, section, key", [
    ("method_overrides", "mae", "pretrain", "batch_sise"),
    ("arch_overrides", "vit_large_patch16_224", "finetune", "epoch"),
    ("stage_overrides", "detect_coco_2x", "detection", "iter"),
    ("stage_overrides", "detect_coco_3x", "detection", "iters"),
    ("arch_overrides", "vit_huge_patch14_224", "finetune", "epochs"),
])
def test_an_override_of_an_unknown_key_or_owner_names_it(default_config, kind, owner,
                                                         section, key):
    from pixmim.workflow.jobs import job_config

    config = dict(default_config)
    config[kind] = {owner: {section: {key: 1}}}
    exps = experiments(config)
    with pytest.raises(ConfigError, match=rf"{kind}\.{owner}"):
        job_config(config, next(iter(exps)), "pretrain", exps)  # any job


def test_overrides_apply_per_method_then_arch_then_stage(default_config):
    from pixmim.workflow.jobs import section

    config = dict(default_config, method_overrides={"mae": {"finetune": {"epochs": 7}}},
                  arch_overrides={"vit_large_patch16_224": {"finetune": {"epochs": 8}}},
                  stage_overrides={"finetune_1pct": {"finetune": {"epochs": 9}}})
    assert section(config, "finetune", "mae")["epochs"] == 7
    assert section(config, "finetune", "mff", "vit_large_patch16_224")["epochs"] == 8
    assert section(config, "finetune", "mae", "vit_large_patch16_224")["epochs"] == 8
    assert section(config, "finetune", "mae", "vit_large_patch16_224",
                   "finetune_1pct")["epochs"] == 9
    assert section(config, "finetune", "mff")["epochs"] == default_config["finetune"]["epochs"]
