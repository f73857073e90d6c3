"""``python -m pixmim budget``: the GPU-hours each target still needs (torch-free).

    python -m pixmim budget --configfile config/paper.yaml [TARGET ...]

TARGET is a table or figure of the catalogue (``table5a``, ``fig7``) or its output file
(``results/tables/table5a.csv``); none: the config's ``targets``. Jobs whose outputs exist
count zero, and a job several targets share is counted once in the total.

Pretraining hours come from measured throughput: the images/s of the pretraining benchmark
(``benchmarks/results/*.json``, one GPU, the config's precision) for the run's method and
arch, times the catalogue's epochs and the dataset's size. Archs the benchmark did not
measure are scaled from ViT-B by encoder FLOPs (depth x width^2). The other stages are
estimated from the same throughput with the relative costs each stage declares
(``pixmim.registry``: ``cost``), which are assumptions
(stated in the output), not measurements.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import cache
from pathlib import Path
from typing import Any

from pixmim import registry
from pixmim.config import ConfigError
from pixmim.workflow.catalogue import (
    ROOT,
    experiments,
    load_config,
    plugins,
    validate_config,
)
from pixmim.workflow.jobs import job_config, pretrain_size, run_dir
from pixmim.workflow.specs import target_jobs

BENCHMARKS = ROOT / "benchmarks" / "results"
# Training images per epoch (ImageNet-1K train: 1,281,167; Places365-Standard: 1,803,460).
DATASET_IMAGES = {"default": 1_281_167, "places365": 1_803_460}
# The relative cost of an image through each stage (an assumption) is declared by the stage
# (pixmim.registry: cost), beside what it reads.


@cache
def measured() -> dict[tuple[str, str, str], float]:
    """(method, arch, precision) -> the best one-GPU pretraining images/s of the benchmark
    results (read once per process, not once per job)."""
    best: dict[tuple[str, str, str], float] = {}
    for f in sorted(BENCHMARKS.glob("*.json")):
        data = json.loads(f.read_text())
        if data.get("device") != "cuda":
            continue
        for s in data.get("steps", []):
            key = (s["method"], s["arch"], s["precision"])
            best[key] = max(best.get(key, 0.0), float(s["images_per_s"]))
    return best


def throughput(method: str, arch: str, precision: str, ref_arch: str) -> tuple[float, str]:
    """Measured pretraining images/s on one GPU; else the method's measured ``ref_arch``
    (its catalogue arch) or MAE ViT-B's, scaled by encoder FLOPs."""
    best = measured()
    if (method, arch, precision) in best:
        return best[(method, arch, precision)], "measured"
    ref = best.get((method, ref_arch, precision)) or best.get(("mae", "vit_base_patch16_224",
                                                            precision))
    if ref is None:
        raise ConfigError(f"no pretraining benchmark for {method}/{arch}/{precision} in "
                          f"{BENCHMARKS}: run benchmarks/pretrain_step.py on a GPU")
    a = registry.method(method).archs.get(arch, {})
    b = registry.method("mae").archs["vit_base_patch16_224"]
    flops = (a.get("depth", 12) * a.get("embed_dim", 768) ** 2
             * (a.get("img_size", 224) / 224) ** 2) / (b["depth"] * b["embed_dim"] ** 2)
    return ref / flops, f"scaled from {ref_arch} by FLOPs x{flops:.2f}"


def _done(config: dict[str, Any], exp: str, stage: str) -> bool:
    d = Path(run_dir(config, exp, stage))
    return all((d / n).is_file() for n in registry.stage(stage, plugins(config)).outputs)


def jobs_of(config: dict[str, Any], target: str) -> set[tuple[str, str]]:
    """(experiment, stage) jobs a table or figure needs, its pretraining included."""
    return target_jobs(config, target)


def job_hours(config: dict[str, Any], exps: dict[str, dict[str, Any]], exp: str,
              stage: str) -> tuple[float, str]:
    """GPU-hours of one job: its images (read from its resolved job config: epochs,
    fraction, iterations, seeds) times the stage's declared relative cost, over the
    measured pretraining throughput of its method and arch."""
    spec, knobs = registry.stage(stage, plugins(config)), exps[exp]
    job = job_config(config, exp, stage, exps)
    precision = config["pretrain"].get("precision", "fp32")
    ref_arch = config["default_archs"].get(knobs["method"], knobs["arch"])
    ips, how = throughput(knobs["method"], knobs["arch"], precision, ref_arch)
    images = DATASET_IMAGES.get(knobs["dataset"], DATASET_IMAGES["default"])
    cost = spec.cost
    kind, relative = cost.get("kind", "images"), cost.get("relative", 1.0)
    if kind == "pretrain":
        return images * job["train"]["epochs"] / ips / 3600, how
    # An evaluation at another size than the pretraining's (LSMAE: pretrained at 448,
    # evaluated at 224) is costed as MAE's ViT-B step at 224 scaled by the encoder's FLOPs
    # at that size: the long-sequence pretraining step says nothing of a 224-px encoder.
    size = job.get("data", {}).get("img_size", 224)
    if size != pretrain_size(config, knobs["method"], knobs["arch"]):
        ips, how = throughput("mae", "vit_base_patch16_224", precision, "vit_base_patch16_224")
        a = registry.method(knobs["method"]).archs.get(knobs["arch"], {})
        b = registry.method("mae").archs["vit_base_patch16_224"]
        ips /= (a.get("depth", 12) * a.get("embed_dim", 768) ** 2 * (size / 224) ** 2
                / (b["depth"] * b["embed_dim"] ** 2))
        how = f"{how}; MAE ViT-B at {size} px scaled by encoder FLOPs"
    if kind == "epochs":
        frac = job.get("finetune", {}).get("fraction", 1.0)
        n = images * frac * job["train"]["epochs"] * relative
    elif kind == "iters":
        d = job["dense"]
        runs = d.get("runs", 1)
        n = d["iters"] * d["batch_size"] * runs * relative
    else:
        n = cost.get("images", 50_000) * relative
    return n / ips / 3600, f"{how}; relative cost assumed"


def budget(config: dict[str, Any], targets: list[str]) -> dict[str, Any]:
    per_target, all_jobs = {}, {}
    exps = experiments(config)  # resolved once, not per job
    for t in targets:
        rows = []
        for exp, stage in sorted(jobs_of(config, t)):
            done = _done(config, exp, stage)
            hours, how = (0.0, "done") if done else job_hours(config, exps, exp, stage)
            all_jobs[(exp, stage)] = hours
            rows.append({"experiment": exp, "stage": stage, "gpu_hours": hours, "basis": how})
        per_target[t] = rows
    return {"targets": per_target, "total_gpu_hours": sum(all_jobs.values()),
            "jobs": len(all_jobs), "pending": sum(h > 0 for h in all_jobs.values())}


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
    print(f"{'target':<10} {'jobs':>5} {'pending':>8} {'GPU-hours':>10}")
    for t, rows in result["targets"].items():
        pending = [r for r in rows if r["gpu_hours"] > 0]
        print(f"{t:<10} {len(rows):>5} {len(pending):>8} "
              f"{sum(r['gpu_hours'] for r in rows):>10.1f}")
    print(f"{'total':<10} {result['jobs']:>5} {result['pending']:>8} "
          f"{result['total_gpu_hours']:>10.1f}   (shared jobs counted once)")
    print("pretraining: measured throughput (benchmarks/results, one GPU); other stages: "
          "relative costs assumed in pixmim/workflow/budget.py", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
