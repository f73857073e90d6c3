"""Stage ``frequency``: reconstruction PSNR per frequency band (PixMIM Fig. 5).

Loads a pretraining checkpoint, masks every validation image (eval transform) with a mask
drawn from its own seed (``sample_seed(train.seed, 0, index)``: two models see the same
masks), reconstructs it (:func:`pixmim.analysis.frequency.reconstruct`: visible patches
pasted, prediction un-normalised with the image's patch statistics) and writes the
per-band PSNR to ``metrics.json`` and ``bands.csv``: ``band_psnr`` (the default
reconstruction), ``band_psnr_target_denorm`` (un-normalised with the target's statistics)
and ``band_psnr_patch_stats`` (prediction zeroed: what the de-normalisation alone restores;
the model's contribution is the gap to it); ``example_band_psnr``: the first validation
image alone (Fig. 1), drawn with its reconstruction in ``example_reconstruction.png`` by
the pretraining monitor's code (:func:`pixmim.stages.monitor.reconstruction_panels`).

``N_BANDS`` rings up to ``img_size / 2`` bins (the paper plots 0..112 at 224 px with fine
intervals; 16 rings of 2 bins at 64 px). It is a module constant until the workflow
resolves a config key for it.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from pixmim.analysis import frequency as fq
from pixmim.config import JobConfig
from pixmim.data.datasets import build_dataset, sample_seed
from pixmim.data.transforms import build_eval_transform
from pixmim.engine import distributed
from pixmim.engine.loop import capped, make_loader, seed_everything
from pixmim.io import write_text
from pixmim.progress import progress
from pixmim.report.plots import plot_reconstructions
from pixmim.stages.common import (
    build_pretrained,
    complete,
    load_encoder,
    load_pretrain_checkpoint,
    parent_tags,
    run_main,
    tracked,
)
from pixmim.stages.monitor import reconstruction_panels

N_BANDS = 16

# Reconstructions measured: name -> (de-normalisation, keep the prediction). ``patch_stats``
# zeroes the prediction: masked patches then show only the original's patch means, the part
# of the ``image`` reconstruction that the de-normalisation (not the model) supplies.
VARIANTS = {"image": ("image", True), "target": ("target", True), "patch_stats": ("image", False)}


def measure(model: torch.nn.Module, loader, cfg: JobConfig, device: torch.device,
            n_bands: int) -> dict[str, torch.Tensor]:
    """Sums over this rank's images: per-band MSE, per-band and whole-image PSNR, count."""
    sums = {"n": torch.zeros(1, dtype=torch.float64),
            "example": torch.zeros(n_bands, dtype=torch.float64)}  # image 0 only (Fig. 1)
    for v in VARIANTS:
        sums |= {f"mse_{v}": torch.zeros(n_bands, dtype=torch.float64),
                 f"psnr_{v}": torch.zeros(n_bands, dtype=torch.float64),
                 f"full_{v}": torch.zeros(1, dtype=torch.float64)}
    positions = iter(loader.sampler)
    for x, _ in capped(progress(loader, "frequency", unit="batch"), cfg.eval.max_batches):
        index = [next(positions) for _ in range(len(x))]
        seeds = [sample_seed(cfg.train.seed, 0, i) for i in index]
        x = x.to(device)
        pred, mask = fq.predict(model, x, cfg.mask_ratio, seeds)
        raw = (x * model.std + model.mean).clamp(0, 1).cpu()
        for v, (denorm, keep) in VARIANTS.items():
            rec = fq.to_image(model, x, pred if keep else torch.zeros_like(pred), mask, denorm)
            mse = fq.band_mse(raw, rec.cpu(), n_bands)
            sums[f"mse_{v}"] += mse.sum(0)
            sums[f"psnr_{v}"] += fq.psnr_from_mse(mse).sum(0)
            sums[f"full_{v}"] += fq.image_psnr(raw, rec.cpu()).sum()
            if v == "image" and 0 in index:
                sums["example"] += fq.psnr_from_mse(mse[index.index(0)])
        sums["n"] += len(x)
    return sums


def example_reconstruction(model: torch.nn.Module, val_ds, cfg: JobConfig,
                           device: torch.device, out: Path) -> Path:
    """Fig. 1's example (validation image 0, with the mask the analysis drew for it) as the
    pretraining monitor draws its reconstructions: original | masked input | prediction |
    target, in ``<out>/example_reconstruction.png``. (Fig. 1's band components of the input
    and of the reconstruction are not drawn; its PSNR per band is ``example_band_psnr``.)"""
    x = val_ds[0][0].unsqueeze(0).to(device)
    panels = reconstruction_panels(model, x, [sample_seed(cfg.train.seed, 0, 0)])
    return plot_reconstructions(panels, out / "example_reconstruction.png")


def run(cfg: JobConfig, out: Path, n_bands: int = N_BANDS) -> dict[str, Any]:
    if cfg.pretrain_dir is None:
        raise ValueError("pretrain_dir: the frequency analysis needs a pretraining output folder")
    dist = distributed.setup(cfg.train.device)
    seed_everything(cfg.train.seed)
    pre_dir = Path(cfg.pretrain_dir)
    ckpt = load_pretrain_checkpoint(cfg, pre_dir)
    if ckpt["meta"].get("encoder_only"):
        raise ValueError(f"{pre_dir / 'checkpoint.pth'}: an encoder-only release has no "
                         "decoder: the frequency analysis reconstructs images (use a full "
                         "checkpoint, with its decoder)")
    model = load_encoder(cfg, pre_dir, ckpt).to(dist.device)
    # the control that must differ: the same model untrained (same seed, same kwargs)
    control = build_pretrained(ckpt["meta"])
    control = control.requires_grad_(False).eval().to(dist.device)
    d = cfg.data
    val_ds = build_dataset(d.root, "val", build_eval_transform(d.img_size), d.synth_index_map,
                           bad_images=d.bad_images)
    # the evaluation loader's settings (evaluation.loader: batch, workers)
    loader = make_loader(val_ds, replace(cfg.train, batch_size=cfg.eval.batch_size,
                                         num_workers=cfg.eval.num_workers),
                         train=False, dist=dist)
    pre_run, tags = parent_tags(pre_dir, "pretrain")
    t0 = time.perf_counter()
    with tracked(cfg, out, dist, tags) as tracker:
        sums = measure(model, loader, cfg, dist.device, n_bands)
        untrained = measure(control, loader, cfg, dist.device, n_bands)
        sums |= {"psnr_untrained": untrained["psnr_image"],
                 "full_untrained": untrained["full_image"]}
        flat = distributed.all_reduce_sum(torch.cat(list(sums.values())).tolist(), dist)
        parts = torch.tensor(flat, dtype=torch.float64).split([len(v) for v in sums.values()])
        sums = dict(zip(sums, parts, strict=True))
        n = float(sums["n"])
        if n == 0:
            raise ValueError(f"data.root: no validation images under {d.root}/val")
        metrics = {
            "stage": "frequency", "experiment": cfg.experiment,
            "mlflow_run_id": tracker.run_id if tracker else None, "pretrain_run_id": pre_run,
            "n_images": int(n), "n_bands": n_bands, "mask_ratio": cfg.mask_ratio,
            "band_edges": fq.band_edges(d.img_size, d.img_size, n_bands),
            "denorm": "image", "mask_seed": cfg.train.seed,
            "band_psnr": fq.finite(sums["psnr_image"] / n),
            "band_psnr_pooled": fq.finite(fq.psnr_from_mse(sums["mse_image"] / n)),
            "band_psnr_target_denorm": fq.finite(sums["psnr_target"] / n),
            "band_psnr_patch_stats": fq.finite(sums["psnr_patch_stats"] / n),
            "example_band_psnr": fq.finite(sums["example"]),
            "psnr": fq.finite(sums["full_image"] / n)[0],
            "psnr_target_denorm": fq.finite(sums["full_target"] / n)[0],
            "psnr_patch_stats": fq.finite(sums["full_patch_stats"] / n)[0],
            # control: the untrained model, which the analysis must tell from a trained one
            "band_psnr_untrained": fq.finite(sums["psnr_untrained"] / n),
            "psnr_untrained": fq.finite(sums["full_untrained"] / n)[0],
            "wall_s": time.perf_counter() - t0,
        }
        if tracker:
            write_text(out / "bands.csv", fq.bands_csv(metrics))
            tracker.log_artifact(out / "bands.csv")
            tracker.log_metrics({f"psnr_band_{k:02d}": v for k, v in
                                 enumerate(metrics["band_psnr"]) if v is not None}, step=0)
            if metrics["psnr"] is not None:
                tracker.log_metrics({"psnr": metrics["psnr"]}, step=0)
            example = example_reconstruction(model, val_ds, cfg, dist.device, out)
            tracker.log_artifact(example)
    return complete(out, metrics, tracker, cfg, dist)


def main(argv: list[str] | None = None) -> int:
    return run_main("frequency", run, argv)
