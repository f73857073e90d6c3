"""Job configs: what ``python -m pixmim run`` reads for one stage of one experiment.

A job's config holds only the keys that job reads (a downstream stage takes the variant
from the pretraining checkpoint's metadata, a pixel-target run has no radius), so a knob
changes only the jobs that read it. At DAG build, :func:`pixmim.workflow.targets.materialize`
writes the config and tags of each job the requested targets need, and only when its
content changed (:func:`write_if_changed`): the file times then carry a config change to
Snakemake with or without its ``.snakemake/`` metadata.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import urllib.parse
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from pixmim import registry
from pixmim.config import ConfigError, FinetuneConfig, per_gpu_batch
from pixmim.io import write_text
from pixmim.workflow.catalogue import (
    SWEEP,
    all_runs,
    dense_task,
    experiments,
    group_id,
    plugins,
    released_of,
    released_reads,
    released_stage,
    stage_chain,
    sweep_runs,
    texture_bound,
    texture_datasets,
)

# the robustness / shape-bias sets, as config keys of data.eval_roots and view folder names
EVAL_SETS = {"imagenet_c": "imagenet-c", "imagenet_a": "imagenet-a", "imagenet_r": "imagenet-r",
             "imagenet_sketch": "imagenet-sketch", "cue_conflict": "cue-conflict"}


# ---------------------------------------------------------------- data locations
def data_root(config: dict[str, Any]) -> str:
    data = config["data"]
    return synth_dir(config, texture_bound(config)) if data["source"] == "synth" else data["root"]


def synth_dir(config: dict[str, Any], bound: float) -> str:
    """The generated dataset with ``texture_class_bound`` ``bound``: ``data/synth`` at 1
    (rule generate_data), else ``data/synth_tex{bound:g}`` (rule generate_texture_data)."""
    tail = "" if bound == 1.0 else f"_tex{bound:g}"
    return f"{config['results']}/data/synth{tail}"


def synth_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The generator's settings (``data.synth``) but the texture binding, which a dataset's
    folder names (:func:`synth_dir`)."""
    return {k: v for k, v in config["data"]["synth"].items() if k != "texture_class_bound"}


def image_root(config: dict[str, Any], dataset: str, pretraining: bool) -> str:
    """The image folder a job of a run on ``dataset`` reads. A texture-sweep dataset is a
    whole dataset: every stage reads it (the probe its own val split). A dataset of
    ``data.pretrain_roots`` is read by the pretraining alone, the evaluations read the
    default data (PixMIM Table 6: Places365 pretraining, ImageNet evaluation)."""
    sweep = texture_datasets(config)
    if dataset in sweep:
        return synth_dir(config, sweep[dataset])
    if dataset != "default" and pretraining:
        return config["data"]["pretrain_roots"][dataset]
    return data_root(config)


def masks_root(config: dict[str, Any]) -> str | None:
    """Foreground masks: the generator's ``masks/`` for synthetic data, else the config key."""
    data = config["data"]
    return f"{data_root(config)}/masks" if data["source"] == "synth" else data.get("masks_root")


def views_root(config: dict[str, Any]) -> str:
    return f"{config['results']}/data/synth_views"


def scenes_root(config: dict[str, Any]) -> str:
    """The generated ADE20K- and COCO-layout scenes (``ade20k/``, ``coco/`` inside)."""
    return f"{config['results']}/data/scenes"


def eval_roots(config: dict[str, Any]) -> dict[str, str | None]:
    """Robustness / shape-bias set roots: generated views, or ``data.eval_roots`` keys."""
    if config["data"]["source"] == "synth":
        return {k: f"{views_root(config)}/{v}" for k, v in EVAL_SETS.items()}
    roots = config["data"].get("eval_roots") or {}
    return {k: roots.get(k) for k in EVAL_SETS}


def dense_root(config: dict[str, Any], stage: str) -> str | None:
    """ADE20K / COCO root of a dense stage: generated scenes, or ``data.ade20k_root`` /
    ``data.coco_root``."""
    task = dense_task(config, stage)
    if config["data"]["source"] == "synth":
        return f"{scenes_root(config)}/{task}"
    return config["data"].get(f"{task}_root")


def generated_input(config: dict[str, Any], kind: str | None,
                    images: str | None = None) -> list[str]:
    """The generated data folder a stage reads (``images``: ``images`` or the default
    dataset, ``views``, ``scenes``): an input only when the data are synthetic."""
    if config["data"]["source"] != "synth" or kind is None:
        return []
    if kind == "images" and images is not None:
        return [images]
    return [{"images": data_root, "views": views_root, "scenes": scenes_root}[kind](config)]


def run_dir(config: dict[str, Any], exp: str, stage: str) -> str:
    """Where a job writes its outputs."""
    return f"{config['results']}/runs/{exp}/{stage}"


def tags_path(config: dict[str, Any], exp: str) -> str:
    """The MLflow tags (and tracking settings) shared by every job of an experiment."""
    return f"{config['results']}/jobs/{exp}/tags.yaml"


def job_dir(config: dict[str, Any], exp: str, stage: str) -> str:
    """Where a job's config and tags are written at DAG build (apart from the run folders,
    which hold only jobs that ran)."""
    return f"{config['results']}/jobs/{exp}/{stage}"


# Where a section's keys may be set for some jobs only, in the order they apply: per method
# (PixMIM Appendix B's batches and schedules), per arch (Table 16's ViT-L fine-tune: MAE's
# released ViT-L recipe), per stage (Table 18's 2x detection schedule).
OVERRIDES = ("method_overrides", "arch_overrides", "stage_overrides")


def section(config: dict[str, Any], name: str, method: str, arch: str | None = None,
            stage: str | None = None) -> dict[str, Any]:
    """Config section ``name`` as the jobs of ``method`` (``arch``, ``stage``) read it: with
    ``method_overrides`` [method][name], then ``arch_overrides`` [arch][name], then
    ``stage_overrides`` [stage][name] set over it (:func:`check_overrides` first)."""
    check_overrides(config)
    out = dict(config.get(name) or {})
    for kind, who in zip(OVERRIDES, (method, arch, stage), strict=True):
        out.update(((config.get(kind) or {}).get(who) or {}).get(name) or {} if who else {})
    return out


def check_overrides(config: dict[str, Any]) -> None:
    """Every override names a registered method / arch / stage and keys its section has: a
    ConfigError naming the override otherwise (one that would apply to no job)."""
    plug = plugins(config)
    known = {"method_overrides": set(registry.methods(plug)),
             "arch_overrides": {a for m in registry.methods(plug).values() for a in m.archs},
             "stage_overrides": set(registry.stages(plug))}
    for kind, names in known.items():
        for who, sections in (config.get(kind) or {}).items():
            if who not in names:
                raise ConfigError(f"{kind}.{who}: not registered (known: {sorted(names)})")
            for name, over in (sections or {}).items():
                unknown = sorted(set(over or {}) - set(config.get(name) or {}))
                if unknown:
                    raise ConfigError(f"{kind}.{who}.{name}: {unknown} are not keys of section "
                                      f"{name!r} (it has {sorted(config.get(name) or {})})")


def pretrain_size(config: dict[str, Any], method: str, arch: str) -> int:
    """Input size in px of a run's pretraining: its arch's own (``img_size`` in the arch
    table: LSMAE's ``vit_base_patch16_448`` pretrains at 448, Hu et al. 2022), else
    ``data.img_size``. The evaluations read ``data.img_size`` (the paper's 224, at which
    LSMAE is fine-tuned and probed as MAE, PixMIM Tables 9-10), their models built at that
    size with the checkpoint's position grid resampled (pixmim.models.export)."""
    arch_table = registry.method(method, plugins(config)).archs
    if arch not in arch_table:
        raise ConfigError(f"unknown arch {arch!r} for method {method!r}; registered: "
                          f"{sorted(arch_table)}")
    return int(arch_table[arch].get("img_size", config["data"]["img_size"]))


# ---------------------------------------------------------------- sections per job kind
def _variant(config: dict[str, Any], knobs: dict[str, Any]) -> dict[str, Any]:
    """The variant keys a pretraining job reads (none of the filter's for a pixel target)."""
    out = {"target": knobs["target"], "crop": knobs["crop"]}
    if "radius" in knobs:
        lp = config["lowpass"]
        out.update(radius=knobs["radius"], lowpass_mode=knobs["lowpass_mode"],
                   reference_size=lp["reference_size"],
                   scale_with_size=lp.get("scale_with_size", True))
    if "adaptive_range" in knobs:
        out["adaptive_range"] = knobs["adaptive_range"]
    return out


def _train(config: dict[str, Any], spec: registry.Stage, knobs: dict[str, Any],
           job: dict[str, Any]) -> None:
    sec = section(config, spec.section, knobs["method"], knobs["arch"], spec.name)
    monitor = sec.pop("monitor", None)  # pretrain.monitor: what the pretraining watches
    job["train"].update(sec)
    if spec.consumes is None:  # the pretraining itself
        if monitor:
            job["monitor"] = dict(monitor)
        job["data"]["img_size"] = pretrain_size(config, knobs["method"], knobs["arch"])
        job["train"]["epochs"] = knobs["epochs"]
        job.update(mask_ratio=config["mask_ratio"], norm_pix_loss=config["norm_pix_loss"],
                   variant=_variant(config, knobs))
        if knobs["crop"] == "bg":
            own = knobs["dataset"] in texture_datasets(config)  # a generated one: its masks
            job["data"]["masks_root"] = (f"{job['data']['root']}/masks" if own
                                         else masks_root(config))


def released_file(config: dict[str, Any], name: str) -> str:
    """Where a released checkpoint is fetched to (``checkpoints.<name>``): its source's file
    name under ``<results>/checkpoints/<name>/``, shared by the run's seeds."""
    source = config["checkpoints"][name]["source"]
    filename = PurePosixPath(urllib.parse.urlparse(source).path).name or "checkpoint.pth"
    return f"{config['results']}/checkpoints/{name}/{filename}"


def _released(config: dict[str, Any], knobs: dict[str, Any], job: dict[str, Any]) -> None:
    """The job a released checkpoint stands in for: no training (one process, no training
    section) and what to import. A pretraining gets the model keywords its variant sets
    (the checkpoint's meta, as a trained one's); a fine-tune or probe (evaluated on the
    validation set, nothing upstream of it) the evaluations' loader."""
    name = knobs["checkpoint"]
    ckpt = config["checkpoints"][name]
    if ckpt["kind"] == "pretrained":
        job["data"]["img_size"] = pretrain_size(config, knobs["method"], knobs["arch"])
        job.update(mask_ratio=config["mask_ratio"], norm_pix_loss=config["norm_pix_loss"],
                   variant=_variant(config, knobs))
    else:
        loader = config["evaluation"]["loader"]
        job["train"].update({k: loader[k] for k in ("batch_size", "num_workers")
                             if k in loader})
        if loader.get("max_batches"):  # a dress rehearsal's cap
            job["train"]["max_eval_batches"] = loader["max_batches"]
    job["released"] = {"name": name, "file": released_file(config, name),
                       "source": ckpt["source"], "checksum": ckpt["checksum"],
                       "format": ckpt["format"], "kind": ckpt["kind"],
                       "published": dict(ckpt.get("published") or {})}


def _finetune(config: dict[str, Any], spec: registry.Stage, knobs: dict[str, Any],
              job: dict[str, Any]) -> None:
    """Fine-tune section with its recipe; the few-shot stages add their fraction and the
    ``few_shot`` schedule overrides."""
    method = knobs["method"]
    sec = section(config, spec.section, method, knobs["arch"], spec.name)
    sec.update(config["finetune_recipes"][sec.pop("recipe")])
    knobs_ft = {f.name for f in dataclasses.fields(FinetuneConfig)}
    job["finetune"] = {k: v for k, v in sec.items() if k in knobs_ft}
    job["train"].update({k: v for k, v in sec.items() if k not in knobs_ft})
    fraction = spec.params.get("fraction", 1.0)
    if fraction < 1:
        job["finetune"]["fraction"] = fraction
        # null: the recipe's value (config/paper.yaml's base_lr)
        job["train"].update({k: v for k, v in section(config, "few_shot", method, knobs["arch"],
                                                              spec.name).items()
                             if v is not None})


def _evaluate(config: dict[str, Any], spec: registry.Stage, knobs: dict[str, Any],
              job: dict[str, Any]) -> None:
    job["eval"] = {**eval_roots(config), **config["evaluation"]["loader"]}


def _frequency(config: dict[str, Any], spec: registry.Stage, knobs: dict[str, Any],
               job: dict[str, Any]) -> None:
    job["eval"] = dict(config["evaluation"]["loader"])  # its loader: the evaluations'
    job["mask_ratio"] = config["mask_ratio"]  # the analysis masks as the pretraining did
    # and reconstructs at the pretraining's own input size
    job["data"]["img_size"] = pretrain_size(config, knobs["method"], knobs["arch"])


def dense_section(config: dict[str, Any], stage: str, method: str,
                  arch: str | None = None) -> dict[str, Any]:
    """The ``dense`` keys of a job: the task section (with its method, arch and stage
    overrides: Table 18's 2x schedule is ``stage_overrides.detect_coco_2x``), its recipe with
    the overrides nested under the method's encoder family (ConvMAE's Tables 13/15 under
    ``convvit``)."""
    spec = registry.stage(stage, plugins(config))
    dense = section(config, spec.section, method, arch, stage)
    recipe = dict(config["dense_recipes"][spec.section][dense["recipe"]])
    family = registry.method(method, plugins(config)).family
    overrides = recipe.pop(family, {})
    for other in registry.families(plugins(config)):
        recipe.pop(other, None)
    dense.update(recipe, **overrides)
    dense["root"] = dense_root(config, stage)
    return dense


def _dense(config: dict[str, Any], spec: registry.Stage, knobs: dict[str, Any],
           job: dict[str, Any]) -> None:
    job["dense"] = dense_section(config, spec.name, knobs["method"], knobs["arch"])
    del job["data"]  # the dense stages read dense.root


def _options(config: dict[str, Any], spec: registry.Stage, knobs: dict[str, Any],
             job: dict[str, Any]) -> None:
    job["options"] = dict(config.get(spec.section) or {})


JOB_KINDS = {"train": _train, "finetune": _finetune, "evaluate": _evaluate,
             "frequency": _frequency, "dense": _dense, "options": _options,
             "none": lambda *a: None}


def job_config(config: dict[str, Any], exp: str, stage: str,
               exps: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The resolved config of one job (what ``python -m pixmim run`` reads)."""
    exps = experiments(config) if exps is None else exps
    if exp not in exps:
        raise ConfigError(f"unknown experiment {exp!r}; declared: {sorted(exps)}")
    table = registry.stages(plugins(config))
    if stage not in table:
        raise ConfigError(f"unknown stage {stage!r}; registered: {sorted(table)}")
    spec, knobs = table[stage], exps[exp]
    if spec.job not in JOB_KINDS:
        raise ConfigError(f"stage {stage}: unknown job kind {spec.job!r} ({sorted(JOB_KINDS)})")
    data = config["data"]
    job: dict[str, Any] = {
        "experiment": exp, "stage": stage, "method": knobs["method"], "arch": knobs["arch"],
        "data": {"root": image_root(config, knobs["dataset"], spec.consumes is None),
                 "img_size": data["img_size"],
                 "num_classes": data["num_classes"], "bad_images": data.get("bad_images", "fail")},
        "train": {"device": config["device"]},
    }
    name = knobs.get("checkpoint")
    if name and not released_reads(config, name, stage):
        raise ConfigError(f"run {exps[exp]['names'][0]} stands on released checkpoint {name} "
                          f"({config['checkpoints'][name]['kind']}): it has no {stage} job")
    imported = bool(name) and released_stage(config, name) == stage
    if spec.consumes is not None and not imported:
        job[f"{spec.consumes}_dir"] = run_dir(config, exp, spec.consumes)
    if imported:
        _released(config, knobs, job)  # the stage's output is a released file, imported
    else:
        JOB_KINDS[spec.job](config, spec, knobs, job)
    job["train"]["seed"] = knobs["seed"]  # the run's seed, through its whole chain
    layout(job, spec)  # its batch divides over its processes (a ConfigError otherwise)
    own = [m for m in (registry.method(knobs["method"], plugins(config)).source, spec.source)
           if m in plugins(config)]
    if own:
        job["plugins"] = own
    return job


# The job kinds whose stage runs as max(gpus, 1) x nodes processes (the others: one process)
DISTRIBUTED = {"train": "train", "finetune": "train", "dense": "dense"}


def layout(job: dict[str, Any], spec: registry.Stage) -> dict[str, int]:
    """How a resolved job spreads over processes: ``nodes``, ``gpus`` (per node; 0: one
    process on ``device``), ``processes``, ``per_gpu_batch`` (images per process per
    micro-step), ``accum_steps`` and ``batch_size`` (the effective batch, the paper's). A
    batch that does not divide is a ConfigError naming the config section's keys."""
    key = DISTRIBUTED.get(spec.job)
    sec = job.get(key) or {} if key else {}
    nodes, gpus, accum = sec.get("nodes", 1), sec.get("gpus", 0), sec.get("accum_steps", 1)
    batch = sec.get("batch_size")
    out = {"nodes": nodes, "gpus": gpus, "processes": max(gpus, 1) * nodes,
           "accum_steps": accum, "batch_size": batch, "per_gpu_batch": batch}
    if key and batch is not None:
        where = spec.section or key
        try:
            out["per_gpu_batch"] = per_gpu_batch(batch, gpus, nodes, accum, where)
        except ConfigError as e:
            raise ConfigError(f"{e} (job {job['experiment']}/{spec.name}; a method, arch or "
                              "stage override may set these keys)") from None
    return out


@lru_cache(maxsize=4096)
def _written_job(path: str, mtime_ns: int) -> dict[str, Any]:
    """A job config file, parsed once per version (a rule asks for each of its resources
    and its launch command apart)."""
    return yaml.safe_load(Path(path).read_text())


def job_layout(config: dict[str, Any], exp: str, stage: str) -> dict[str, int]:
    """:func:`layout` of a job, read from its config as written at DAG build (resolved
    again where that file is missing)."""
    spec = registry.stage(stage, plugins(config))
    path = Path(job_dir(config, exp, stage)) / "config.yaml"
    job = (_written_job(str(path), path.stat().st_mtime_ns) if path.is_file()
           else job_config(config, exp, stage))
    return layout(job, spec)


def job_tags(config: dict[str, Any], exp: str,
             exps: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """MLflow tags of an experiment's jobs, and where they log (``tracking``): not part of
    their identity (a new table retags, another MLflow store or experiment name reruns
    nothing)."""
    exps = experiments(config) if exps is None else exps
    if exp not in exps:
        raise ConfigError(f"unknown experiment {exp!r}; declared: {sorted(exps)}")
    names = set(exps[exp]["names"])
    tables = sorted(n for n, t in config["tables"].items()
                    if any(r["run"] in names for r in t["rows"]))
    figures = sorted(n for n, f in config["figures"].items()
                     if any(r["run"] in names for r in f["rows"]))
    if names & set(sweep_runs(config)):  # (on the default dataset: the catalogue's runs)
        figures.append(SWEEP)
    runs = all_runs(config)
    variants = sorted({runs[n]["variant"] for n in names})
    out = {"tables": ",".join(tables), "figures": ",".join(figures),
           "runs": ",".join(sorted(names)), "variant": ",".join(variants),
           "epochs": str(exps[exp]["epochs"]), "seed": str(exps[exp]["seed"]),
           "group": group_id(exp),
           "tracking": {"tracking_uri": config["mlflow"]["tracking_uri"],
                        "experiment": config["mlflow"]["experiment"]}}
    if exps[exp].get("checkpoint"):  # the run stands on a released checkpoint
        out["released"] = exps[exp]["checkpoint"]
    return out


def upstream(config: dict[str, Any], stage: str, exp: str | None = None) -> list[str]:
    """The stages a stage needs before it (``robustness`` -> ``finetune``, ``pretrain``);
    for experiment ``exp`` standing on a released checkpoint, down to the stage the
    checkpoint stands in for (a released fine-tune: ``robustness`` -> ``finetune``)."""
    chain = stage_chain(config, stage)[1:]
    name = released_of(exp) if exp else None
    if name and name in (config.get("checkpoints") or {}):
        own = released_stage(config, name)
        chain = chain[:chain.index(own) + 1] if own in chain else []
    return chain


def stage_inputs(config: dict[str, Any], exp: str, stage: str) -> dict[str, Any]:
    """A job's inputs for its rule: its config, tags, the outputs of the stage it consumes,
    the generated data it reads. ``tags`` is to be marked ancient by the rule."""
    spec = registry.stage(stage, plugins(config))
    images = None
    dataset = experiments(config)[exp]["dataset"]
    if dataset in texture_datasets(config):
        images = image_root(config, dataset, spec.consumes is None)
    out: dict[str, Any] = {"cfg": f"{job_dir(config, exp, stage)}/config.yaml",
                           "tags": tags_path(config, exp),
                           "data": generated_input(config, spec.data, images)}
    released = experiments(config)[exp].get("checkpoint")
    imported = bool(released) and released_stage(config, released) == stage
    if imported:  # a released file instead of the images and the upstream stage's outputs
        out["released"] = released_file(config, released)
        if spec.consumes is None:
            out["data"] = []
    if spec.consumes is not None and not imported:
        up = registry.stage(spec.consumes, plugins(config))
        out["upstream"] = [f"{run_dir(config, exp, up.name)}/{o}" for o in up.outputs]
    return out


def rule_families(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Rule name -> its stages and outputs (every stage of a rule writes the same files)."""
    out: dict[str, dict[str, Any]] = {}
    for spec in registry.stages(plugins(config)).values():
        fam = out.setdefault(spec.rule, {"stages": [], "outputs": spec.outputs})
        if fam["outputs"] != spec.outputs:
            raise registry.RegistryError(f"stage {spec.name}: rule {spec.rule} writes "
                                         f"{fam['outputs']}, the stage declares {spec.outputs}")
        fam["stages"].append(spec.name)
    return out


# ---------------------------------------------------------------- written at DAG build
def write_if_changed(path: str | Path, data: dict[str, Any]) -> str | None:
    """Atomically write ``data`` as YAML unless the file already holds exactly that; the
    text when written (its time then tells Snakemake that it changed), else None."""
    text = yaml.safe_dump(data, sort_keys=False)
    path = Path(path)
    if path.is_file() and path.read_text() == text:
        return None
    write_text(path, text)
    return text


def write_job_config(path: str | Path, data: dict[str, Any],
                     outputs: list[str | Path]) -> bool:
    """:func:`write_if_changed` for a job config. When the new content is the one the job's
    finished outputs were made from (``config_sha256`` in its ``metrics.json``: a config
    changed, previewed with ``snakemake -n``, then changed back), the file is dated just
    before those outputs, so that going back to a finished config reruns nothing."""
    text = write_if_changed(path, data)
    if text is None:
        return False
    metrics = next((Path(o) for o in outputs if str(o).endswith("metrics.json")), None)
    if metrics is not None and all(Path(o).is_file() for o in outputs):
        try:
            made_from = json.loads(metrics.read_text()).get("config_sha256")
        except (OSError, ValueError):
            made_from = None
        if made_from == hashlib.sha256(text.encode()).hexdigest():
            t = min(Path(o).stat().st_mtime for o in outputs) - 1
            os.utime(path, (t, t))
    return True


def write_yaml(path: str | Path, data: dict[str, Any]) -> None:
    """Atomically write a resolved config / spec as YAML."""
    write_text(path, yaml.safe_dump(data, sort_keys=False))
