"""What every stage shares: argument parsing, tracker set-up, checkpoints, metrics, and the
fine-tuned classifier's loading and batched inference (robustness, shape bias)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import re
import resource
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import yaml
from torch.utils.data import DataLoader, Dataset

from pixmim import families, registry
from pixmim.config import JobConfig, TrackingConfig, from_dict, load_job_config, to_dict
from pixmim.engine.distributed import DistInfo, barrier, teardown
from pixmim.engine.loop import Preempted, ResumeState, autocast_for, capped
from pixmim.engine.tracking import OFFLINE_LOG, Tracker, fail_open_runs, git_sha
from pixmim.io import atomic_write, read_json, write_json, write_text
from pixmim.models import create_model
from pixmim.models.classifier import load_classifier
from pixmim.models.export import fit_pos_embeds
from pixmim.progress import progress
from pixmim.report.provenance import GIT_COMMIT_TAG, git_dirty, job_data
from pixmim.workflow.jobs import EVAL_SETS


def parse_args(argv: list[str] | None, stage: str) -> tuple[JobConfig, Path]:
    """``--config FILE --out DIR`` -> (validated config, output folder)."""
    p = argparse.ArgumentParser(prog=f"python -m pixmim {stage}")
    p.add_argument("--config", required=True, help="resolved job config (YAML)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--tags", help="YAML mapping of extra MLflow tags (tables, figures, ...)")
    args = p.parse_args(argv)
    cfg = load_job_config(args.config)
    # what the outputs were made from: the workflow keeps a rewritten config that returns
    # to this content older than the outputs (pixmim.workflow.jobs.write_job_config)
    sha = config_sha256(Path(args.config).read_text())
    cfg = dataclasses.replace(cfg, tags={**cfg.tags, "config_sha256": sha})
    if args.tags:
        extra = yaml.safe_load(Path(args.tags).read_text()) or {}
        if not isinstance(extra, dict):
            raise ValueError(f"{args.tags}: tags must be a mapping")
        # where the job logs comes with its tags: not part of what it computes
        tracking = extra.pop("tracking", None)
        if tracking is not None:
            cfg = dataclasses.replace(cfg, tracking=from_dict(TrackingConfig, tracking,
                                                              f"{args.tags}: tracking"))
        cfg = dataclasses.replace(cfg, tags={**cfg.tags, **{str(k): str(v)
                                                             for k, v in extra.items()}})
    registry.use_plugins(cfg.plugins)
    if registry.stage(cfg.stage).module != registry.stage(stage).module:  # finetune_1pct, ...
        raise SystemExit(f"{args.config}: stage is {cfg.stage!r}, expected {stage!r}")
    return cfg, Path(args.out)


def chance_top1(dataset) -> float:
    """Top-1 (%) of the best image-independent guess on ``dataset`` (an ImageFolder):
    always the most frequent class (1 / classes on a balanced split)."""
    counts: dict[int, int] = {}
    for t in dataset.targets:
        counts[t] = counts.get(t, 0) + 1
    return 100.0 * max(counts.values()) / len(dataset.targets)


def binomial_se(percent: float, n: int) -> float:
    """Standard error (points) of a top-1 of ``percent`` measured on ``n`` images: the
    sampling error of the validation split alone, sqrt(p (1 - p) / n)."""
    p = percent / 100.0
    return 100.0 * (p * (1.0 - p) / max(n, 1)) ** 0.5


def config_sha256(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def set_threads() -> None:
    """Honour the thread count the workflow grants a job (OMP_NUM_THREADS)."""
    n = os.environ.get("OMP_NUM_THREADS")
    if n and n.isdigit():
        torch.set_num_threads(int(n))


@contextmanager
def tracked(cfg: JobConfig, out: Path, dist: DistInfo, tags: dict[str, str] | None = None):
    """The job's MLflow run on the main process (None elsewhere), marked FAILED on error."""
    tracker = start_tracker(cfg, out, tags) if dist.is_main else None
    try:
        yield tracker
    except Preempted:
        if tracker:
            tracker.finish("KILLED")  # reopened, and finished, by the resumed job
        raise
    except BaseException:
        if tracker:
            tracker.finish("FAILED")
        raise


def complete(out: Path, metrics: dict[str, Any], tracker: Tracker | None, cfg: JobConfig,
             dist: DistInfo) -> dict[str, Any]:
    """Main process writes the outputs (:func:`finish`); every process then leaves the group.
    Returns the metrics as written (provenance included) on the main process, with the
    number of processes the stage ran as (``world_size``)."""
    metrics = {**metrics, "world_size": metrics.get("world_size", dist.world)}
    if tracker is not None:
        metrics = finish(out, metrics, tracker, cfg)
    barrier(dist)
    teardown(dist)
    return metrics


SEED_SUFFIX = re.compile(r"_s(\d+)$")  # a job id's seed (pixmim.workflow: ``..._s<seed>``)


def compare_key(cfg: JobConfig) -> str:
    """What a baseline's runs share with their variants' runs of the same stage, over every
    seed: the experiment id without the PixMIM knobs and the seed, then the stage
    (``mae-lowpass40-src_vit_cpu_patch8_64_25e_s1`` -> ``mae_vit_cpu_patch8_64_25e/...``;
    the knobs part of an id has no underscore). The seed is a tag of its own (``seed``)."""
    rest = cfg.experiment.split("_", 1)[1] if "_" in cfg.experiment else cfg.experiment
    return f"{cfg.method}_{SEED_SUFFIX.sub('', rest)}/{cfg.stage}"


def run_tags(cfg: JobConfig, tags: dict[str, str] | None = None) -> dict[str, str]:
    """The job's MLflow tags: who it is, its seed, which tables it feeds, whom to compare it
    with (``compare``, across seeds), and a one-line description (``mlflow.note.content``)."""
    variant = cfg.tags.get("variant", "")
    seed = SEED_SUFFIX.search(cfg.experiment)
    base = {"experiment": cfg.experiment, "method": cfg.method, "stage": cfg.stage,
            "arch": cfg.arch, "compare": compare_key(cfg),
            **({"seed": seed.group(1)} if seed else {}), **cfg.tags, **(tags or {})}
    tables = base.get("tables") or "none"
    base.setdefault("mlflow.note.content",
                    f"{cfg.stage} of {cfg.method} ({variant or 'unnamed'} variant, {cfg.arch}) "
                    f"for tables {tables}; compare with tags.compare = '{base['compare']}' "
                    "(every seed; this one: tags.seed)")
    return base


def data_roots(cfg: JobConfig) -> list[str]:
    """The dataset folders the job reads, by its stage's declared data (``images``: the
    image root and masks; ``views``: the evaluation sets; ``scenes``: the dense root)."""
    kind = registry.stage(cfg.stage).data
    found = {"images": [cfg.data.root, cfg.data.masks_root],
             "views": [getattr(cfg.eval, k) for k in EVAL_SETS],
             "scenes": [cfg.dense.root]}.get(kind or "", [])
    return [r for r in found if r]


# what a job's run was made from, kept in <out>/_state from its start until metrics.json
PROVENANCE = "provenance.json"
PROVENANCE_KEYS = ("git_commit", "git_dirty", "data_fingerprint", "data_fingerprints",
                   "data_sources")


def provenance(cfg: JobConfig) -> dict[str, Any]:
    """The job's commit (``git_commit``, ``git_dirty``) and data fingerprint
    (``data_fingerprint``, ``data_fingerprints``) now. The fingerprints are read from the
    datasets' ``fingerprint.json``, not recomputed."""
    return {"git_commit": git_sha(), "git_dirty": git_dirty(), **job_data(data_roots(cfg))}


def recorded_provenance(out: Path) -> dict[str, Any] | None:
    """The provenance :func:`start_tracker` recorded for the job's run (None: none)."""
    f = out / "_state" / PROVENANCE
    return read_json(f) if f.is_file() else None


def provenance_tags(prov: dict[str, Any]) -> dict[str, str]:
    """MLflow tags of a provenance: the standard commit tag, ``git_dirty``,
    ``data_fingerprint``."""
    dirty = prov["git_dirty"]
    return {GIT_COMMIT_TAG: prov["git_commit"],
            "git_dirty": "unknown" if dirty is None else str(dirty).lower(),
            "data_fingerprint": prov["data_fingerprint"]}


def start_tracker(cfg: JobConfig, out: Path, tags: dict[str, str] | None = None) -> Tracker:
    """Start (or, for a resumed job, reopen) this job's MLflow run, tagged with its
    provenance (:func:`provenance`), which is kept for :func:`finish`."""
    state = ResumeState(out).load()
    run_id = (state or {}).get("mlflow_run_id") or None
    kept = recorded_provenance(out) if run_id else None
    fresh = not kept or kept.get("mlflow_run_id") != run_id  # a resumed job keeps its run's
    prov = provenance(cfg) if fresh else kept
    ptags = provenance_tags(prov)
    tracker = Tracker(cfg.tracking, f"{cfg.experiment}/{cfg.stage}",
                      run_tags(cfg, {**(tags or {}), **ptags}), to_dict(cfg), run_id=run_id,
                      offline_log=out / OFFLINE_LOG)
    if run_id and fresh:  # a reopened run: tags are set at creation only
        tracker.set_tags(ptags)
    write_json(out / "_state" / PROVENANCE, {**prov, "mlflow_run_id": tracker.run_id})
    return tracker


def save_model(path: Path, model: torch.nn.Module | dict[str, torch.Tensor],
               meta: dict[str, Any]) -> None:
    """Atomically save ``{"model": state_dict, "meta": meta}`` (loads with weights_only);
    ``model`` is a module or its state dict."""
    weights = model.state_dict() if isinstance(model, torch.nn.Module) else model
    state = {"model": weights, "meta": meta}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_model_file(path: Path) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)``; a file that is not a tensors-only
    checkpoint (pickled objects, not a torch file) raises ValueError naming it. The one
    object allowed is an ``argparse.Namespace`` of plain values: the training scripts of
    facebookresearch/mae, Alpha-VL/ConvMAE and long_seq_mae save their ``args`` beside
    ``model`` (``util/misc.py`` ``save_model``)."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        cause = (str(err).strip().splitlines() or [""])[0]
        raise ValueError(f"{path}: not a checkpoint that loads with weights_only=True "
                         f"({type(err).__name__}: {cause})") from None


def build_pretrained(meta: dict[str, Any], img_size: int | None = None) -> torch.nn.Module:
    """The pretraining model described by a checkpoint's ``meta`` (method, arch and the
    exact model keywords it was trained with: variant, masking, input size), at
    ``img_size`` px when given (None: the size it was trained at)."""
    if "model_kwargs" not in meta:
        raise ValueError(f"checkpoint of {meta.get('experiment', meta.get('method'))}: its meta "
                         "has no model_kwargs (an older pixmim wrote it): rerun its pretraining")
    kwargs = dict(meta["model_kwargs"])
    if img_size is not None:
        kwargs["img_size"] = img_size
    return create_model(meta["method"], meta["arch"], **kwargs)


def load_pretrain_checkpoint(cfg: JobConfig, pretrain_dir: Path) -> dict[str, Any]:
    """A pretraining checkpoint, checked to be of the config's method and arch."""
    path = pretrain_dir / "checkpoint.pth"
    ckpt = load_model_file(path)
    meta = ckpt.get("meta") if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or "model" not in ckpt:
        raise ValueError(f"{path}: not a pixmim pretraining checkpoint (no model + meta "
                         f"entries); config asks for {cfg.method}/{cfg.arch}")
    if (meta.get("method"), meta.get("arch")) != (cfg.method, cfg.arch):
        raise ValueError(f"{path}: checkpoint is {meta.get('method')}/{meta.get('arch')}, "
                         f"config asks for {cfg.method}/{cfg.arch}")
    return ckpt


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], method: str,
                 encoder_only: bool, where: str) -> None:
    """Pretraining weights into ``model``, strictly; an encoder-only state (a released
    encoder) may lack the method's pretraining-only parameters, which keep their
    initialisation and must not be read. A mismatch is a ValueError naming ``where``."""
    missing, unexpected = model.load_state_dict(fit_pos_embeds(state, model), strict=False)
    allowed = families.pretrain_only(method) if encoder_only else ()
    wrong = [k for k in missing if not k.startswith(allowed)]
    if wrong or unexpected:
        raise ValueError(f"{where}: weights do not load into {method}: missing {wrong[:4]}, "
                         f"unexpected {list(unexpected)[:4]}")


def released_state(cfg: JobConfig, kind: str, num_classes: int | None = None
                   ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The fetched file of ``cfg.released`` in our ``kind`` of state dict, converted by the
    method's family (``formats``), and the family's report of it (``encoder_only``, what
    was dropped): a file of another format, kind, arch or class count is a ValueError of
    one line naming the missing and unexpected keys."""
    r = cfg.released
    fmt = families.formats_of(cfg.method)
    if r.format not in fmt.FORMATS:
        raise ValueError(f"checkpoints.{r.name}.format: {r.format!r} is not a format of "
                         f"{cfg.method}'s encoder family (known: {', '.join(fmt.FORMATS)})")
    raw = load_model_file(Path(r.file))
    try:
        return fmt.to_ours(raw, r.format, kind, cfg.method, cfg.arch, num_classes)
    except ValueError as err:  # the family's FormatError
        raise ValueError(f"{r.file} (checkpoints.{r.name}, declared {kind}): {err}") from None


def load_encoder(cfg: JobConfig, pretrain_dir: Path,
                 ckpt: dict[str, Any] | None = None) -> torch.nn.Module:
    """Rebuild the pretraining model from its checkpoint's meta and load its weights (frozen,
    eval mode): the variant is the checkpoint's, not re-derived from the config; the input
    size is the job's (``data.img_size``), the position grid resampled when it differs
    from the pretraining's (LSMAE: 448 -> 224). ``ckpt``: the checkpoint when the caller has
    already loaded it."""
    ckpt = ckpt or load_pretrain_checkpoint(cfg, pretrain_dir)
    model = build_pretrained(ckpt["meta"], cfg.data.img_size)
    load_weights(model, ckpt["model"], cfg.method, bool(ckpt["meta"].get("encoder_only")),
                 str(pretrain_dir / "checkpoint.pth"))
    model.requires_grad_(False).eval()
    return model


def parent_tags(upstream_dir: Path, kind: str) -> tuple[str, dict[str, str]]:
    """The MLflow run id in ``upstream_dir/metrics.json`` and the tags that nest this run
    under it (``{kind}_run_id``, ``mlflow.parentRunId``); empty when it names none."""
    f = upstream_dir / "metrics.json"
    run_id = (read_json(f).get("mlflow_run_id") or "") if f.is_file() else ""
    return run_id, ({f"{kind}_run_id": run_id, "mlflow.parentRunId": run_id} if run_id else {})


def finetune_tags(finetune_dir: Path) -> dict[str, str]:
    """MLflow tags nesting this run under the fine-tune run (when its metrics name one)."""
    return parent_tags(finetune_dir, "finetune")[1]


def load_model(cfg: JobConfig, dist) -> nn.Module:
    """The fine-tuned classifier of ``cfg.finetune_dir`` on the job's device."""
    if cfg.finetune_dir is None:
        raise ValueError(f"finetune_dir: the {cfg.stage} stage needs a fine-tune output folder")
    return load_classifier(Path(cfg.finetune_dir) / "model.pth", dist.device)


@torch.no_grad()
def batches(model: nn.Module, ds: Dataset, cfg: JobConfig, device: torch.device,
            desc: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(logits [B, 1000] float32, targets [B])`` on ``device``, batch by batch (the
    first ``eval.max_batches``; 0: all)."""
    loader = DataLoader(ds, batch_size=cfg.eval.batch_size, shuffle=False,
                        num_workers=cfg.eval.num_workers, pin_memory=device.type == "cuda")
    cast = autocast_for(cfg.train, device)
    for x, y in capped(progress(loader, desc, leave=False, unit="batch"), cfg.eval.max_batches):
        with cast:
            logits = model(x.to(device, non_blocking=True))
        yield logits.float(), y.to(device)


def resources(tracker: Tracker, world: int) -> dict[str, float]:
    """What the job used, measured on its main process when it finishes: ``wall_s`` since
    its run started (a resumed job: since it resumed), ``peak_host_mem_mb`` (the largest
    peak RSS of the process and of its finished children, the data loader workers),
    ``peak_gpu_mem_mb`` (``torch.cuda.max_memory_allocated`` of its GPU; absent off GPU),
    ``gpus`` and ``gpu_hours`` (processes x wall, one GPU each; 0 off GPU) and
    ``images_per_s`` (the mean of the training loop's epochs; absent for a stage that
    trains nothing)."""
    wall = time.monotonic() - tracker.started
    peak_kb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)  # KiB on Linux
    on_gpu = torch.cuda.is_available() and torch.cuda.is_initialized()
    used = {"wall_s": wall, "peak_host_mem_mb": peak_kb / 1024}
    if on_gpu:
        used["peak_gpu_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
    gpus = world if on_gpu else 0
    used.update(gpus=gpus, gpu_hours=gpus * wall / 3600)
    if tracker.images_per_s:
        used["images_per_s"] = sum(tracker.images_per_s) / len(tracker.images_per_s)
    return used


def finish(out: Path, metrics: dict[str, Any], tracker: Tracker,
           cfg: JobConfig) -> dict[str, Any]:
    """Write ``metrics.json`` atomically, attach artifacts, close the run, drop resume state;
    returns what was written.

    The resolved config (defaults filled in) is saved beside the outputs and in MLflow;
    ``metrics.json`` also records the run's provenance (:data:`PROVENANCE_KEYS`) and what
    it used (``resources``: :func:`resources`, also MLflow metrics ``resources/<key>``).
    """
    resolved = out / "config.resolved.yaml"
    write_text(resolved, yaml.safe_dump(to_dict(cfg), sort_keys=False))
    if "config_sha256" in cfg.tags:
        metrics = {**metrics, "config_sha256": cfg.tags["config_sha256"]}
    prov = recorded_provenance(out) or provenance(cfg)
    # (data_sources: absent from a run started before it was recorded)
    metrics = {**metrics, **{k: prov.get(k) for k in PROVENANCE_KEYS}}
    used = resources(tracker, metrics.get("world_size", 1))
    tracker.log_metrics({f"resources/{k}": v for k, v in used.items()}, 0)
    metrics = {**metrics, "resources": used}
    write_json(out / "metrics.json", metrics)
    for f in (resolved, out / "metrics.json"):
        tracker.log_artifact(f)
    tracker.finish("FINISHED")
    shutil.rmtree(out / "_state", ignore_errors=True)
    return metrics


def run_main(stage: str, run, argv: list[str] | None) -> int:
    cfg, out = parse_args(argv, stage)
    set_threads()
    try:
        metrics = run(cfg, out)
    except BaseException:
        fail_open_runs()  # a run the stage left open (an error after its tracked block)
        raise
    print(f"[{stage}] {cfg.experiment}: " + ", ".join(
        f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)), file=sys.stderr)
    return 0
