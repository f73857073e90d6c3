"""``python -m pixmim budget``: the GPU-hours each target still needs (torch-free).

    python -m pixmim budget --configfile config/paper.yaml [TARGET ...]

TARGET is a table or figure of the catalogue (``table5a``, ``fig7``) or its output file
(``results/tables/table5a.csv``); none: the config's ``targets``. Jobs whose outputs exist
count zero, and a job several targets share is counted once in the total.

Pretraining hours come from measured throughput: the images/s of the pretraining benchmark
(``benchmarks/results/*.json``, one GPU, the config's precision) for the run's method and
arch, times the catalogue's epochs and the dataset's size. Archs the benchmark did not
measure are scaled from ViT-B by encoder FLOPs (depth x width^2). The other stages are
estimated from the same throughput with the relative costs below, which are assumptions
(stated in the output), not measurements.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pixmim.config import ConfigError
from pixmim.workflow import (
    DENSE,
    ROOT,
    experiments,
    figure_spec,
    load_config,
    run_dir,
    table_spec,
    validate_config,
)

BENCHMARKS = ROOT / "benchmarks" / "results"
# Training images per epoch (ImageNet-1K train: 1,281,167; Places365-Standard: 1,803,460).
DATASET_IMAGES = {"default": 1_281_167, "places365": 1_803_460}
# Cost of one image through a stage relative to one pretraining image (assumptions): the
# probe runs the frozen encoder forward on all tokens (4x MAE's visible 25%, ~1/3 of a
# training step); fine-tuning trains it on all tokens; the dense stages train on 512 px
# (seg) / 1024 px (det) crops, (512/224)^2 = 5.2 and (1024/224)^2 = 21 times the tokens.
RELATIVE_COST = {"linear_probe": 1.3, "finetune": 4.0, "segment_ade20k": 16.0,
                 "detect_coco": 64.0, "evaluate": 1.3, "frequency": 0.3}
# Images an evaluation stage reads (IN-C: 50k x 75; IN-A 7.5k, IN-R 30k, IN-S 50k; cue-conflict
# 1280; the frequency analysis: ImageNet val, 50k).
EVAL_IMAGES = {"robustness": 50_000 * 75 + 7_500 + 30_000 + 50_889, "shape_bias": 1_280,
               "frequency": 50_000}


def throughput(method: str, arch: str, precision: str) -> tuple[float, str]:
    """Measured pretraining images/s on one GPU, or ViT-B's scaled by FLOPs."""
    from pixmim.models import ARCHS

    best: dict[tuple[str, str, str], float] = {}
    for f in sorted(BENCHMARKS.glob("*.json")):
        data = json.loads(f.read_text())
        if data.get("device") != "cuda":
            continue
        for s in data.get("steps", []):
            key = (s["method"], s["arch"], s["precision"])
            best[key] = max(best.get(key, 0.0), float(s["images_per_s"]))
    if (method, arch, precision) in best:
        return best[(method, arch, precision)], "measured"
    base = "convvit_base_224" if method == "convmae" else "vit_base_patch16_224"
    ref = best.get((method, base, precision)) or best.get(("mae", "vit_base_patch16_224",
                                                            precision))
    if ref is None:
        raise ConfigError(f"no pretraining benchmark for {method}/{arch}/{precision} in "
                          f"{BENCHMARKS}: run benchmarks/pretrain_step.py on a GPU")
    a, b = ARCHS[method].get(arch, {}), ARCHS["mae"]["vit_base_patch16_224"]
    flops = (a.get("depth", 12) * a.get("embed_dim", 768) ** 2
             * (a.get("img_size", 224) / 224) ** 2) / (b["depth"] * b["embed_dim"] ** 2)
    return ref / flops, f"scaled from {base} by FLOPs x{flops:.2f}"


def _done(config: dict[str, Any], exp: str, stage: str) -> bool:
    d = Path(run_dir(config, exp, stage))
    need = ["metrics.json"] + (["checkpoint.pth"] if stage == "pretrain" else [])
    return all((d / n).is_file() for n in need)


def jobs_of(config: dict[str, Any], target: str) -> set[tuple[str, str]]:
    """(experiment, stage) jobs a table or figure needs, its pretraining included."""
    if target in config["tables"]:
        cells = [c for r in table_spec(config, target)["rows"] for c in r["cells"].values()]
        files = [c["file"] for c in cells]
    elif target in config["figures"]:
        spec = figure_spec(config, target)
        files = [r["file"] for r in spec["rows"] if "file" in r]
        files += [c["file"] for r in spec["rows"] for c in r.get("cells", {}).values()]
    else:
        raise ConfigError(f"no table or figure {target!r} in the catalogue")
    jobs = set()
    for f in files:
        stage_dir = Path(f).parent
        exp, stage = stage_dir.parent.name, stage_dir.name
        jobs |= {(exp, "pretrain"), (exp, stage)}
        if stage in ("robustness", "shape_bias"):
            jobs.add((exp, "finetune"))
    return jobs


def job_hours(config: dict[str, Any], spec: dict[str, Any], stage: str) -> tuple[float, str]:
    """GPU-hours of one stage of the experiment whose resolved knobs are ``spec``."""
    precision = config["pretrain"].get("precision", "fp32")
    ips, how = throughput(spec["method"], spec["arch"], precision)
    images = DATASET_IMAGES.get(spec["dataset"], DATASET_IMAGES["default"])
    if stage == "pretrain":
        return images * spec["epochs"] / ips / 3600, how
    if stage == "linear_probe":
        n = images * config["linear_probe"]["epochs"] * RELATIVE_COST["linear_probe"]
    elif stage.startswith("finetune"):
        frac = {"finetune_1pct": 0.01, "finetune_10pct": 0.1}.get(stage, 1.0)
        epochs = (config.get("few_shot") or {}).get("epochs", config["finetune"]["epochs"]) \
            if frac < 1 else config["finetune"]["epochs"]
        n = images * frac * epochs * RELATIVE_COST["finetune"]
    elif stage in DENSE:
        section, mult = DENSE[stage]
        d = config[section]
        runs = len(d.get("seeds", [0])) if section == "segmentation" else 1
        cost = RELATIVE_COST["segment_ade20k" if section == "segmentation" else "detect_coco"]
        n = d["iters"] * mult * d["batch_size"] * runs * cost
    else:
        n = EVAL_IMAGES.get(stage, 50_000) * RELATIVE_COST.get(stage, RELATIVE_COST["evaluate"])
    return n / ips / 3600, f"{how}; relative cost assumed"


def budget(config: dict[str, Any], targets: list[str]) -> dict[str, Any]:
    per_target, all_jobs = {}, {}
    exps = experiments(config)  # resolved once, not per job
    for t in targets:
        rows = []
        for exp, stage in sorted(jobs_of(config, t)):
            done = _done(config, exp, stage)
            hours, how = (0.0, "done") if done else job_hours(config, exps[exp], stage)
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
