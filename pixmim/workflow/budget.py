"""``python -m pixmim budget``: the GPU-hours each target still needs (torch-free).

    python -m pixmim budget --configfile config/paper.yaml [TARGET ...]

TARGET is a table or figure of the catalogue (``table5a``, ``fig7``) or its output file
(``results/tables/table5a.csv``); none: the config's ``targets``. Jobs whose outputs exist
count zero, and a job several targets share is counted once in the total.

Every job is printed with its layout, from its resolved config (:func:`pixmim.workflow.jobs.
layout`): nodes, GPUs per node, per-GPU batch, accumulation and effective batch. Its
GPU-hours are its images over one GPU's throughput, i.e. nodes x GPUs x its wall hours
(``wall_hours``: data-parallel scaling assumed linear).

Pretraining hours come from the pretraining benchmark's images/s on one GPU
(``benchmarks/results/*.json``, the config's precision) for the run's method and arch,
times the catalogue's epochs and the dataset's size. Each figure says what it is
(:class:`Figure`, listed by the CLI): *measured* when a result exists at the pretraining
job's per-GPU batch (its layout's; MAE at paper scale: 4096 / (1 node x 8 GPUs) = 512,
mmselfsup's ``8xb512`` configs), with its batch, GPU, torch version and source file;
*assumed* when it was measured at another batch (taken as is) or for another arch (scaled
from ViT-B by the FLOPs of a pretraining step, counted by each encoder family:
:mod:`pixmim.families`). The other stages run at the same FLOP rate on their own FLOPs per
image: the encoder's forward at the stage's input size, three times for a training stage
(``cost``: ``passes``), times the task heads' share for the dense stages (``heads``, an
assumption each stage states).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pixmim import families, registry
from pixmim.config import ConfigError
from pixmim.workflow.catalogue import (
    ROOT,
    experiments,
    load_config,
    plugins,
    released_runs,
    released_stage,
    resolve_run,
    run_id,
    seeds,
)
from pixmim.workflow.jobs import job_config, layout, pretrain_size, run_dir
from pixmim.workflow.schema import validate_config
from pixmim.workflow.specs import target_jobs

BENCHMARKS = ROOT / "benchmarks" / "results"
# Training images per epoch (ImageNet-1K train: 1,281,167; Places365-Standard: 1,803,460).
DATASET_IMAGES = {"default": 1_281_167, "places365": 1_803_460}
# A released fine-tuned or probe checkpoint's job evaluates it once on the validation set
# (ImageNet-1K val: 50,000 images), forward only: nothing is trained.
RELEASED_EVAL = {"kind": "images", "images": 50_000, "passes": "forward"}
# How a stage's images are counted and whether it trains (forward + backward) is declared
# by the stage (pixmim.registry: cost), beside what it reads.


def job_layout(config: dict[str, Any], job: dict[str, Any]) -> dict[str, int]:
    """A resolved job's layout (nodes, gpus per node, per-GPU batch, accumulation, batch)
    and the GPUs it holds (``gpus_total``: nodes x GPUs per node; one for a one-process
    job, which runs on one GPU at paper scale)."""
    lay = layout(job, registry.stage(job["stage"], plugins(config)))
    return {**lay, "gpus_total": lay["processes"]}


@dataclass(frozen=True)
class Figure:
    """One benchmark measurement: one GPU's pretraining images/s and where it came from."""

    images_per_s: float
    batch: int
    device: str  # the GPU's name, or "cuda (GPU not recorded)" for older results
    torch: str
    source: str  # file under benchmarks/results

    def describe(self) -> str:
        return (f"{self.images_per_s:.0f} img/s at batch {self.batch} on {self.device}, "
                f"torch {self.torch} ({self.source})")


@cache
def measured() -> dict[tuple[str, str, str], tuple[Figure, ...]]:
    """(method, arch, precision) -> every one-GPU result of the benchmark files, best
    first per batch (read once per process, not once per job)."""
    found: dict[tuple[str, str, str], dict[int, Figure]] = {}
    for f in sorted(BENCHMARKS.glob("*.json")):
        data = json.loads(f.read_text())
        if data.get("device") != "cuda":
            continue
        device = data.get("device_name") or "cuda (GPU not recorded)"
        for s in data.get("steps", []):
            fig = Figure(float(s["images_per_s"]), int(s["batch"]), device,
                         str(data.get("torch", "?")), f.name)
            per_batch = found.setdefault((s["method"], s["arch"], s["precision"]), {})
            if fig.batch not in per_batch or fig.images_per_s > per_batch[fig.batch].images_per_s:
                per_batch[fig.batch] = fig
    return {k: tuple(v[b] for b in sorted(v)) for k, v in found.items()}


def _at_batch(figures: tuple[Figure, ...], batch: int) -> tuple[Figure, bool]:
    """The figure at ``batch`` (exact: True), else the one at the nearest batch."""
    best = min(figures, key=lambda f: (abs(f.batch - batch), -f.batch))
    return best, best.batch == batch


def flops_vs_vit_b(method: str, arch: str) -> float:
    """FLOPs of one image's pretraining step of ``method``'s ``arch`` relative to MAE
    ViT-B/16's, each counted by its encoder family (:mod:`pixmim.families`)."""
    return (families.pretrain_flops(method, arch)
            / families.pretrain_flops("mae", "vit_base_patch16_224"))


def throughput(method: str, arch: str, precision: str, ref_arch: str,
               batch: int | None = None) -> tuple[float, str]:
    """One GPU's pretraining images/s at per-GPU ``batch`` and its basis, which starts with
    ``measured`` only for a result of this method, arch, precision and batch; else the
    nearest batch (assumed equal), or the method's ``ref_arch`` (its catalogue arch) or MAE
    ViT-B scaled by encoder FLOPs (assumed)."""
    best = measured()
    if (method, arch, precision) in best:
        fig, exact = _at_batch(best[(method, arch, precision)], batch or 0)
        what = f"{method} {arch} {precision}"
        if exact or batch is None:
            return fig.images_per_s, f"measured: {what}: {fig.describe()}"
        return fig.images_per_s, (f"assumed: {what}: per-GPU batch {batch} not measured; "
                                  f"taken from {fig.describe()}")
    ref = best.get((method, ref_arch, precision)) or best.get(("mae", "vit_base_patch16_224",
                                                            precision))
    if ref is None:
        raise ConfigError(f"no pretraining benchmark for {method}/{arch}/{precision} in "
                          f"{BENCHMARKS}: run benchmarks/pretrain_step.py on a GPU")
    fig, exact = _at_batch(ref, batch or 0)
    flops = flops_vs_vit_b(method, arch)
    at = "" if exact or batch is None else f" (per-GPU batch {batch} not measured)"
    return fig.images_per_s / flops, (f"assumed: {method} {arch} {precision}: scaled by "
                                      f"pretraining-step FLOPs x{flops:.2f} from "
                                      f"{fig.describe()}{at}")


def _done(config: dict[str, Any], exp: str, stage: str) -> bool:
    d = Path(run_dir(config, exp, stage))
    return all((d / n).is_file() for n in registry.stage(stage, plugins(config)).outputs)


def jobs_of(config: dict[str, Any], target: str) -> set[tuple[str, str]]:
    """(experiment, stage) jobs a table or figure needs, its pretraining included."""
    return target_jobs(config, target)


def job_hours(config: dict[str, Any], exps: dict[str, dict[str, Any]], exp: str,
              stage: str) -> tuple[float, str]:
    """GPU-hours of one job: its images (read from its resolved job config: epochs,
    fraction, iterations, seeds) over its throughput: the pretraining throughput of its
    method and arch, scaled by FLOPs per image (pretraining step / the stage's)."""
    spec, knobs = registry.stage(stage, plugins(config)), exps[exp]
    if knobs.get("checkpoint") and spec.consumes is None:
        return 0.0, f"released checkpoint {knobs['checkpoint']}: fetched, not pretrained"
    # a released fine-tune or probe: fetched, evaluated on the validation set, not trained
    imported = bool(knobs.get("checkpoint")) and released_stage(
        config, knobs["checkpoint"]) == stage
    job = job_config(config, exp, stage, exps)
    precision = config["pretrain"].get("precision", "fp32")
    ref_arch = config["default_archs"].get(knobs["method"], knobs["arch"])
    # the step the figures time is pretraining's, at its per-GPU batch, whatever the stage
    # (a released checkpoint's: that of the same run pretrained here)
    pre = job if stage == "pretrain" else job_config(
        config, exp, "pretrain", exps if not knobs.get("checkpoint") else
        {**exps, exp: {k: v for k, v in knobs.items() if k != "checkpoint"}})
    batch = job_layout(config, pre)["per_gpu_batch"]
    ips, how = throughput(knobs["method"], knobs["arch"], precision, ref_arch, batch)
    images = DATASET_IMAGES.get(knobs["dataset"], DATASET_IMAGES["default"])
    cost = RELEASED_EVAL if imported else spec.cost
    kind = cost.get("kind", "images")
    if kind == "pretrain":
        return images * job["train"]["epochs"] / ips / 3600, how
    # Another stage runs at the pretraining step's FLOP rate on its own FLOPs per image:
    # the encoder's forward at the stage's input size (the family counts it), three times
    # for a training step (forward + backward), times the task heads' share (dense).
    size = job["dense"]["crop_size"] if "dense" in job else job.get("data", {}).get("img_size")
    step = families.pretrain_flops(knobs["method"], knobs["arch"], job_mask_ratio(pre))
    # A stage evaluated at another size than the pretraining's (LSMAE: 448 -> 224) runs at
    # MAE ViT-B's FLOP rate at 224: a long-sequence step's rate says nothing of 224 px.
    if size != pretrain_size(config, knobs["method"], knobs["arch"]):
        ips, how = throughput("mae", "vit_base_patch16_224", precision, "vit_base_patch16_224",
                              batch)
        step = families.pretrain_flops("mae", "vit_base_patch16_224")
        how = f"{how}; MAE ViT-B's FLOP rate at 224 px"
    per_image = (families.forward_flops(knobs["method"], knobs["arch"], size)
                 * (3 if cost.get("passes") == "train" else 1) * cost.get("heads", 1.0))
    ips *= step / per_image
    if kind == "epochs":
        frac = job.get("finetune", {}).get("fraction", 1.0)
        n = images * frac * job["train"]["epochs"]
    elif kind == "iters":
        d = job["dense"]
        n = d["iters"] * d["batch_size"] * d.get("runs", 1)
    else:
        n = cost.get("images", 50_000)
    what = f"released checkpoint {knobs['checkpoint']}: evaluated, not trained; " \
        if imported else ""
    return n / ips / 3600, (f"{how} | {what}{spec.name}: {cost.get('passes', 'forward')} FLOPs at "
                            f"{size} px x{per_image / step:.2f} a pretraining image's"
                            + (f", heads x{cost['heads']} assumed" if "heads" in cost else ""))


def job_mask_ratio(pre: dict[str, Any]) -> float:
    """The mask ratio of a resolved pretraining job (MAE's 0.75 when it names none)."""
    return float(pre.get("mask_ratio", 0.75))


def stand_ins(config: dict[str, Any]) -> dict[str, list[str]]:
    """Pretraining job id -> the released pretrained checkpoints (``checkpoints``) that stand
    for it: the same resolved knobs (method, arch, epochs, dataset, target and its radius,
    crop), first seed; the released file is one pretraining, so it stands for one seed."""
    out: dict[str, list[str]] = {}
    for name, run in released_runs(config).items():
        if released_stage(config, name) != "pretrain":  # a classifier or a probe: no stand-in
            continue
        knobs = resolve_run(config, run, seeds(config)[0])
        del knobs["checkpoint"]
        out.setdefault(run_id(knobs), []).append(name)
    return out


def budget(config: dict[str, Any], targets: list[str]) -> dict[str, Any]:
    """Per target, each job's layout and GPU-hours; the total (shared jobs once); and what
    the released checkpoints save: ``with_released``, the hours with each pretraining that a
    released checkpoint stands for (:func:`stand_ins`) fetched instead of run (the jobs
    that consume it cost the same on the released file)."""
    per_target, all_jobs, saved = {}, {}, {}
    exps = experiments(config)  # resolved once, not per job
    standing = stand_ins(config)
    for t in targets:
        rows = []
        for exp, stage in sorted(jobs_of(config, t)):
            done = _done(config, exp, stage)
            hours, how = (0.0, "done") if done else job_hours(config, exps, exp, stage)
            all_jobs[(exp, stage)] = hours
            lay = job_layout(config, job_config(config, exp, stage, exps))
            rows.append({"experiment": exp, "stage": stage, "nodes": lay["nodes"],
                         "gpus_per_node": max(lay["gpus"], 1),
                         "per_gpu_batch": lay["per_gpu_batch"],
                         "accum_steps": lay["accum_steps"], "batch_size": lay["batch_size"],
                         "gpu_hours": hours, "wall_hours": hours / lay["gpus_total"],
                         "basis": how})
            if stage == "pretrain" and exp in standing:
                rows[-1]["released"] = standing[exp]
                saved[(exp, stage)] = hours
        per_target[t] = rows
    bases = sorted({r["basis"].split(" | ")[0] for rows in per_target.values()
                    for r in rows if r["gpu_hours"] > 0})
    return {"targets": per_target, "total_gpu_hours": sum(all_jobs.values()),
            "with_released": {t: sum(r["gpu_hours"] for r in rows if "released" not in r)
                              for t, rows in per_target.items()},
            "total_with_released": sum(all_jobs.values()) - sum(saved.values()),
            "jobs": len(all_jobs), "pending": sum(h > 0 for h in all_jobs.values()),
            "throughput": {"measured": [b for b in bases if b.startswith("measured")],
                           "assumed": [b for b in bases if not b.startswith("measured")]}}


def _target_name(t: str) -> str:
    """``results/tables/table5a.csv`` -> ``table5a``; ``fig7_epochs.png`` -> ``fig7``."""
    stem = Path(t).stem
    return stem.split("_")[0] if stem.startswith("fig") else stem


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pixmim budget",
                                description="GPU-hours each target still needs")
    p.add_argument("--configfile", action="append", default=[],
                   help="config file(s) merged over the default, as snakemake's --configfile")
    p.add_argument("--json", action="store_true", help="print the full breakdown as JSON")
    p.add_argument("targets", nargs="*", help="tables / figures (names or output files)")
    args = p.parse_args(argv)
    config = load_config(*args.configfile)
    validate_config(config)
    targets = [_target_name(t) for t in args.targets] or list(config["targets"])
    result = budget(config, targets)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    rel = result["with_released"]
    swapped = sorted({(r["experiment"], ", ".join(r["released"]))
                      for rows in result["targets"].values() for r in rows if "released" in r})
    extra = f" {'w/ released':>12}" if swapped else ""
    print(f"{'target':<10} {'jobs':>5} {'pending':>8} {'GPU-hours':>10}{extra}")
    for t, rows in result["targets"].items():
        pending = [r for r in rows if r["gpu_hours"] > 0]
        extra = f" {rel[t]:>12.1f}" if swapped else ""
        print(f"{t:<10} {len(rows):>5} {len(pending):>8} "
              f"{sum(r['gpu_hours'] for r in rows):>10.1f}{extra}")
    extra = f" {result['total_with_released']:>12.1f}" if swapped else ""
    print(f"{'total':<10} {result['jobs']:>5} {result['pending']:>8} "
          f"{result['total_gpu_hours']:>10.1f}{extra}   (shared jobs counted once)")
    if swapped:
        print("w/ released: each pretraining below fetched from a released checkpoint "
              "(config key checkpoints) instead of run; point a row's run at the checkpoint's "
              "name to build the table so:", file=sys.stderr)
        for exp, names in swapped:
            print(f"  {exp} <- {names}", file=sys.stderr)
    tp = result["throughput"]
    print("throughput figures (one GPU, at the pretraining job's per-GPU batch; --json: "
          "each job's nodes, GPUs, per-GPU batch and accumulation):", file=sys.stderr)
    for kind in ("measured", "assumed"):
        for basis in tp[kind]:
            print(f"  {basis}", file=sys.stderr)
    print("other stages: their encoder FLOPs per image (pixmim.families) at the pretraining "
          "step's FLOP rate; dense heads' share assumed (pixmim.registry: cost)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
