"""Pretraining loader benchmark: images/s per CPU core, PIL path vs uint8 path, side by side.

    python benchmarks/loader.py --json benchmarks/results/loader_cpu.json
    python benchmarks/loader.py --device cuda --gpu-decode   # also nvjpeg decode on the GPU

Corpus: scikit-image's bundled photos (CC0 / public domain) saved as JPEG (quality 90) at
ImageNet's typical sizes (500 x 375 and 375 x 500) in an ImageFolder under a temporary
directory. Measures, in one process, alternating the two paths round by round:

1. images/s of one core (one process, one torch thread, no workers): ``dataset[(i, seed)]``
   plus the collate of a batch. ``pil``: ImageFolder's PIL loader, crop on PIL, float tensor
   and normalisation in the worker (the previous path); ``uint8``: ``torchvision.io``
   decode, v2 crop on uint8, uint8 batch (``pixmim.data.loading``). The uint8 path's
   on-device convert + normalise is timed separately (``normalise_us_per_image``);
2. the data-wait share of a training step: a tiny MAE (``--arch``) trained at ``--size``
   px by a DataLoader with ``--workers`` workers, share of wall time spent waiting for the
   next batch, per path;
3. with ``--gpu-decode`` on CUDA: images/s of decode + crop on the GPU (workers only read
   bytes).

Medians over ``--rounds`` rounds; the ratio is uint8 / pil of the medians, and beside it
the geometric mean of the per-round ratios (each round times both paths back to back) with
its 95% t-interval (:func:`pixmim.report.stats.paired` on log images/s).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pixmim.data.datasets import EpochSampler, ImageDataset  # noqa: E402
from pixmim.data.loading import (  # noqa: E402
    DeviceDecode,
    EncodedImage,
    UInt8Crop,
    collate_encoded,
    to_device,
)
from pixmim.data.transforms import build_pretrain_transform  # noqa: E402
from pixmim.io import atomic_write  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
          "retina", "colorwheel", "cat", "logo")
SIZES = ((500, 375), (375, 500))  # ImageNet's commonest train sizes (w, h)


def make_corpus(root: Path, n: int) -> Path:
    """``n`` JPEGs of scikit-image's colour photos at ImageNet sizes, one ImageFolder class."""
    import skimage.data

    photos = []
    for name in PHOTOS:
        img = np.asarray(getattr(skimage.data, name)())
        if img.ndim == 3 and img.shape[2] >= 3:
            photos.append(Image.fromarray(img[..., :3].astype(np.uint8)))
    folder = root / "train" / "n01440764"
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        w, h = SIZES[k % 2]
        photos[k % len(photos)].resize((w, h), Image.BICUBIC).save(
            folder / f"img_{k:04d}.JPEG", quality=90)
    return root / "train"


def ratio_interval(new: list[float], old: list[float]) -> tuple[float, float, float]:
    """(low, geometric mean, high) of the per-round ratios ``new / old``: the 95% t-interval
    of the paired log difference, back on the ratio scale."""
    from pixmim.report.stats import paired

    est = paired([math.log(v) for v in new], [math.log(v) for v in old])
    return math.exp(est.low), math.exp(est.mean), math.exp(est.high)


def images_per_s(dataset, keys, batch: int) -> float:
    t0 = time.perf_counter()
    for b in range(0, len(keys) - batch + 1, batch):
        torch.utils.data.default_collate([dataset[k] for k in keys[b : b + batch]])
    return (len(keys) // batch * batch) / (time.perf_counter() - t0)


def normalise_us(batch: int, size: int, device: torch.device, reps: int = 20) -> float:
    u8 = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    if device.type == "cuda":
        u8 = u8.pin_memory()
    for _ in range(3):
        to_device(u8, device)
    torch.cuda.synchronize() if device.type == "cuda" else None
    t0 = time.perf_counter()
    for _ in range(reps):
        to_device(u8, device)
    torch.cuda.synchronize() if device.type == "cuda" else None
    return 1e6 * (time.perf_counter() - t0) / reps / batch


def data_wait_share(dataset, args, device) -> dict:
    """Train a tiny MAE on the loader's batches; share of wall time waiting for data."""
    from pixmim.config import TrainConfig
    from pixmim.models import create_model
    from pixmim.stages.pretrain import build_optimizer

    model = create_model("mae", args.arch, img_size=args.size).to(device)
    opt = build_optimizer(model, TrainConfig(), device)
    sampler = EpochSampler(len(dataset), 0)
    keys = []  # enough epochs of the corpus for --wait-steps steps
    for epoch in range(-(-args.wait_steps * args.batch // len(dataset))):
        sampler.set_epoch(epoch)
        keys += list(sampler)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch, sampler=keys,
        num_workers=args.workers, pin_memory=device.type == "cuda", drop_last=True)
    wait = total = 0.0
    steps = 0
    it = iter(loader)
    while True:
        t0 = time.perf_counter()
        try:
            imgs, _, _ = next(it)
        except StopIteration:
            break
        t1 = time.perf_counter()
        loss = model(to_device(imgs, device))[0]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if steps:  # the first batch includes the workers' start-up
            wait += t1 - t0
            total += time.perf_counter() - t0
        steps += 1
    return {"steps": steps - 1, "wait_s": wait, "total_s": total,
            "data_wait_share": wait / max(total, 1e-9)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=96, help="corpus size (JPEGs)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--crop", default="rrc", help="a key of pixmim.data.transforms.CROPS")
    p.add_argument("--img-size", type=int, default=224, help="crop size of the loader rounds")
    p.add_argument("--device", default="cpu")
    p.add_argument("--arch", default="vit_cpu_patch8_64", help="model of the data-wait step")
    p.add_argument("--size", type=int, default=64, help="input size of the data-wait step")
    p.add_argument("--workers", type=int, default=1, help="loader workers of the data-wait step")
    p.add_argument("--wait-steps", type=int, default=20, help="steps of the data-wait run")
    p.add_argument("--gpu-decode", action="store_true", help="also time nvjpeg decode (CUDA)")
    p.add_argument("--json", help="write every number to this file")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(1)  # one core
    tmp = tempfile.TemporaryDirectory(prefix="pixmim-loader-")
    root = make_corpus(Path(tmp.name), args.images)
    crop = build_pretrain_transform(args.crop, args.img_size)
    paths = {"pil": ImageDataset(root, crop), "uint8": ImageDataset(root, UInt8Crop(crop))}
    keys = list(EpochSampler(args.images, seed=0))
    for ds in paths.values():  # warm the page cache and the code paths
        images_per_s(ds, keys[: args.batch], args.batch)
    rounds: dict[str, list[float]] = {k: [] for k in paths}
    for r in range(args.rounds):  # alternate the paths, flipping the order each round
        for name in (list(paths) if r % 2 == 0 else list(paths)[::-1]):
            rounds[name].append(images_per_s(paths[name], keys, args.batch))
        print(f"round {r + 1}: " + "  ".join(f"{k} {v[-1]:.0f} img/s" for k, v in
                                              rounds.items()), flush=True)
    med = {k: statistics.median(v) for k, v in rounds.items()}
    result = {
        "device": str(device), "torch": torch.__version__, "cpu_count": os.cpu_count(),
        "load_avg": os.getloadavg(), "corpus": {"images": args.images, "sizes": SIZES,
                                                "source": "skimage.data photos, JPEG q90"},
        "crop": args.crop, "img_size": args.img_size, "batch": args.batch, "rounds": rounds,
        "images_per_s_per_core": med, "ratio_uint8_over_pil": med["uint8"] / med["pil"],
        "ratio_per_round_ci95": ratio_interval(rounds["uint8"], rounds["pil"]),
        "normalise_us_per_image": normalise_us(args.batch, args.img_size, device),
    }
    print(f"\n## Loader, one core ({args.crop} {args.img_size} px, batch {args.batch}, "
          f"median of {args.rounds} rounds)\n")
    print("path | images/s per core\n--- | ---")
    for k, v in med.items():
        print(f"{k} | {v:.0f}")
    lo, mid, hi = result["ratio_per_round_ci95"]
    print(f"\nratio uint8 / pil: {result['ratio_uint8_over_pil']:.2f}x (per round: {mid:.2f}x, "
          f"95% interval {lo:.2f}-{hi:.2f}x); on-device convert + "
          f"normalise: {result['normalise_us_per_image']:.1f} us/image ({device})")
    small = build_pretrain_transform(args.crop, args.size)
    waits = {}
    for name, tf in (("pil", small), ("uint8", UInt8Crop(small))):
        waits[name] = data_wait_share(ImageDataset(root, tf), args, device)
    result["data_wait"] = {"arch": args.arch, "size": args.size, "workers": args.workers,
                           **waits}
    print(f"\n## Data-wait share of a step ({args.arch}, {args.size} px, batch {args.batch}, "
          f"{args.workers} worker(s), {device})\n")
    print("path | steps | data-wait share\n--- | --- | ---")
    for k, v in waits.items():
        print(f"{k} | {v['steps']} | {100 * v['data_wait_share']:.1f}%")
    if args.gpu_decode:
        result["gpu_decode"] = gpu_decode(root, crop, keys, args, device)
    if args.json:
        atomic_write(Path(args.json), lambda t: Path(t).write_text(json.dumps(result, indent=2)))
    tmp.cleanup()
    return 0


def gpu_decode(root, crop, keys, args, device) -> dict:
    """Workers read bytes; decode (nvjpeg) and crop on the GPU. Skipped without CUDA."""
    if device.type != "cuda":
        print("\nGPU decode: skipped (needs --device cuda)")
        return {"skipped": "needs --device cuda"}
    ds, dec = ImageDataset(root, EncodedImage()), DeviceDecode(crop, device)
    times = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        for b in range(0, len(keys) - args.batch + 1, args.batch):
            data, _, seeds = collate_encoded([ds[k] for k in keys[b : b + args.batch]])
            dec(data, seeds)
        torch.cuda.synchronize()
        times.append(len(keys) // args.batch * args.batch / (time.perf_counter() - t0))
    print(f"\nGPU decode + crop: {statistics.median(times):.0f} images/s (one core feeding)")
    return {"images_per_s": statistics.median(times), "rounds": times}


if __name__ == "__main__":
    sys.exit(main())
