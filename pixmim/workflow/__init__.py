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

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
# What the Snakefile loads before any --configfile: the catalogue, then the embedded default.
BASE_CONFIGS = (ROOT / "config" / "catalogue.yaml", ROOT / "config" / "config.yaml")
STAGES = ("pretrain", "linear_probe", "finetune", "finetune_1pct", "finetune_10pct",
          "robustness", "shape_bias", "segment_ade20k", "detect_coco", "detect_coco_2x",
          "frequency")
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


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Snakemake's config merge: nested mappings merge, anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(*configfiles: str | Path) -> dict[str, Any]:
    """The config the Snakefile sees with ``--configfile`` ``configfiles`` (in order)."""
    config: dict[str, Any] = {}
    for path in (*BASE_CONFIGS, *configfiles):
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        config = merge(config, yaml.safe_load(path.read_text()) or {})
    return config


def validate_config(config: dict[str, Any], schema_path: str | Path = SCHEMA) -> None:
    """Validate against the JSON schema and cross-check references; raise ConfigError."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError(f"config key {_error_path(errors[0])}")
    from pixmim.models import ARCHS

    for name, run in config["runs"].items():
        where = f"config key runs.{name}"
        if run["variant"] not in config["variants"]:
            raise ConfigError(f"{where}.variant: unknown variant {run['variant']!r} "
                              f"(declared: {', '.join(sorted(config['variants']))})")
        arch = mapped_arch(config, run)
        if arch is not None and arch not in ARCHS[run["method"]]:
            raise ConfigError(f"{where}: arch {arch!r} is not registered for {run['method']} "
                              f"(registered: {sorted(ARCHS[run['method']])})")
    for kind in ("tables", "figures"):
        for name, item in config[kind].items():
            labels = {r["label"] for r in item["rows"]}
            for j, row in enumerate(item["rows"]):
                where = f"config key {kind}.{name}.rows.{j}"
                if row["run"] not in config["runs"]:
                    raise ConfigError(f"{where}.run: unknown run {row['run']!r}")
                if row.get("baseline") and row["baseline"] not in labels:
                    raise ConfigError(f"{where}.baseline: no row labelled {row['baseline']!r}")
    for i, target in enumerate(config["targets"]):
        if target not in config["tables"] and target not in config["figures"]:
            raise ConfigError(f"config key targets.{i}: no table or figure {target!r}")
        reason = unavailable(config, target)
        if reason:
            raise ConfigError(f"config key targets.{i}: {target} cannot be built with this "
                              f"config: {reason}")


def check_config(config: dict[str, Any]) -> None:
    """:func:`validate_config` for the Snakefile: a bad config stops snakemake with one line
    naming the key (a SystemExit; an exception would come with snakemake's traceback)."""
    try:
        validate_config(config)
    except ConfigError as err:
        raise SystemExit(f"ConfigError: {err}") from None


# ---------------------------------------------------------------- the catalogue
def mapped_arch(config: dict[str, Any], run: dict[str, Any]) -> str | None:
    """A run's arch in this config: the catalogue's (run or method default) through
    ``arch_map``; None when the map leaves it out (the run is paper-scale only)."""
    arch = run.get("arch") or config["default_archs"][run["method"]]
    amap = config.get("arch_map")
    return arch if amap is None else amap.get(arch)


def mapped_epochs(config: dict[str, Any], run: dict[str, Any]) -> int:
    """A run's pretraining epochs in this config: the catalogue's through ``schedules``."""
    epochs = run.get("epochs", config["pretrain"]["epochs"])
    sched = config.get("schedules")
    return int(epochs if sched is None else sched.get(epochs, sched.get(str(epochs), epochs)))


def _arch_size(config: dict[str, Any], method: str, arch: str) -> int:
    from pixmim.models import ARCHS

    return int(ARCHS[method][arch].get("img_size", config["data"]["img_size"]))


def resolve_run(config: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """The knobs that identify a pretraining job. The low-pass radius and the adaptive range
    are given in bins at ``lowpass.reference_size`` (224, the paper's) and scaled to the
    run's input size, so a CPU-size run keeps the paper's relative bandwidth."""
    variant = config["variants"][run["variant"]]
    arch = mapped_arch(config, run)
    lp = config["lowpass"]
    scale = (_arch_size(config, run["method"], arch) / lp["reference_size"]
             if arch is not None and lp.get("scale_with_size", True) else 1.0)
    return {
        "method": run["method"], "arch": arch, "epochs": mapped_epochs(config, run),
        "dataset": run.get("dataset", "default"),
        "target": variant["target"], "crop": variant["crop"],
        "radius": round(variant.get("radius", lp["radius"]) * scale, 4),
        "lowpass_mode": variant.get("mode", lp["mode"]),
        "adaptive_range": [round(r * scale, 4) for r in lp["adaptive_range"]],
    }


def run_id(knobs: dict[str, Any]) -> str:
    """``{method}-{target}{radius}-{crop}_{arch}_{epochs}e[_{dataset}]`` from resolved knobs."""
    target = knobs["target"]
    if target in ("lowpass", "highpass"):
        target += f"{knobs['radius']:g}"
    elif target == "adaptive":
        target += "{:g}-{:g}".format(*knobs["adaptive_range"])
    if target != "pixel" and knobs["lowpass_mode"] != "official":
        target += f"{knobs['lowpass_mode']}"
    suffix = "" if knobs["dataset"] == "default" else f"_{knobs['dataset']}"
    return f"{knobs['method']}-{target}-{knobs['crop']}_{knobs['arch']}_{knobs['epochs']}e{suffix}"


def run_unavailable(config: dict[str, Any], name: str) -> str | None:
    """Why a run cannot be made with this config (None: it can)."""
    run = config["runs"][name]
    if mapped_arch(config, run) is None:
        arch = run.get("arch") or config["default_archs"][run["method"]]
        return f"run {name}: arch {arch} has no entry in arch_map (paper-scale only)"
    dataset = run.get("dataset", "default")
    if dataset != "default" and not (config["data"].get("pretrain_roots") or {}).get(dataset):
        return f"run {name}: dataset {dataset} has no root in data.pretrain_roots"
    return None


def _rows(config: dict[str, Any], item: dict[str, Any]) -> list[dict[str, Any]]:
    """An item's rows, restricted to ``only_methods`` when set."""
    only = config.get("only_methods")
    return [r for r in item["rows"]
            if only is None or config["runs"][r["run"]]["method"] in only]


def unavailable(config: dict[str, Any], target: str) -> str | None:
    """Why a table or figure cannot be built with this config (None: it can)."""
    item = config["tables"].get(target) or config["figures"].get(target)
    if item is None:
        return f"no table or figure {target!r}"
    rows = _rows(config, item)
    if item["rows"] and not rows:
        return f"only_methods {config.get('only_methods')} leaves no row"
    for row in rows:
        reason = run_unavailable(config, row["run"])
        if reason:
            return reason
    for col in item.get("columns", []):
        stage = COLUMN_SOURCES[col][0]
        if stage in DENSE and config["data"]["source"] != "synth" and dense_root(config, stage) \
                is None:
            return f"column {col}: data.{'ade20k' if stage == 'segment_ade20k' else 'coco'}" \
                   "_root is not set"
    return None


def buildable(config: dict[str, Any], kind: str) -> list[str]:
    """Every table (or figure) this config can build."""
    return [n for n in config[kind] if unavailable(config, n) is None]


def experiments(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Job id -> resolved knobs and the catalogue names resolving to it, for every run this
    config can make. Names that resolve to the same knobs share one id: one job."""
    out: dict[str, dict[str, Any]] = {}
    for name in config["runs"]:
        if run_unavailable(config, name):
            continue
        knobs = resolve_run(config, config["runs"][name])
        exp = out.setdefault(run_id(knobs), {**knobs, "names": []})
        exp["names"].append(name)
    return out


def experiment_of(config: dict[str, Any], run_name: str) -> str:
    """The job id of a catalogue run."""
    reason = run_unavailable(config, run_name)
    if reason:
        raise ConfigError(reason)
    return run_id(resolve_run(config, config["runs"][run_name]))


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
    if stage in ("robustness", "shape_bias", "frequency") or stage in DENSE:
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
    data = config["data"]
    train, finetune = _train_section(config, stage)
    if stage == "pretrain":
        train["epochs"] = spec["epochs"]
    root = data_root(config) if spec["dataset"] == "default" or stage != "pretrain" \
        else data["pretrain_roots"][spec["dataset"]]
    job = {
        "experiment": exp, "stage": stage, "method": spec["method"],
        "variant_name": config["runs"][spec["names"][0]]["variant"], "arch": spec["arch"],
        "mask_ratio": config["mask_ratio"], "norm_pix_loss": config["norm_pix_loss"],
        "variant": {"target": spec["target"], "crop": spec["crop"], "radius": spec["radius"],
                    "lowpass_mode": spec["lowpass_mode"],
                    "adaptive_range": spec["adaptive_range"]},
        "data": {"root": root, "masks_root": masks_root(config),
                 "img_size": data["img_size"], "num_classes": data["num_classes"],
                 "bad_images": data.get("bad_images", "fail")},
        "train": {**train, "device": config["device"]},
        "tracking": {"tracking_uri": config["mlflow"]["tracking_uri"],
                     "experiment": config["mlflow"]["experiment"]},
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


def job_tags(config: dict[str, Any], exp: str, stage: str) -> dict[str, str]:
    """MLflow tags of a job: not part of its identity (a new table reruns nothing)."""
    exps = experiments(config)
    if exp not in exps:
        raise ConfigError(f"unknown experiment {exp!r}; declared: {sorted(exps)}")
    names = set(exps[exp]["names"])
    tables = sorted(n for n, t in config["tables"].items()
                    if any(r["run"] in names for r in t["rows"]))
    figures = sorted(n for n, f in config["figures"].items()
                     if any(r["run"] in names for r in f["rows"]))
    return {"tables": ",".join(tables), "figures": ",".join(figures),
            "runs": ",".join(sorted(names)), "epochs": str(exps[exp]["epochs"])}


def _check_buildable(config: dict[str, Any], name: str) -> None:
    reason = unavailable(config, name)
    if reason:
        raise ConfigError(f"{name} cannot be built with this config: {reason}")


def table_spec(config: dict[str, Any], name: str) -> dict[str, Any]:
    """Rows of one table with, per column, the metrics file and key that hold our value."""
    if name not in config["tables"]:
        raise ConfigError(f"no table {name!r} in the catalogue (tables: "
                          f"{', '.join(sorted(config['tables']))})")
    _check_buildable(config, name)
    table = config["tables"][name]
    rows = []
    kept = _rows(config, table)
    labels = {r["label"] for r in kept}
    for row in kept:
        exp = experiment_of(config, row["run"])
        cells = {}
        for col in table["columns"]:
            stage, key = COLUMN_SOURCES[col]
            cells[col] = {"file": f"{run_dir(config, exp, stage)}/metrics.json", "key": key}
        base = row.get("baseline") if row.get("baseline") in labels else None
        rows.append({"label": row["label"], "paper_row": row.get("paper_row", row["label"]),
                     "baseline": base, "experiment": exp, "cells": cells})
    note = (config.get("notes") or {}).get(name, table.get("note", ""))
    return {"table": name, "title": table["title"], "note": note, "rows": rows}


def curve_tables(config: dict[str, Any], names: list[str] | None = None) -> list[str]:
    """Tables whose experiments get a loss / linear-probe curves figure (those with ``lin``)."""
    names = list(config["tables"]) if names is None else names
    return [n for n in names if n in config["tables"] and "lin" in config["tables"][n]["columns"]]


# figure -> the stage whose metrics feed it (fig6 reads the data, fig7 the table columns)
FIGURE_STAGES = {"fig5": "frequency", "fig8": "shape_bias"}


def figure_spec(config: dict[str, Any], name: str) -> dict[str, Any]:
    """Rows of a figure with the metrics files that feed it."""
    if name not in config["figures"]:
        raise ConfigError(f"no figure {name!r} in the catalogue")
    _check_buildable(config, name)
    fig = config["figures"][name]
    rows = []
    for row in _rows(config, fig):
        exp = experiment_of(config, row["run"])
        entry = {"label": row["label"], "experiment": exp,
                 "epochs": config["runs"][row["run"]].get("epochs")}
        if name in FIGURE_STAGES:
            entry["file"] = f"{run_dir(config, exp, FIGURE_STAGES[name])}/metrics.json"
        for col in fig.get("columns", []):
            stage, key = COLUMN_SOURCES[col]
            entry.setdefault("cells", {})[col] = {
                "file": f"{run_dir(config, exp, stage)}/metrics.json", "key": key}
        rows.append(entry)
    spec: dict[str, Any] = {"figure": name, "rows": rows}
    if name == "fig6":
        spec["file"] = f"{config['results']}/analysis/coverage/coverage.csv"
    return spec


def coverage_patch_size(config: dict[str, Any]) -> int:
    """The mask unit of Figure 6: the patch size of MAE's arch in this config."""
    from pixmim.models import ARCHS

    arch = mapped_arch(config, {"method": "mae"}) or config["default_archs"]["mae"]
    return int(ARCHS["mae"][arch].get("patch_size", 16))


def figure_inputs(config: dict[str, Any], name: str) -> list[str]:
    spec = figure_spec(config, name)
    if name == "fig6":
        return [spec["file"]]
    files = {r["file"] for r in spec["rows"] if "file" in r}
    files |= {c["file"] for r in spec["rows"] for c in r.get("cells", {}).values()}
    return sorted(files)


def default_targets(config: dict[str, Any]) -> list[str]:
    """The output files of ``rule all``: the config's ``targets`` (tables: csv + md, and the
    curves figure of tables with a lin column; figures: their PNGs)."""
    R = config["results"]
    out = []
    for t in config["targets"]:
        if t in config["tables"]:
            out += [f"{R}/tables/{t}.csv", f"{R}/tables/{t}.md"]
            out += [f"{R}/figures/{t}_curves.png" for _ in curve_tables(config, [t])]
        else:
            out.append(f"{R}/figures/{FIGURE_FILES[t]}")
    return out


FIGURE_FILES = {"fig5": "fig5_frequency.png", "fig6": "fig6_coverage.png",
                "fig7": "fig7_epochs.png", "fig8": "fig8_shape_bias.png"}


def all_targets(config: dict[str, Any]) -> list[str]:
    """Every table and figure this config can build (``rule everything``)."""
    return default_targets({**config, "targets": buildable(config, "tables")
                            + buildable(config, "figures")})


def table_inputs(config: dict[str, Any], name: str) -> list[str]:
    return sorted({c["file"] for r in table_spec(config, name)["rows"]
                   for c in r["cells"].values()})


def write_yaml(path: str | Path, data: dict[str, Any]) -> None:
    """Atomically write a resolved config / spec as YAML."""
    write_text(path, yaml.safe_dump(data, sort_keys=False))
