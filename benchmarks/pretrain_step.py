"""Pretraining step benchmark: throughput, peak memory, the low-pass target's cost.

    python benchmarks/pretrain_step.py --device cuda --batch 64 --json out.json
    python benchmarks/pretrain_step.py --device cpu --sizes cpu --batch 32

Measures, on the current device, side by side in one run:

1. images/s and peak memory of one training step (forward, backward, AdamW step) for every
   method x size x precision;
2. the PixMIM low-pass target (official mode) as a percentage of the MAE step at the same
   batch and precision, for our partial-DFT implementation and for the straightforward
   ``fft2 -> fftshift -> mask -> ifft2`` formulation;
3. our MAE step (engine optimizer, optional ``torch.compile``) against a straightforward
   MAE built from timm's default blocks with a plain per-tensor AdamW, fp32.

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
from pixmim.models import archs, create_model  # noqa: E402
from pixmim.models.targets import lowpass, lowpass_fft  # noqa: E402
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
    imgs = torch.randn(args.batch, 3, size, size, device=device)
    opt = build_optimizer(model, TrainConfig(), device)
    fwd = torch.compile(model) if compile_model else model
    ms = median_ms(make_step(fwd, opt, imgs, precision, device), device, steps or args.steps,
                   args.warmup)
    row = {"method": method, "arch": arch, "precision": precision, "batch": args.batch,
           "compile": compile_model, "step_ms": ms, "images_per_s": 1000 * args.batch / ms,
           "peak_mem_mib": peak_mib(device)}
    del model, opt, imgs
    return row


def bench_lowpass(step_row, args, device):
    size = archs(step_row["method"])[step_row["arch"]].get("img_size", 224)
    radius = 40.0 * size / 224  # r=40 at 224 px: PixMIM Sec. 4.1
    raw = torch.rand(args.batch, 3, size, size, device=device)
    rows = []
    for name, fn in (("partial_dft", lowpass), ("fft2_straightforward", lowpass_fft)):
        ms = median_ms(lambda fn=fn: fn(raw, radius, "official"), device, args.steps,
                       args.warmup)
        rows.append({"lowpass_impl": name, "arch": step_row["arch"],
                     "precision": step_row["precision"], "batch": args.batch,
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
    return {"arch": arch, "precision": precision, "compile": compile_model, "batch": args.batch,
            "pixel_step_ms": rows["pixel"]["step_ms"], "lowpass_step_ms": rows["lowpass"]["step_ms"],
            "delta_ms": delta, "percent_of_step": 100 * delta / rows["pixel"]["step_ms"]}


def bench_baseline(arch, args, device):
    a = archs("mae")[arch]
    reset_peak(device)
    plain = PlainMAE(**{k: v for k, v in a.items() if k != "patch_size"},
                     patch_size=a.get("patch_size", 16)).to(device)
    size = a.get("img_size", 224)
    imgs = torch.randn(args.batch, 3, size, size, device=device)
    ms = median_ms(make_step(plain, plain_optimizer(plain), imgs, "fp32", device), device,
                   args.steps, args.warmup)
    return {"method": "plain_mae", "arch": arch, "precision": "fp32", "batch": args.batch,
            "compile": False, "step_ms": ms, "images_per_s": 1000 * args.batch / ms,
            "peak_mem_mib": peak_mib(device)}


def table(rows, keys) -> str:
    lines = [" | ".join(keys), " | ".join("---" for _ in keys)]
    for r in rows:
        lines.append(" | ".join(f"{r[k]:.2f}" if isinstance(r[k], float) else str(r[k])
                                for k in keys))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--methods", default="mae,mff,convmae,lsmae")
    p.add_argument("--sizes", default="cpu,base")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--compare-size", default="base", help="size of the plain-MAE comparison")
    p.add_argument("--compile", action="store_true", help="torch.compile our model in (3)")
    p.add_argument("--json", help="write all rows to this file")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    steps, lows = [], []
    for size in args.sizes.split(","):
        for method in args.methods.split(","):
            if method not in SIZES[size]:
                continue
            for prec in args.precisions.split(","):
                row = bench_step(method, SIZES[size][method], prec, args, device)
                steps.append(row)
                print(f"step {method} {row['arch']} {prec}: {row['step_ms']:.1f} ms", flush=True)
                if method == "mae":
                    lows += bench_lowpass(row, args, device)
    arch = SIZES[args.compare_size]["mae"]
    plain = bench_baseline(arch, args, device)
    try:
        ours = bench_step("mae", arch, "fp32", args, device, compile_model=args.compile)
    except Exception as e:  # a compiler failure must not lose the rest of the run
        print(f"torch.compile failed ({type(e).__name__}: {e}); timing eager", flush=True)
        args.compile = False
        ours = bench_step("mae", arch, "fp32", args, device)
    in_step = [bench_target_in_step(arch, prec, args, device, args.compile)
               for prec in args.precisions.split(",")]
    compare = {"arch": arch, "batch": args.batch, "plain_step_ms": plain["step_ms"],
               "ours_step_ms": ours["step_ms"], "ours_compiled": args.compile,
               "speedup": plain["step_ms"] / ours["step_ms"]}
    print(f"\n## Training step ({device}, {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'})\n")
    print(table(steps, ["method", "arch", "precision", "batch", "step_ms", "images_per_s",
                        "peak_mem_mib"]))
    print("\n## Low-pass target (official) as a share of the MAE step\n")
    print(table(lows, ["lowpass_impl", "arch", "precision", "batch", "lowpass_ms", "step_ms",
                       "percent_of_step"]))
    print("\n## Low-pass target inside the step: step(lowpass) - step(pixel), same seeds\n")
    print(table(in_step, ["arch", "precision", "compile", "batch", "pixel_step_ms",
                          "lowpass_step_ms", "delta_ms", "percent_of_step"]))
    print("\n## Our MAE step vs a straightforward MAE (fp32)\n")
    print(table([plain, ours], ["method", "arch", "compile", "batch", "step_ms",
                                "images_per_s", "peak_mem_mib"]))
    print(f"\nspeedup ours / plain: {compare['speedup']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"device": str(device), "torch": torch.__version__, "steps": steps,
             "lowpass": lows, "lowpass_in_step": in_step, "compare": compare, "plain": plain, "ours": ours}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
