"""Pretraining step benchmark: throughput, peak memory, the low-pass target's cost.

    python benchmarks/pretrain_step.py --device cuda --batch 64 --json out.json
    python benchmarks/pretrain_step.py --device cpu --sizes cpu --batch 32
    python benchmarks/pretrain_step.py --device cuda --batch paper --official --json out.json

``--batch paper``: each method at the paper's per-GPU batch (its paper-scale pretraining
batch over the layout of a pretraining job: ``pixmim.workflow.budget.job_layout``; MAE
4096 / 8 = 512), the batch the budget looks for.

Measures, on the current device, side by side in one run:

1. images/s and peak memory of one training step (forward, backward, AdamW step) for every
   method x size x precision;
2. the PixMIM low-pass target (official mode) as a percentage of the MAE step at the same
   batch and precision, for our partial-DFT implementation and for the straightforward
   ``fft2 -> fftshift -> mask -> ifft2`` formulation;
3. our MAE step (engine optimizer, optional ``torch.compile``) against a straightforward
   MAE built from timm's default blocks with a plain per-tensor AdamW, fp32;
4. with ``--official``: our MAE step against mmpretrain's (``benchmarks/official_mae.py``),
   same arch, batch and precision, alternating round by round in one process, with the
   FLOPs of one step (``torch.utils.flop_counter``), achieved TFLOP/s and MFU (against
   ``--peak-tflops``, or the datasheet peak of a known GPU).

The low-pass rows time the model's target on a normalised batch: ``folded``
(``lowpass_normalised``: un-normalise / filter / re-normalise folded into the band
matrices), ``unfolded`` (un-normalise, partial-DFT ``lowpass``, re-normalise: the previous
target) and ``fft2_straightforward`` (the same around full FFTs).

Times are medians over ``--steps`` timed steps after ``--warmup`` steps. Prints a table and,
with ``--json``, writes every number.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.plain_mae import PlainMAE, plain_optimizer  # noqa: E402
from pixmim.config import TrainConfig  # noqa: E402
from pixmim.io import atomic_write  # noqa: E402
from pixmim.models import archs, create_model  # noqa: E402
from pixmim.models.base import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from pixmim.models.targets import lowpass, lowpass_fft, lowpass_normalised  # noqa: E402
from pixmim.stages.pretrain import build_optimizer  # noqa: E402

SIZES = {  # size -> arch per method
    "cpu": {"mae": "vit_cpu_patch8_64", "mff": "vit_cpu_patch8_64",
            "convmae": "convvit_cpu_64", "lsmae": "vit_cpu_patch8_64"},
    "base": {"mae": "vit_base_patch16_224", "mff": "vit_base_patch16_224",
             "convmae": "convvit_base_224", "lsmae": "vit_base_patch16_448"},
    "small": {"mae": "vit_small_patch16_224"},
    "large": {"mae": "vit_large_patch16_224"},
}
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# Dense peak TFLOP/s by GPU name and precision, from NVIDIA's datasheets (H100 SXM5 / H200:
# 989 bf16 / fp16 tensor, 67 fp32; H100 PCIe: 756 / 51). fp32 steps run in fp32 (no TF32).
PEAK_TFLOPS = {"H100 80GB HBM3": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
               "H200": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
               "H100 PCIe": {"bf16": 756.0, "fp16": 756.0, "fp32": 51.0}}


def paper_batch(method: str) -> int:
    """The paper's per-GPU pretraining batch of ``method`` (config/paper.yaml's batch over
    the layout of a pretraining job), as the budget reads it."""
    from pixmim.workflow.budget import job_layout
    from pixmim.workflow.catalogue import ROOT, experiments, load_config
    from pixmim.workflow.jobs import job_config

    config = load_config(ROOT / "config" / "paper.yaml")
    exps = experiments(config)
    exp = next(e for e, k in exps.items() if k["method"] == method)
    return job_layout(config, job_config(config, exp, "pretrain", exps))["per_gpu_batch"]


def batch_of(args, method: str) -> int:
    return paper_batch(method) if args.batch == "paper" else int(args.batch)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn, device, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def make_step(model, opt, imgs, precision: str, device):
    dtype = DTYPES[precision]
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = model(imgs)
            loss = out[0] if isinstance(out, tuple) else out
        if scaler:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def bench_step(method, arch, precision, args, device, compile_model=False, steps=None,
               **model_kwargs):
    reset_peak(device)
    model = create_model(method, arch, **model_kwargs).to(device)
    size = archs(method)[arch].get("img_size", 224)
    batch = batch_of(args, method)
    imgs = torch.randn(batch, 3, size, size, device=device)
    opt = build_optimizer(model, TrainConfig(), device)
    fwd = torch.compile(model) if compile_model else model
    ms = median_ms(make_step(fwd, opt, imgs, precision, device), device, steps or args.steps,
                   args.warmup)
    row = {"method": method, "arch": arch, "precision": precision, "batch": batch,
           "compile": compile_model, "step_ms": ms, "images_per_s": 1000 * batch / ms,
           "peak_mem_mib": peak_mib(device)}
    del model, opt, imgs
    return row


def bench_lowpass(step_row, args, device):
    """The model's low-pass target (official, normalised batch in and out) as a share of
    the step: folded, unfolded (the previous target), and around full FFTs."""
    size = archs(step_row["method"])[step_row["arch"]].get("img_size", 224)
    radius = 40.0 * size / 224  # r=40 at 224 px: PixMIM Sec. 4.1
    batch = step_row["batch"]
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    x = (torch.rand(batch, 3, size, size, device=device) - mean) / std

    def around(fn):
        return lambda: (fn(x * std + mean, radius, "official") - mean) / std

    impls = (("folded", lambda: lowpass_normalised(x, radius, "official", IMAGENET_MEAN,
                                                   IMAGENET_STD)),
             ("unfolded", around(lowpass)), ("fft2_straightforward", around(lowpass_fft)))
    times: dict[str, list[float]] = {name: [] for name, _ in impls}
    for r in range(args.rounds):  # alternate the implementations, flipping the order
        for name, fn in (impls if r % 2 == 0 else impls[::-1]):
            times[name].append(median_ms(fn, device, args.steps, args.warmup if r < 2 else 0))
    rows = []
    for name, _ in impls:
        ms = statistics.median(times[name])
        rows.append({"lowpass_impl": name, "arch": step_row["arch"],
                     "precision": step_row["precision"], "batch": batch,
                     "lowpass_ms": ms, "step_ms": step_row["step_ms"],
                     "percent_of_step": 100 * ms / step_row["step_ms"]})
    return rows


def bench_target_in_step(arch, precision, args, device, compile_model):
    """The low-pass target's cost inside a real step: step(lowpass) - step(pixel)."""
    size = archs("mae")[arch].get("img_size", 224)
    rows = {}
    for target in ("pixel", "lowpass"):
        rows[target] = bench_step("mae", arch, precision, args, device, compile_model,
                                  steps=2 * args.steps, target=target, radius=40.0 * size / 224)
    delta = rows["lowpass"]["step_ms"] - rows["pixel"]["step_ms"]
    return {"arch": arch, "precision": precision, "compile": compile_model,
            "batch": batch_of(args, "mae"),
            "pixel_step_ms": rows["pixel"]["step_ms"],
            "lowpass_step_ms": rows["lowpass"]["step_ms"],
            "delta_ms": delta, "percent_of_step": 100 * delta / rows["pixel"]["step_ms"]}


def bench_baseline(arch, args, device):
    a = archs("mae")[arch]
    reset_peak(device)
    plain = PlainMAE(**{k: v for k, v in a.items() if k != "patch_size"},
                     patch_size=a.get("patch_size", 16)).to(device)
    size = a.get("img_size", 224)
    batch = batch_of(args, "mae")
    imgs = torch.randn(batch, 3, size, size, device=device)
    ms = median_ms(make_step(plain, plain_optimizer(plain), imgs, "fp32", device), device,
                   args.steps, args.warmup)
    return {"method": "plain_mae", "arch": arch, "precision": "fp32", "batch": batch,
            "compile": False, "step_ms": ms, "images_per_s": 1000 * batch / ms,
            "peak_mem_mib": peak_mib(device)}


def step_flops(arch: str, device: torch.device) -> float:
    """FLOPs of one image through our MAE training step (forward + backward; matmuls,
    convolutions and attention as ``torch.utils.flop_counter`` counts them)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = create_model("mae", arch).to(device)
    size = archs("mae")[arch].get("img_size", 224)
    imgs = torch.randn(2, 3, size, size, device=device)
    with FlopCounterMode(display=False) as counter:
        model(imgs)[0].backward()
    return counter.get_total_flops() / 2


def peak_tflops(args, device: torch.device, precision: str) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops
    name = device_name(device)
    return next((v[precision] for k, v in PEAK_TFLOPS.items() if k in name), None)


def bench_official(arch: str, precision: str, args, device) -> list[dict]:
    """Our MAE step vs mmpretrain's, same arch / batch / precision, alternating rounds."""
    from benchmarks.official_mae import OfficialMAE, official_optimizer

    batch = batch_of(args, "mae")
    size = archs("mae")[arch].get("img_size", 224)
    imgs = torch.randn(batch, 3, size, size, device=device)
    ours = create_model("mae", arch).to(device)
    ref = OfficialMAE(arch).to(device)
    fwd = torch.compile(ours) if args.compile else ours
    steps = {"ours": make_step(fwd, build_optimizer(ours, TrainConfig(), device), imgs,
                               precision, device),
             "mmpretrain": make_step(ref, official_optimizer(ref), imgs, precision, device)}
    times: dict[str, list[float]] = {k: [] for k in steps}
    for k in steps:
        median_ms(steps[k], device, 1, args.warmup)
    for r in range(args.rounds):  # alternate, flipping the order each round
        for k in (list(steps) if r % 2 == 0 else list(steps)[::-1]):
            times[k].append(median_ms(steps[k], device, args.steps, 0))
    flops = step_flops(arch, device)
    peak = peak_tflops(args, device, precision)
    rows = []
    for k, v in times.items():
        ms = statistics.median(v)
        achieved = flops * batch / (ms / 1000) / 1e12
        rows.append({"impl": k, "arch": arch, "precision": precision, "batch": batch,
                     "compile": args.compile and k == "ours", "step_ms": ms,
                     "images_per_s": 1000 * batch / ms, "gflop_per_image": flops / 1e9,
                     "achieved_tflops": achieved, "achieved_gflops": 1000 * achieved,
                     "peak_tflops": peak,
                     "mfu": achieved / peak if peak else None,
                     "mfu_percent": 100 * achieved / peak if peak else None, "rounds_ms": v})
    rows[0]["speedup_vs_mmpretrain"] = rows[1]["step_ms"] / rows[0]["step_ms"]
    return rows


def table(rows, keys) -> str:
    lines = [" | ".join(keys), " | ".join("---" for _ in keys)]
    for r in rows:
        lines.append(" | ".join(f"{r[k]:.2f}" if isinstance(r[k], float) else str(r[k])
                                for k in keys))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", default="64",
                   help="images per step, or 'paper': each method's paper per-GPU batch")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--methods", default="mae,mff,convmae,lsmae")
    p.add_argument("--sizes", default="cpu,base")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--compare-size", default="base", help="size of the plain-MAE comparison")
    p.add_argument("--compile", action="store_true", help="torch.compile our model in (3)")
    p.add_argument("--official", action="store_true",
                   help="(4): our MAE step vs mmpretrain's, alternating, with MFU")
    p.add_argument("--rounds", type=int, default=3,
                   help="alternating rounds of the low-pass rows and of (4)")
    p.add_argument("--peak-tflops", type=float, help="device peak for MFU (else datasheet)")
    p.add_argument("--skip-steps", action="store_true",
                   help="skip (1)-(3) (the official comparison alone)")
    p.add_argument("--json", help="write all rows to this file")
    args = p.parse_args(argv)
    if args.batch != "paper":
        int(args.batch)  # a number or 'paper'
    if args.skip_steps:
        args.sizes, args.methods = "", ""
    device = torch.device(args.device)
    torch.manual_seed(0)
    steps, lows = [], []
    for size in filter(None, args.sizes.split(",")):
        for method in filter(None, args.methods.split(",")):
            if method not in SIZES[size]:
                continue
            for prec in args.precisions.split(","):
                row = bench_step(method, SIZES[size][method], prec, args, device)
                steps.append(row)
                print(f"step {method} {row['arch']} {prec}: {row['step_ms']:.1f} ms", flush=True)
                if method == "mae":
                    lows += bench_lowpass(row, args, device)
    arch = SIZES[args.compare_size]["mae"]
    result = {"device": str(device), "device_name": device_name(device),
              "torch": torch.__version__, "batch_arg": args.batch, "steps": steps,
              "lowpass": lows}
    print(f"\n## Training step ({device}, {device_name(device)})\n")
    print(table(steps, ["method", "arch", "precision", "batch", "step_ms", "images_per_s",
                        "peak_mem_mib"]))
    print("\n## Low-pass target (official, normalised in and out) as a share of the MAE step\n")
    print(table(lows, ["lowpass_impl", "arch", "precision", "batch", "lowpass_ms", "step_ms",
                       "percent_of_step"]))
    if not args.skip_steps:
        result.update(compare_with_plain(arch, args, device))
    if args.official:
        rows = [r for prec in args.precisions.split(",")
                for r in bench_official(arch, prec, args, device)]
        result["official"] = rows
        print("\n## Our MAE step vs mmpretrain's (alternating rounds, medians)\n")
        print(table(rows, ["impl", "arch", "precision", "batch", "compile", "step_ms",
                           "images_per_s", "gflop_per_image", "achieved_gflops",
                           "mfu_percent"]))
        for r in rows:
            if "speedup_vs_mmpretrain" in r:
                print(f"speedup ours / mmpretrain ({r['precision']}): "
                      f"{r['speedup_vs_mmpretrain']:.2f}x")
    if args.json:
        atomic_write(Path(args.json),
                     lambda t: Path(t).write_text(json.dumps(result, indent=2)))
    return 0


def compare_with_plain(arch: str, args, device) -> dict:
    """(3) and the target inside the step; prints their tables."""
    plain = bench_baseline(arch, args, device)
    try:
        ours = bench_step("mae", arch, "fp32", args, device, compile_model=args.compile)
    except Exception as e:  # a compiler failure must not lose the rest of the run
        print(f"torch.compile failed ({type(e).__name__}: {e}); timing eager", flush=True)
        args.compile = False
        ours = bench_step("mae", arch, "fp32", args, device)
    in_step = [bench_target_in_step(arch, prec, args, device, args.compile)
               for prec in args.precisions.split(",")]
    compare = {"arch": arch, "batch": ours["batch"], "plain_step_ms": plain["step_ms"],
               "ours_step_ms": ours["step_ms"], "ours_compiled": args.compile,
               "speedup": plain["step_ms"] / ours["step_ms"]}
    print("\n## Low-pass target inside the step: step(lowpass) - step(pixel), same seeds\n")
    print(table(in_step, ["arch", "precision", "compile", "batch", "pixel_step_ms",
                          "lowpass_step_ms", "delta_ms", "percent_of_step"]))
    print("\n## Our MAE step vs a straightforward MAE (fp32)\n")
    print(table([plain, ours], ["method", "arch", "compile", "batch", "step_ms",
                                "images_per_s", "peak_mem_mib"]))
    print(f"\nspeedup ours / plain: {compare['speedup']:.2f}x")
    return {"lowpass_in_step": in_step, "compare": compare, "plain": plain, "ours": ours}


if __name__ == "__main__":
    sys.exit(main())
