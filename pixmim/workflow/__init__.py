"""Torch-free helpers the Snakefile calls: validate the config, resolve jobs and tables.

Data flows one way: ``config.yaml`` -> :func:`job_config` (pure) -> the rule writes it to
``results/runs/{exp}/{stage}/config.yaml`` -> ``python -m pixmim <stage>``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from pixmim.config import ConfigError
from pixmim.engine.io import write_text

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
STAGES = ("pretrain", "linear_probe", "finetune", "finetune_1pct", "finetune_10pct",
          "robustness", "shape_bias", "segment_ade20k", "detect_coco", "detect_coco_2x")
# dense stage -> (config section, iteration multiplier): Table 18 is the 2x detection schedule
DENSE = {"segment_ade20k": ("segmentation", 1), "detect_coco": ("detection", 1),
         "detect_coco_2x": ("detection", 2)}
FEW_SHOT = {"finetune_1pct": 0.01, "finetune_10pct": 0.1}  # PixMIM Table 19
# table column -> (stage, key in that stage's metrics.json)
COLUMN_SOURCES = {
    "lin": ("linear_probe", "top1_best"),
    "ft": ("finetune", "top1_best"),
    "in_c": ("robustness", "mce"),
    "in_a": ("robustness", "imagenet_a_top1"),
    "in_r": ("robustness", "imagenet_r_top1"),
    "in_s": ("robustness", "imagenet_sketch_top1"),
    "fs1": ("finetune_1pct", "top1_best"),
    "fs10": ("finetune_10pct", "top1_best"),
    "miou": ("segment_ade20k", "miou"),
    "ap_box": ("detect_coco", "ap_box"),
    "ap_mask": ("detect_coco", "ap_mask"),
    "ap_box_2x": ("detect_coco_2x", "ap_box"),
    "ap_mask_2x": ("detect_coco_2x", "ap_mask"),
}
# the robustness / shape-bias sets, as config keys of data.eval_roots and view folder names
EVAL_SETS = {"imagenet_c": "imagenet-c", "imagenet_a": "imagenet-a", "imagenet_r": "imagenet-r",
             "imagenet_sketch": "imagenet-sketch", "cue_conflict": "cue-conflict"}


def _error_path(err: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in err.absolute_path)
    if err.validator == "additionalProperties":
        allowed = set(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - allowed)
        key = f"{path}.{extra[0]}" if path else extra[0]
        return f"{key}: unknown key (allowed: {', '.join(sorted(allowed))})"
    return f"{path or '<root>'}: {err.message}"


def validate_config(config: dict[str, Any], schema_path: str | Path = SCHEMA) -> None:
    """Validate against the JSON schema and cross-check references; raise ConfigError."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    err = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if err is not None:
        raise ConfigError(f"config key {_error_path(err)}")
    for i, exp in enumerate(config["experiments"]):
        if exp["variant"] not in config["variants"]:
            raise ConfigError(f"config key experiments.{i}.variant: unknown variant "
                              f"{exp['variant']!r} (declared: {sorted(config['variants'])})")
    from pixmim.models import ARCHS

    for i, exp in enumerate(config["experiments"]):
        arch = arch_of(config, exp)
        if arch not in ARCHS[exp["method"]]:
            raise ConfigError(f"config key experiments.{i}: arch {arch!r} is not registered for "
                              f"{exp['method']} (registered: {sorted(ARCHS[exp['method']])})")
    declared = {(e["method"], e["variant"]) for e in config["experiments"]}
    for name, fig in config["figures"].items():
        for j, row in enumerate(fig["rows"]):
            if (row["method"], row["variant"]) not in declared:
                raise ConfigError(f"config key figures.{name}.rows.{j}: {row['method']}/"
                                  f"{row['variant']} is not in experiments")
    for name, table in config["tables"].items():
        labels = {r["label"] for r in table["rows"]}
        for j, row in enumerate(table["rows"]):
            where = f"config key tables.{name}.rows.{j}"
            if (row["method"], row["variant"]) not in declared:
                raise ConfigError(f"{where}: {row['method']}/{row['variant']} is not in experiments")
            if row.get("baseline") and row["baseline"] not in labels:
                raise ConfigError(f"{where}.baseline: no row labelled {row['baseline']!r}")


def arch_of(config: dict[str, Any], exp: dict[str, str]) -> str:
    """An experiment's arch: its own ``arch``, else ``archs[method]``, else ``arch``."""
    return exp.get("arch") or config.get("archs", {}).get(exp["method"]) or config["arch"]


def experiment_id(config: dict[str, Any], method: str, variant: str) -> str:
    """``{method}-{variant}_{arch}_{epochs}e`` (STYLE: experiment ids)."""
    arch = arch_of(config, {"method": method})
    return f"{method}-{variant}_{arch}_{config['pretrain']['epochs']}e"


def experiments(config: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Experiment id -> ``{"method", "variant", "arch"}`` for every declared pretraining run."""
    out = {}
    for e in config["experiments"]:
        arch = arch_of(config, e)
        exp_id = f"{e['method']}-{e['variant']}_{arch}_{config['pretrain']['epochs']}e"
        out[exp_id] = {**e, "arch": arch}
    return out


def data_root(config: dict[str, Any]) -> str:
    data = config["data"]
    return f"{config['results']}/data/synth" if data["source"] == "synth" else data["root"]


def masks_root(config: dict[str, Any]) -> str | None:
    """Foreground masks: the generator's ``masks/`` for synthetic data, else the config key."""
    data = config["data"]
    return f"{data_root(config)}/masks" if data["source"] == "synth" else data.get("masks_root")


def views_root(config: dict[str, Any]) -> str:
    return f"{config['results']}/data/synth_views"


def eval_roots(config: dict[str, Any]) -> dict[str, str | None]:
    """Robustness / shape-bias set roots: generated views, or ``data.eval_roots`` keys."""
    if config["data"]["source"] == "synth":
        return {k: f"{views_root(config)}/{v}" for k, v in EVAL_SETS.items()}
    roots = config["data"].get("eval_roots") or {}
    return {k: roots.get(k) for k in EVAL_SETS}


def scenes_root(config: dict[str, Any]) -> str:
    """The generated ADE20K- and COCO-layout scenes (``ade20k/``, ``coco/`` inside)."""
    return f"{config['results']}/data/scenes"


def dense_root(config: dict[str, Any], stage: str) -> str | None:
    """ADE20K / COCO root of a dense stage: generated scenes, or ``data.ade20k_root`` /
    ``data.coco_root``."""
    task = "ade20k" if stage == "segment_ade20k" else "coco"
    if config["data"]["source"] == "synth":
        return f"{scenes_root(config)}/{task}"
    return config["data"].get(f"{task}_root")


def dense_section(config: dict[str, Any], stage: str, method: str) -> dict[str, Any]:
    """The ``dense`` keys of a job: the task section, its recipe (with the method's own
    overrides, e.g. ConvMAE's Tables 13/15), the 2x schedule for ``detect_coco_2x``."""
    section, mult = DENSE[stage]
    dense = dict(config[section])
    recipe = dict(config["dense_recipes"][section][dense["recipe"]])
    recipe.update(recipe.pop("convmae", {}) if method == "convmae" else {})
    recipe.pop("convmae", None)
    dense.update(recipe)
    dense["iters"] = dense["iters"] * mult
    if "val_interval" in dense:
        dense["val_interval"] = dense["val_interval"] * mult
    dense["root"] = dense_root(config, stage)
    return dense


def _train_section(config: dict[str, Any], stage: str) -> tuple[dict, dict]:
    """(train keys, fine-tune knobs) of a stage; fine-tune recipes override the section."""
    from pixmim.config import FinetuneConfig

    if stage.startswith("finetune"):
        section = {**config["finetune"]}
        recipe = section.pop("recipe")
        section.update(config["finetune_recipes"][recipe])
        knobs = {f.name for f in dataclasses.fields(FinetuneConfig)}
        finetune = {k: v for k, v in section.items() if k in knobs}
        train = {k: v for k, v in section.items() if k not in knobs}
        if stage in FEW_SHOT:
            finetune["fraction"] = FEW_SHOT[stage]
            train.update(config.get("few_shot", {}))
        return train, finetune
    if stage in ("robustness", "shape_bias") or stage in DENSE:
        return {}, {}
    return dict(config[stage]), {}


def run_dir(config: dict[str, Any], exp: str, stage: str) -> str:
    return f"{config['results']}/runs/{exp}/{stage}"


def job_config(config: dict[str, Any], exp: str, stage: str) -> dict[str, Any]:
    """The resolved config of one job (what ``python -m pixmim <stage>`` reads)."""
    exps = experiments(config)
    if exp not in exps:
        raise ConfigError(f"unknown experiment {exp!r}; declared: {sorted(exps)}")
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; known: {STAGES}")
    spec = exps[exp]
    variant = config["variants"][spec["variant"]]
    data = config["data"]
    train, finetune = _train_section(config, stage)
    tables = sorted(n for n, t in config["tables"].items()
                    if any((r["method"], r["variant"]) == (spec["method"], spec["variant"])
                           for r in t["rows"]))
    job = {
        "experiment": exp, "stage": stage, "method": spec["method"],
        "variant_name": spec["variant"], "arch": spec["arch"],
        "mask_ratio": config["mask_ratio"], "norm_pix_loss": config["norm_pix_loss"],
        "variant": {"target": variant["target"], "crop": variant["crop"],
                    "radius": config["lowpass"]["radius"],
                    "lowpass_mode": config["lowpass"]["mode"],
                    "adaptive_range": config["lowpass"].get("adaptive_range", [20.0, 60.0])},
        "data": {"root": data_root(config), "masks_root": masks_root(config),
                 "img_size": data["img_size"], "num_classes": data["num_classes"]},
        "train": {**train, "device": config["device"]},
        "tracking": {"tracking_uri": config["mlflow"]["tracking_uri"],
                     "experiment": config["mlflow"]["experiment"]},
        "tags": {"tables": ",".join(tables)},
    }
    if finetune:
        job["finetune"] = finetune
    if stage != "pretrain":
        job["pretrain_dir"] = run_dir(config, exp, "pretrain")
    if stage in ("robustness", "shape_bias"):
        job["finetune_dir"] = run_dir(config, exp, "finetune")
        job["eval"] = {**eval_roots(config), **config["evaluation"]["loader"]}
    if stage in DENSE:
        job["dense"] = dense_section(config, stage, spec["method"])
    return job


def table_spec(config: dict[str, Any], name: str) -> dict[str, Any]:
    """Rows of one table with, per column, the metrics file and key that hold our value."""
    table = config["tables"][name]
    rows = []
    for row in table["rows"]:
        exp = next(k for k, e in experiments(config).items()
                   if (e["method"], e["variant"]) == (row["method"], row["variant"]))
        cells = {}
        for col in table["columns"]:
            stage, key = COLUMN_SOURCES[col]
            cells[col] = {"file": f"{run_dir(config, exp, stage)}/metrics.json", "key": key}
        rows.append({"label": row["label"], "paper_row": row.get("paper_row", row["label"]),
                     "baseline": row.get("baseline"), "experiment": exp, "cells": cells})
    return {"table": name, "title": table["title"], "note": table.get("note", ""), "rows": rows}


def curve_tables(config: dict[str, Any]) -> list[str]:
    """Tables whose experiments get a loss / linear-probe curves figure (those with ``lin``)."""
    return [n for n, t in config["tables"].items() if "lin" in t["columns"]]


def figure_spec(config: dict[str, Any], name: str) -> dict[str, Any]:
    """Rows of a figure with the metrics file of the stage that feeds it (fig8: shape_bias)."""
    stage = {"fig8": "shape_bias"}[name]
    rows = []
    for row in config["figures"][name]["rows"]:
        exp = next(k for k, e in experiments(config).items()
                   if (e["method"], e["variant"]) == (row["method"], row["variant"]))
        rows.append({"label": row["label"], "experiment": exp,
                     "file": f"{run_dir(config, exp, stage)}/metrics.json"})
    return {"figure": name, "rows": rows}


def table_inputs(config: dict[str, Any], name: str) -> list[str]:
    return sorted({c["file"] for r in table_spec(config, name)["rows"]
                   for c in r["cells"].values()})


def write_yaml(path: str | Path, data: dict[str, Any]) -> None:
    """Atomically write a resolved config / spec as YAML."""
    write_text(path, yaml.safe_dump(data, sort_keys=False))
