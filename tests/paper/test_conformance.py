"""Recipe conformance: every paper-scale job of config/paper.yaml resolves to the recipe of
the paper's appendix tables (tests/paper/appendix_b.yaml, each rule citing its table), and
every pretraining to the PixMIM knobs of its catalogue variant (baselines and PixMIM
variants apart: target, crop, radius, filter mode), so a lab can trust the ~18,600
GPU-hours before submitting them. Torch-free and fast.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from pixmim.workflow.catalogue import all_runs, experiments, load_config
from pixmim.workflow.jobs import job_config
from pixmim.workflow.specs import target_jobs

ROOT = Path(__file__).resolve().parents[2]
TABLES = yaml.safe_load((Path(__file__).with_name("appendix_b.yaml")).read_text())
DENSE_IMAGES = {"segment_ade20k": None, "detect_coco": "coco", "detect_coco_2x": "coco"}


def paper_jobs() -> tuple[dict[str, Any], dict[str, Any], list[tuple[str, str]]]:
    config = load_config(ROOT / "config" / "paper.yaml")
    exps = experiments(config)
    jobs: set[tuple[str, str]] = set()
    for target in config["targets"]:
        jobs |= target_jobs(config, target)
    return config, exps, sorted(jobs)


def lookup(job: dict[str, Any], key: str, stage: str) -> Any:
    """A dotted key of a resolved job, or a derived quantity (appendix_b.yaml's header)."""
    if key == "input_size":
        return job["data"]["img_size"]
    if key == "scaled_lr":  # the stages' own rule (pixmim.engine.loop.scaled_lr)
        t = job["train"]
        return t["base_lr"] * t["batch_size"] / 256
    if key == "dense_epochs":
        d = job["dense"]
        return d["iters"] * d["batch_size"] / TABLES["images"][DENSE_IMAGES[stage]]
    node: Any = job
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return ABSENT
        node = node[part]
    return node


ABSENT = "absent"  # appendix_b.yaml's value for a key the job must not have


def same(ours: Any, paper: Any, key: str) -> bool:
    if isinstance(paper, (int, float)) and not isinstance(paper, bool) \
            and isinstance(ours, (int, float)):
        # epochs from iterations: the configs round to whole hundreds of iterations
        tol = 5e-3 if key == "dense_epochs" else 1e-9
        return math.isclose(float(ours), float(paper), rel_tol=tol, abs_tol=1e-12)
    if isinstance(paper, list) and isinstance(ours, (list, tuple)):
        return len(ours) == len(paper) and all(
            same(o, p, key) for o, p in zip(ours, paper, strict=True))
    return ours == paper


def rules_for(stage: str, method: str) -> list[dict[str, Any]]:
    return [r for r in TABLES["rules"] if stage in r["stages"] and method in r["methods"]]


def variants_of(config: dict[str, Any], knobs: dict[str, Any]) -> set[str]:
    """The catalogue variants (config/catalogue.yaml ``variants``) of an experiment's runs."""
    runs = all_runs(config)
    return {runs[n]["variant"] for n in knobs["names"]}


def variant_rules_for(variants: set[str]) -> list[dict[str, Any]]:
    return [r for r in TABLES["variant_rules"] if variants & set(r["variants"])]


def applies(where: dict[str, Any], stage: str, knobs: dict[str, Any]) -> bool:
    """A declaration's ``where`` (stages, methods, archs, variants, catalogue runs; each
    optional)."""
    return (stage in where.get("stages", [stage])
            and knobs["method"] in where.get("methods", [knobs["method"]])
            and knobs["arch"] in where.get("archs", [knobs["arch"]])
            and (not where.get("variants")
                 or bool(set(where["variants"]) & knobs["variants"]))
            and (not where.get("runs") or bool(set(where["runs"]) & set(knobs["names"]))))


def declared(kind: str, stage: str, knobs: dict[str, Any], key: str) -> dict[str, Any] | None:
    return next((d for d in TABLES[kind] if d["key"] == key and applies(d["where"], stage, knobs)),
                None)


def departures_of(config, exps, jobs) -> list[str]:
    """Every (job, key) whose resolved value is not its table's, minus the declared ones;
    plus every declared departure or assumption that no job shows any more."""
    problems, used = [], set()
    for exp, stage in jobs:
        knobs = {**exps[exp], "variants": variants_of(config, exps[exp])}
        if stage in TABLES["no_table"]:
            continue
        rules = rules_for(stage, knobs["method"])
        if stage == "pretrain":  # and the PixMIM knobs of its variant
            rules += variant_rules_for(knobs["variants"])
            if len(rules) != 2:
                problems.append(f"{exp}/{stage}: {len(rules)} appendix and variant rules cover "
                                f"it (variants {sorted(knobs['variants'])}; each pretraining "
                                "needs one of each)")
                continue
        elif len(rules) != 1:
            problems.append(f"{exp}/{stage}: {len(rules)} appendix rules cover it "
                            "(each job needs exactly one)")
            continue
        job = job_config(config, exp, stage, exps)
        for rule in rules:
            for key, paper in rule["expect"].items():
                ours = lookup(job, key, stage)
                dep = declared("departures", stage, knobs, key)
                if same(ours, paper, key):
                    continue
                if dep is not None and same(ours, dep["ours"], key):
                    used.add(("departures", id(dep)))
                    continue
                problems.append(f"{exp}/{stage}: {key} = {ours!r}, {rule['cite']} says "
                                f"{paper!r} (declare it in tests/paper/appendix_b.yaml "
                                "`departures` with its reason, or fix the config)")
        for a in TABLES["assumptions"]:
            if applies(a["where"], stage, knobs):
                if same(lookup(job, a["key"], stage), a["ours"], a["key"]):
                    used.add(("assumptions", id(a)))
                else:
                    problems.append(f"{exp}/{stage}: {a['key']} = {lookup(job, a['key'], stage)!r}"
                                    f", the declared assumption says {a['ours']!r}")
    for kind in ("departures", "assumptions"):
        for d in TABLES[kind]:
            if (kind, id(d)) not in used:
                problems.append(f"{kind}: {d['key']} at {d['where']} matches no job any more")
    return problems


def test_every_paper_scale_job_resolves_to_its_appendix_table():
    config, exps, jobs = paper_jobs()
    assert len(jobs) > 100  # every table and figure of the paper
    problems = departures_of(config, exps, jobs)
    assert not problems, "\n".join(problems[:40])


def test_every_method_and_stage_of_the_paper_is_covered():
    """A job whose stage has a table but no rule for its method would slip through."""
    config, exps, jobs = paper_jobs()
    stages = {s for _, s in jobs} - set(TABLES["no_table"])
    methods = {exps[e]["method"] for e, _ in jobs}
    assert methods == {"mae", "mff", "convmae", "lsmae"}
    uncovered = sorted((s, m) for s in stages for m in methods
                       if any(exps[e]["method"] == m and st == s for e, st in jobs)
                       and len(rules_for(s, m)) != 1)
    assert not uncovered


@pytest.mark.parametrize("key, value, cite", [
    ("pretrain.batch_size", 2048, "Table 8"),           # finding: LSMAE got 4096
    ("linear_probe.batch_size", 4096, "Table 11"),      # finding: ConvMAE got 16384
])
def test_a_dropped_per_method_setting_is_caught(key, value, cite):
    """Break one setting the audit found wrong (drop a per-method override): the check must
    name the job and the table."""
    config, exps, jobs = paper_jobs()
    section, k = key.split(".")
    for over in config["method_overrides"].values():
        if (over.get(section) or {}).get(k) == value:
            del over[section][k]
    problems = departures_of(config, exps, jobs)
    assert any(cite in p and k in p for p in problems), problems[:5]


def test_a_pretraining_at_the_data_size_is_caught(monkeypatch):
    """Finding 1: LSMAE pretrained at data.img_size (224), not its arch's 448."""
    from pixmim.workflow import jobs as J

    config, exps, jobs = paper_jobs()
    monkeypatch.setattr(J, "pretrain_size", lambda c, m, a: c["data"]["img_size"])
    problems = departures_of(config, exps, jobs)
    assert any("lsmae" in p and "input_size = 224" in p and "Table 8" in p for p in problems)


def test_lsmae_detection_runs_50_epochs_and_convmae_25():
    config, exps, jobs = paper_jobs()
    seen = {}
    for exp, stage in jobs:
        if stage == "detect_coco":
            seen[exps[exp]["method"]] = round(lookup(job_config(config, exp, stage, exps),
                                                     "dense_epochs", stage))
    assert seen == {"mae": 100, "mff": 100, "lsmae": 50, "convmae": 25}


def test_every_pretraining_variant_has_its_own_rule():
    """Baselines and PixMIM variants apart: every variant of a paper pretraining is named by
    exactly one variant rule (a variant slipping under another's rule would slip through)."""
    config, exps, jobs = paper_jobs()
    seen = set().union(*(variants_of(config, exps[e]) for e, s in jobs if s == "pretrain"))
    named = [v for r in TABLES["variant_rules"] for v in r["variants"]]
    assert len(named) == len(set(named))
    assert seen == set(named), sorted(seen ^ set(named))


def _set(path: str, value: Any):
    def change(config: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = config
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return change


def _drop_2x(config: dict[str, Any]) -> None:
    del config["stage_overrides"]["detect_coco_2x"]


# Each break of a paper setting (in memory), the key and the table its message must name.
BREAKS = {
    "pixmim crop RRC (catalogue)": (_set("variants.pixmim.crop", "rrc"),
                                   "variant.crop", "Table 7/8"),
    "lowpass radius 30 (paper.yaml)": (_set("lowpass.radius", 30), "variant.radius",
                                       "Table 7/8"),
    "baseline given the low-pass target": (_set("variants.base.target", "lowpass"),
                                           "variant.target", "Baselines"),
    "probe on cached views": (_set("linear_probe.feature_views", 4), "train.feature_views",
                              "Table 10"),
    "Table 18's 2x as Table 14 doubled": (_drop_2x, "dense_epochs", "assumption"),
    "pretraining optimizer LARS": (_set("pretrain.optimizer", "lars"), "train.optimizer",
                                   "Table 7"),
    "fine-tune betas (0.9, 0.95)": (_set("finetune.betas", [0.9, 0.95]), "train.betas",
                                    "Table 9"),
    "ViT-L fine-tune at ViT-B's 100 epochs": (_set("arch_overrides", {}), "train.epochs",
                                              "departures"),
    "detection warm-up 1000": (_set("detection.warmup_iters", 1000), "dense.warmup_iters",
                               "assumption"),
}


@pytest.mark.parametrize("name", BREAKS)
def test_a_broken_paper_setting_is_caught(name):
    change, key, cite = BREAKS[name]
    config, exps, jobs = paper_jobs()
    change(config)
    exps = experiments(config)  # the catalogue's variants make the experiments
    jobs = sorted({(e, s) for e, s in jobs if e in exps}
                  | {(e, s) for t in config["targets"] for e, s in target_jobs(config, t)})
    problems = departures_of(config, exps, jobs)
    assert any(key in p and cite in p for p in problems), problems[:5]
