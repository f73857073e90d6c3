"""Host memory per job kind at paper scale, from the dress rehearsal's measurements.

The rehearsal (config/rehearsal.yaml) runs one job per kind at the paper's architectures and
input sizes on fixture data; Snakemake's benchmark file of each job gives its time and peak
resident memory (``s``, ``max_rss``). What the rehearsal cannot show is what grows with the
real dataset and the paper's batches. Each such term is a per-item size measured on the
fixtures (:func:`measure_item_bytes`) times the real dataset's count, or a size computed
from the paper's job config:

* the image index (path, label) of every split a job lists, held by the main process and
  copied into each loader worker (Python's reference counts touch every page, so a fork's
  copy-on-write copies it);
* COCO train2017's instances (pycocotools / mmdet's data list) in the main process and each
  worker, and val2017's held by the evaluator;
* the linear probe's cached features (``feature_views`` views of ImageNet train + val);
* the batches in flight: each loader worker prefetches two batches of decoded images.

The table (:func:`table`, ``python -m pixmim rehearsal resources``) is committed as
``benchmarks/results/rehearsal_resources.{csv,md}``; profiles/slurm requests per rule the
largest ``request_mb`` of that rule's kinds (:func:`rule_mem_mb`). Torch-free.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import yaml

from pixmim import registry
from pixmim.workflow.catalogue import load_config, plugins
from pixmim.workflow.jobs import job_config, layout
from pixmim.workflow.rehearsal import representatives

TABLE = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "rehearsal_resources.csv"
MARGIN = 1.25  # request = extrapolated peak x MARGIN (allocator slack, fragmentation)
# Real dataset sizes (the datasets' own documentation: ImageNet-1k train/val, COCO 2017
# instances, ADE20K SceneParsing, ImageNet-C 15 corruptions x 5 severities x 50,000).
COUNTS = {"imagenet_train": 1_281_167, "imagenet_val": 50_000,
          "coco_train_images": 118_287, "coco_train_instances": 860_001,
          "coco_val_images": 5_000, "coco_val_instances": 36_781,
          "ade20k_train": 20_210, "ade20k_val": 2_000,
          "imagenet_c": 15 * 5 * 50_000, "imagenet_a": 7_500, "imagenet_r": 30_000,
          "imagenet_sketch": 50_889, "cue_conflict": 1_280,
          "places365_train": 1_803_460}
PREFETCH = 2  # torch DataLoader's prefetch_factor (batches per worker in flight)
MB = 1 << 20
FIELDS = ["kind", "rule", "stage", "method", "arch", "representative", "rehearsal_s",
          "rehearsal_max_rss_mb", "index_mb", "annotations_mb", "features_mb",
          "batches_mb", "peak_mb", "request_mb"]
METHOD = ("peak = rehearsal max_rss (model, optimizer, one step at the rehearsal's batch, "
          "on CPU) + per-item sizes measured on the fixtures x the real counts (index: "
          "main + each loader worker; COCO instances likewise) + cached features + decoded "
          "batches in flight (processes x workers x 2 x batch per process); request = peak x "
          f"{MARGIN}")


def _alloc(build) -> int:
    """Bytes held by what ``build()`` returns (tracemalloc)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = build()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    del kept
    return held


def measure_item_bytes(data: dict[str, Any]) -> dict[str, float]:
    """Per-item host bytes on the fixtures: an ImageFolder index entry (its path string and
    label, in a list of tuples, as torchvision holds it) and a COCO instance (its json
    parsed, with its image record shared out)."""
    root = Path(data["root"])
    files = sorted(p for p in (root / "train").rglob("*") if p.is_file())
    # fresh path strings, as a directory scan makes them (labels: small ints, shared)
    per_path = _alloc(lambda: [(str(f.parent) + "/" + f.name, i % 1000)
                                for i, f in enumerate(files)]) \
        / max(len(files), 1)
    out = {"index_entry": per_path}
    coco = Path(data["coco_root"]) / "annotations" / "instances_train2017.json"
    if coco.is_file():
        text = coco.read_text()
        parsed = json.loads(text)
        n = max(len(parsed["annotations"]), 1)
        n_img = max(len(parsed["images"]), 1)
        per = _alloc(lambda: json.loads(text))
        # images and instances together, per instance (their real ratio: 118,287 / 860,001)
        img_share = COUNTS["coco_train_images"] / COUNTS["coco_train_instances"]
        out["coco_instance"] = per / (n + n_img) * (1 + img_share)
    return out


def _benchmark(results: str, exp: str, stage: str) -> tuple[float, float] | None:
    path = Path(results) / "benchmarks" / exp / f"{stage}.tsv"
    if not path.is_file():
        return None
    rows = list(csv.DictReader(io.StringIO(path.read_text()), delimiter="\t"))
    return float(rows[-1]["s"]), float(rows[-1]["max_rss"])


def _dim(arch: str) -> int:
    for key, dim in (("small", 384), ("large", 1024), ("huge", 1280)):
        if key in arch:
            return dim
    return 768  # ViT-B, ConvViT-B's last stage


def growth(paper: dict[str, Any], exp: str, stage: str,
           items: dict[str, float]) -> dict[str, float]:
    """MB of what grows with the real data for job ``(exp, stage)`` of the paper config."""
    job = job_config(paper, exp, stage)
    spec = registry.stage(stage, plugins(paper))
    # the processes of the job on one node (its layout, config/paper.yaml), each reading
    # its share of the batch; memory is requested per node
    lay = layout(job, spec)
    procs = max(lay["gpus"], 1) if lay["processes"] > 1 else 1
    t = job.get("train", {})
    dense = job.get("dense")
    workers = (dense or t).get("num_workers", 0)
    if spec.job == "evaluate" or stage == "frequency":
        workers = job["eval"]["num_workers"]
    copies = procs * (1 + workers)
    out = {"index_mb": 0.0, "annotations_mb": 0.0, "features_mb": 0.0, "batches_mb": 0.0}
    entry = items["index_entry"]
    if spec.section == "detection":
        out["annotations_mb"] = items.get("coco_instance", 0.0) * (
            COUNTS["coco_train_instances"] * copies + COUNTS["coco_val_instances"]) / MB
        size, batch, pixel = dense["crop_size"], dense["batch_size"], 1
    elif spec.section == "segmentation":
        out["index_mb"] = entry * (COUNTS["ade20k_train"] * copies + COUNTS["ade20k_val"]) / MB
        size, batch, pixel = dense["crop_size"], dense["batch_size"], 1
    else:
        size = job.get("data", {}).get("img_size", 224)
        pixel = 4  # float32 tensors out of the transforms
        if spec.job == "evaluate":
            n = sum(COUNTS[k] for k in ("imagenet_c", "imagenet_a", "imagenet_r",
                                        "imagenet_sketch", "cue_conflict"))
            out["index_mb"] = entry * n * copies / MB
            batch = job["eval"]["batch_size"]
        else:
            train = COUNTS["places365_train"] if "places365" in exp and stage == "pretrain" \
                else COUNTS["imagenet_train"]
            out["index_mb"] = entry * (train * copies + COUNTS["imagenet_val"]) / MB
            batch = t.get("batch_size", job.get("eval", {}).get("batch_size", 1))
        if stage == "linear_probe" and t.get("feature_views", 0):
            out["features_mb"] = (t["feature_views"] * COUNTS["imagenet_train"]
                                  + COUNTS["imagenet_val"]) * _dim(job["arch"]) * 4 / MB
    per_proc = max(batch // lay["processes"] // lay["accum_steps"], 1)
    out["batches_mb"] = procs * workers * PREFETCH * per_proc * 3 * size * size * pixel / MB
    return out


def table(paper: dict[str, Any], rehearsal_cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per job kind of the paper config (the rehearsal's representatives)."""
    items = measure_item_bytes(rehearsal_cfg["data"])
    rows = []
    for kind, exp in sorted(representatives(rehearsal_cfg).items()):
        stage = kind[0]
        spec = registry.stage(stage, plugins(paper))
        bench = _benchmark(rehearsal_cfg["results"], exp, stage)
        grow = growth(paper, exp, stage, items)
        row = {"kind": "/".join(str(k) for k in kind), "rule": spec.rule, "stage": stage,
               "method": kind[1], "arch": kind[2], "representative": exp,
               **{k: round(v) for k, v in grow.items()}}
        if bench is None:  # the rehearsal did not finish this job: said, not guessed
            row.update(rehearsal_s="not measured", rehearsal_max_rss_mb="not measured",
                       peak_mb="", request_mb="")
        else:
            peak = bench[1] + sum(grow.values())
            row.update(rehearsal_s=round(bench[0], 1), rehearsal_max_rss_mb=round(bench[1]),
                       peak_mb=round(peak), request_mb=int(-(-peak * MARGIN // 1000) * 1000))
        rows.append(row)
    return rows


def write(rows: list[dict[str, Any]], out: str | Path) -> None:
    """``<out>.csv`` and ``<out>.md``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    out.with_suffix(".csv").write_text(buf.getvalue())
    cols = ["kind", "rule"] + FIELDS[6:]
    md = ["# Host memory per job kind (dress rehearsal, extrapolated to paper scale)", "",
          f"Method: {METHOD}.", "",
          "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")


def read(path: str | Path = TABLE) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(Path(path).read_text())))


def rule_mem_mb(rule: str, path: str | Path = TABLE, default: int = 8000) -> int:
    """MB of memory to request for every job of ``rule``: the largest ``request_mb`` of its
    job kinds in the table (``default`` where the table has none)."""
    sizes = [int(r["request_mb"]) for r in read(path) if r["rule"] == rule and r["request_mb"]]
    return max(sizes) if sizes else default


def add_arguments(p) -> None:
    p.add_argument("--paper", default="config/paper.yaml", help="the paper config")
    p.add_argument("--overlay", default="config/rehearsal.yaml", help="the rehearsal overlay")
    p.add_argument("--out", default=str(TABLE.with_suffix("")),
                   help="output path without suffix (<out>.csv, <out>.md)")


def run(a) -> int:
    rows = table(load_config(a.paper), load_config(a.paper, a.overlay))
    write(rows, a.out)
    print(yaml.safe_dump({"rows": len(rows), "out": a.out}, sort_keys=False), file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m pixmim rehearsal resources ...``."""
    p = argparse.ArgumentParser(prog="python -m pixmim rehearsal",
                                description="The dress rehearsal's tools (make rehearse).")
    sub = p.add_subparsers(dest="cmd", required=True)
    add_arguments(sub.add_parser(
        "resources", help="host memory per job kind from the rehearsal's benchmarks",
        description="Host memory per job kind from the rehearsal's benchmarks."))
    return run(p.parse_args(argv))
