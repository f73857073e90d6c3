"""The config and the experiment catalogue: load, validate, resolve runs to job ids.

Identity is the resolved configuration, in the paper's units: a run's knobs are the method,
arch, epochs, dataset, seed and only the PixMIM knobs its target reads (a pixel-target run
has no radius), and its id names them as the paper does (``mae-lowpass40-src_vit_base_..._s0``).
Scaling a radius to a run's input size happens inside the job. Every catalogue run is made
once per seed of the config key ``seeds``: the tables average over them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import yaml

from pixmim import registry
from pixmim.config import ConfigError

# The workflow's directory (config/, results/, benchmarks/): the working directory, relative,
# as Snakemake reads its `configfile:`s and writes its outputs. It is a checkout of the repo,
# not the installed package: the files the package itself reads are package data.
ROOT = Path()
# What the Snakefile loads before any --configfile: the catalogue, then the embedded default.
BASE_CONFIGS = (ROOT / "config" / "catalogue.yaml", ROOT / "config" / "config.yaml")
FILTERED = ("lowpass", "highpass")  # targets that read a radius
SWEEP = "texture_sweep"  # the config key, rule and figure of the texture sweep
RELEASED = "_rel-"  # in a job id: the run stands on a released checkpoint (no pretraining)


def plugins(config: dict[str, Any]) -> tuple[str, ...]:
    """The config's plugin modules (``plugins``: methods and stages outside the package)."""
    return tuple(config.get("plugins") or ())


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Snakemake's config merge (snakemake.utils.update_config): nested mappings merge,
    anything else replaces. Written out so that the installed package reads configs
    without Snakemake, which is only in the ``workflow`` extra; a test checks that the
    two agree."""
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
            where = "" if path.is_absolute() else f" (in the working directory {Path.cwd()})"
            raise ConfigError(f"config file not found: {path}{where}")
        config = merge(config, yaml.safe_load(path.read_text()) or {})
    return config


def check_references(config: dict[str, Any]) -> None:
    """Cross-check what the schema cannot see (a run's method, variant and arch, each row's
    run, each figure's stage and drawing function, each target); raise ConfigError."""
    table = registry.methods(plugins(config))
    released, named = released_runs(config), runs(config)
    clash = sorted(set(config["runs"]) & set(released))
    if clash:
        raise ConfigError(f"config key checkpoints.{clash[0]}: a released checkpoint is a run "
                          "of its own name, and runs has one of that name too")
    for name, ckpt in (config.get("checkpoints") or {}).items():
        up = ckpt.get("pretrained")
        if up is not None and up not in config["checkpoints"]:
            raise ConfigError(f"config key checkpoints.{name}.pretrained: no checkpoint {up!r}")
    for name, run in named.items():
        where = (f"config key checkpoints.{name}" if run.get("checkpoint")
                 else f"config key runs.{name}")
        if run["method"] not in table:
            raise ConfigError(f"{where}.method: unknown method {run['method']!r} "
                              f"(registered: {', '.join(sorted(table))})")
        if run["variant"] not in config["variants"]:
            raise ConfigError(f"{where}.variant: unknown variant {run['variant']!r} "
                              f"(declared: {', '.join(sorted(config['variants']))})")
        arch = mapped_arch(config, run)
        if arch is not None and arch not in table[run["method"]].archs:
            raise ConfigError(f"{where}: arch {arch!r} is not registered for {run['method']} "
                              f"(registered: {sorted(table[run['method']].archs)})")
    for kind in ("tables", "figures"):
        for name, item in config[kind].items():
            labels = {r["label"] for r in item["rows"]}
            for j, row in enumerate(item["rows"]):
                where = f"config key {kind}.{name}.rows.{j}"
                if row["run"] not in named:
                    raise ConfigError(f"{where}.run: unknown run {row['run']!r}")
                if row.get("baseline") and row["baseline"] not in labels:
                    raise ConfigError(f"{where}.baseline: no row labelled {row['baseline']!r}")
    cols = registry.columns(plugins(config))
    for name, table in config["tables"].items():
        for j, row in enumerate(table["rows"]):
            where = f"config key tables.{name}.rows.{j}.run"
            if table.get("reference") == "published" and row["run"] not in released:
                raise ConfigError(f"{where}: {row['run']!r} is no released checkpoint (the "
                                  "table's reference is their published numbers)")
            if row["run"] not in released:
                continue
            for col in table.get("columns", []):
                if col in cols and not released_reads(config, row["run"], cols[col].stage):
                    kind = config["checkpoints"][row["run"]]["kind"]
                    raise ConfigError(f"{where}: {row['run']!r} is a released {kind} "
                                      f"checkpoint: it has no {cols[col].stage} for column "
                                      f"{col} (only {released_stage(config, row['run'])} "
                                      "and the stages consuming it)")
    for name, fig in config["figures"].items():
        check_figure(config, name, fig)
    sweep = config.get(SWEEP)
    for role in ("baseline", "variant"):
        if sweep and sweep[role] not in config["runs"]:
            raise ConfigError(f"config key {SWEEP}.{role}: unknown run {sweep[role]!r}")
    for i, target in enumerate(config["targets"]):
        if target not in config["tables"] and target not in config["figures"]:
            raise ConfigError(f"config key targets.{i}: no table or figure {target!r}")
        reason = unavailable(config, target)
        if reason:
            raise ConfigError(f"config key targets.{i}: {target} cannot be built with this "
                              f"config: {reason}")


def one_line_errors(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` for the Snakefile, a ConfigError (or RegistryError) turned into a
    SystemExit of one line (what ``check_config`` does for the schema; the job configs'
    own checks, such as a layout's batch, raise while they are written)."""
    try:
        return fn(*args)
    except (ConfigError, registry.RegistryError) as err:
        raise SystemExit(f"ConfigError: {err}") from None


# ---------------------------------------------------------------- runs -> job ids
# The stage a released checkpoint of each kind stands in for: its job imports the file
# instead of running, the stages upstream of it are not part of the run.
RELEASED_STAGE = {"pretrained": "pretrain", "finetuned": "finetune",
                  "linear_probe": "linear_probe"}


def released_runs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The runs that stand on a released checkpoint: one per ``checkpoints`` entry, named as
    the entry, with its method, variant, arch and epochs (what the checkpoint is: for a
    pretrained one its pretraining is the fetched file, converted; for a fine-tuned or
    probe one, that stage's output, and nothing upstream of it is run)."""
    return {name: {**{k: c[k] for k in ("method", "variant", "arch", "epochs")},
                   "checkpoint": name}
            for name, c in (config.get("checkpoints") or {}).items()}


def released_stage(config: dict[str, Any], name: str) -> str:
    """The stage released checkpoint ``name`` stands in for (:data:`RELEASED_STAGE`)."""
    return RELEASED_STAGE[config["checkpoints"][name]["kind"]]


def released_of(exp: str) -> str | None:
    """The released checkpoint a job id stands on (``..._rel-<name>_s<seed>``), else None."""
    group = group_id(exp)
    return group.split(RELEASED, 1)[1] if RELEASED in group else None


def stage_chain(config: dict[str, Any], stage: str) -> list[str]:
    """``stage`` and the stages it consumes, nearest first (robustness, finetune, pretrain)."""
    chain, spec = [stage], registry.stage(stage, plugins(config))
    while spec.consumes is not None:
        chain.append(spec.consumes)
        spec = registry.stage(spec.consumes, plugins(config))
    return chain


def released_reads(config: dict[str, Any], name: str, stage: str) -> bool:
    """Whether a run standing on released checkpoint ``name`` can make ``stage``: the stage
    the checkpoint stands in for or one consuming it (a fine-tuned release has robustness,
    no probe: nothing was pretrained)."""
    return released_stage(config, name) in stage_chain(config, stage)


def runs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every named run: the catalogue's (``runs``) and the released checkpoints'."""
    return {**config["runs"], **released_runs(config)}


def mapped_arch(config: dict[str, Any], run: dict[str, Any]) -> str | None:
    """A run's arch in this config: the catalogue's (run or method default) through
    ``arch_map``; None when the map leaves it out (the run is paper-scale only). A released
    checkpoint's arch is what the file holds: never mapped."""
    arch = run.get("arch") or config["default_archs"][run["method"]]
    amap = config.get("arch_map")
    return arch if amap is None or run.get("checkpoint") else amap.get(arch)


def mapped_epochs(config: dict[str, Any], run: dict[str, Any]) -> int:
    """A run's pretraining epochs in this config: the catalogue's through ``schedules`` (a
    released checkpoint's as its authors ran them)."""
    epochs = run.get("epochs", config["pretrain"]["epochs"])
    sched = None if run.get("checkpoint") else config.get("schedules")
    return int(epochs if sched is None else sched.get(epochs, sched.get(str(epochs), epochs)))


def resolve_run(config: dict[str, Any], run: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """The knobs that identify a pretraining job, holding only what its target reads:
    the radius (bins at ``lowpass.reference_size``, the paper's unit) for low/high-pass,
    the range and initial radius for the adaptive target, the filter mode for both."""
    variant = config["variants"][run["variant"]]
    lp = config["lowpass"]
    knobs = {"method": run["method"], "arch": mapped_arch(config, run),
             "epochs": mapped_epochs(config, run), "dataset": run.get("dataset", "default"),
             "target": variant["target"], "crop": variant["crop"], "seed": seed}
    if variant["target"] != "pixel":
        knobs["radius"] = variant.get("radius", lp["radius"])
        knobs["lowpass_mode"] = variant.get("mode", lp["mode"])
    if variant["target"] == "adaptive":
        knobs["adaptive_range"] = list(lp["adaptive_range"])
    if run.get("checkpoint"):
        knobs["checkpoint"] = run["checkpoint"]
    return knobs


def seeds(config: dict[str, Any]) -> list[int]:
    """The seeds every catalogue run is made with (``seeds``)."""
    return list(config.get("seeds") or [0])


def run_id(knobs: dict[str, Any]) -> str:
    """``{method}-{target}{radius}-{crop}_{arch}_{epochs}e[_{dataset}][_rel-{checkpoint}]_s{seed}``
    from resolved knobs, the radius in the paper's unit (``lowpass40``); ``_rel-`` marks a
    run standing on a released checkpoint (RELEASED)."""
    target = knobs["target"]
    if target in FILTERED:
        target += f"{knobs['radius']:g}"
    elif target == "adaptive":
        target += "{:g}-{:g}".format(*knobs["adaptive_range"])
    if knobs.get("lowpass_mode", "official") != "official":
        target += knobs["lowpass_mode"]
    suffix = "" if knobs["dataset"] == "default" else f"_{knobs['dataset']}"
    if knobs.get("checkpoint"):
        suffix += f"{RELEASED}{knobs['checkpoint']}"
    return (f"{knobs['method']}-{target}-{knobs['crop']}_{knobs['arch']}_{knobs['epochs']}e"
            f"{suffix}_s{knobs['seed']}")


def group_id(exp: str) -> str:
    """A job id without its seed: what the runs of one catalogue entry share."""
    return exp.rsplit("_s", 1)[0]


def run_unavailable(config: dict[str, Any], name: str) -> str | None:
    """Why a run cannot be made with this config (None: it can)."""
    run = runs(config)[name]
    if mapped_arch(config, run) is None:
        arch = run.get("arch") or config["default_archs"][run["method"]]
        return f"run {name}: arch {arch} has no entry in arch_map (paper-scale only)"
    dataset = run.get("dataset", "default")
    if dataset != "default" and not (config["data"].get("pretrain_roots") or {}).get(dataset):
        return f"run {name}: dataset {dataset} has no root in data.pretrain_roots"
    return None


def rows(config: dict[str, Any], item: dict[str, Any]) -> list[dict[str, Any]]:
    """A table's or figure's rows, restricted to ``only_methods`` when set."""
    only = config.get("only_methods")
    if only is None:
        return list(item["rows"])
    named = runs(config)
    return [r for r in item["rows"] if named[r["run"]]["method"] in only]


def dense_task(config: dict[str, Any], stage: str) -> str:
    """The dataset a dense stage reads: ``ade20k`` (a segmentation section) or ``coco``."""
    return ("ade20k" if registry.stage(stage, plugins(config)).section == "segmentation"
            else "coco")


# ---------------------------------------------------------------- figures
# A figure is one declaration in ``figures`` (config/catalogue.yaml): its rows (runs), what
# each row reads (``stage``: that stage's metrics.json; ``columns``: table cells), files
# other rules write (``inputs``, under ``results``), the function that draws it (``draw``,
# ``module:function``, called as ``draw(spec, out)`` by ``python -m pixmim figure``), the
# files it writes into ``results/figures/`` (``files``, the first passed as ``out``) and
# the report captions of some of them (``captions``, files of workflow/report/).
def check_figure(config: dict[str, Any], name: str, fig: dict[str, Any]) -> None:
    """A figure's declaration names a registered stage, an importable drawing module and
    captions of its own files; raise ConfigError naming the key otherwise."""
    where = f"config key figures.{name}"
    stages = registry.stages(plugins(config))
    if fig.get("stage") is not None and fig["stage"] not in stages:
        raise ConfigError(f"{where}.stage: unknown stage {fig['stage']!r} "
                          f"(registered: {', '.join(sorted(stages))})")
    module = fig["draw"].partition(":")[0]
    try:
        found = importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package is missing
        found = False
    if not found:
        raise ConfigError(f"{where}.draw: no module {module!r} (draw is module:function, "
                          "importable from the working directory)")
    extra = sorted(set(fig.get("captions") or {}) - set(fig["files"]))
    if extra:
        raise ConfigError(f"{where}.captions: {extra[0]!r} is not one of its files "
                          f"({', '.join(fig['files'])})")


def figure_files(config: dict[str, Any], name: str) -> list[tuple[str, str | None]]:
    """The files a figure writes (paths) with their report caption (None: not in the
    report), the file the drawing function is given first."""
    fig = config["figures"][name]
    captions = fig.get("captions") or {}
    return [(f"{config['results']}/figures/{f}", captions.get(f)) for f in fig["files"]]


def read_jobs(config: dict[str, Any], name: str) -> set[tuple[str, str]]:
    """The (experiment, stage) jobs whose ``metrics.json`` a table's or figure's cells
    read, as named in the catalogue (no upstream stages, no rehearsal)."""
    item = config["tables"].get(name) or config["figures"][name]
    cols = registry.columns(plugins(config))
    stages = {cols[c].stage for c in item.get("columns", [])}
    if item.get("stage") is not None:
        stages.add(item["stage"])
    return {(exp, stage) for row in rows(config, item)
            for exp in experiments_of(config, row["run"]) for stage in stages}


def unavailable(config: dict[str, Any], target: str) -> str | None:
    """Why a table or figure cannot be built with this config (None: it can)."""
    item = config["tables"].get(target) or config["figures"].get(target)
    if item is None:
        return f"no table or figure {target!r}"
    kept = rows(config, item)
    if item["rows"] and not kept:
        return f"only_methods {config.get('only_methods')} leaves no row"
    for row in kept:
        reason = run_unavailable(config, row["run"])
        if reason:
            return reason
    cols = registry.columns(plugins(config))
    for col in item.get("columns", []):
        if col not in cols:
            return f"column {col}: no registered stage writes it (known: {', '.join(cols)})"
        stage = registry.stage(cols[col].stage, plugins(config))
        task = dense_task(config, stage.name)
        if stage.job == "dense" and config["data"]["source"] != "synth" \
                and config["data"].get(f"{task}_root") is None:
            return f"column {col}: data.{task}_root is not set"
    return None


def buildable(config: dict[str, Any], kind: str) -> list[str]:
    """Every table (or figure) this config can build."""
    return [n for n in config[kind] if unavailable(config, n) is None]


def experiments(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Job id -> resolved knobs and the catalogue names resolving to it, for every run and
    seed this config can make (the texture sweep's runs on their own datasets last). Names
    that resolve to the same knobs share one id: one job."""
    out: dict[str, dict[str, Any]] = {}
    named = [(n, r) for n, r in runs(config).items() if not run_unavailable(config, n)]
    for name, run in named + list(sweep_runs(config).items()):
        for seed in seeds(config):
            knobs = resolve_run(config, run, seed)
            exp = out.setdefault(run_id(knobs), {**knobs, "names": []})
            exp["names"].append(name)
    return out


def all_runs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The catalogue's runs, the released checkpoints' and the texture sweep's
    (``run@dataset``)."""
    return {**runs(config), **sweep_runs(config)}


# ---------------------------------------------------------------- texture sweep
# data.synth.texture_class_bound: the probability that an image's texture is its class's
# (pixmim.data.generate.synth). Each value is a dataset of its own, named by the value; the texture
# sweep pretrains and probes its two runs on each (`snakemake texture_sweep`).
def texture_bound(config: dict[str, Any]) -> float:
    """The default dataset's ``data.synth.texture_class_bound`` (1: texture is the class's)."""
    return float(config["data"]["synth"].get("texture_class_bound", 1.0))


def texture_dataset(config: dict[str, Any], value: float) -> str:
    """The dataset (a run's ``dataset`` knob) generated with ``texture_class_bound`` value:
    ``default`` at the default dataset's own value, else ``synth_tex{value:g}``."""
    return "default" if float(value) == texture_bound(config) else f"synth_tex{float(value):g}"


def texture_datasets(config: dict[str, Any]) -> dict[str, float]:
    """The texture sweep's datasets other than the default, name -> value."""
    if sweep_unavailable(config):
        return {}
    out = {texture_dataset(config, v): float(v) for v in config[SWEEP]["values"]}
    out.pop("default", None)
    return out


def sweep_unavailable(config: dict[str, Any]) -> str | None:
    """Why the texture sweep cannot be made with this config (None: it can)."""
    if not config.get(SWEEP):
        return f"no {SWEEP} key in the config"
    if config["data"]["source"] != "synth":
        return f"{SWEEP} generates its datasets: it needs data.source: synth"
    for role in ("baseline", "variant"):
        reason = run_unavailable(config, config[SWEEP][role])
        if reason:
            return reason
    return None


def sweep_runs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The texture sweep's runs on datasets other than the default: ``run@dataset`` -> the
    catalogue run with that dataset (on the default dataset they are the catalogue's own)."""
    out = {}
    for ds in texture_datasets(config):
        for role in ("baseline", "variant"):
            name = config[SWEEP][role]
            out[f"{name}@{ds}"] = {**config["runs"][name], "dataset": ds}
    return out


def experiments_of(config: dict[str, Any], run_name: str) -> list[str]:
    """The job ids of a catalogue run, one per seed (in the order of ``seeds``)."""
    reason = run_unavailable(config, run_name)
    if reason:
        raise ConfigError(reason)
    return [run_id(resolve_run(config, runs(config)[run_name], s)) for s in seeds(config)]


def experiment_of(config: dict[str, Any], run_name: str) -> str:
    """The job id of a catalogue run with the first seed."""
    return experiments_of(config, run_name)[0]
