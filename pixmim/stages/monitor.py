"""What a pretraining watches while it learns (``pretrain.monitor``: :class:`MonitorConfig`).

* **k-NN top-1** (``knn_top1``, MLflow step = epoch): the features the linear probe reads
  (``forward_probe_features``, standardised per dimension as its BatchNorm head does) of
  ``knn_bank`` training images as the bank and of ``knn_queries`` validation images as the
  queries, classified by DINO's weighted vote
  (:mod:`pixmim.evaluation.knn`: cosine similarity, k = 20, weights exp(sim / 0.07)). The
  images are drawn once with ``monitor.seed`` from the run's own ``train/`` and ``val/``
  folders (labels: the class folders, matched by name) and read with the evaluation
  transform (resize, centre crop) at the pretraining's input size.
* **Reconstructions**: ``recon_images`` validation images (drawn with ``monitor.seed``),
  each masked with a mask drawn from its own seed, as original | masked input (removed
  patches grey) | prediction | target, in ``<out>/reconstructions/epoch_XXXX.png`` and as
  the MLflow image ``reconstructions`` at step = epoch. The prediction is MAE's
  visualisation (:func:`pixmim.analysis.frequency.to_image`): with ``norm_pix_loss`` the
  per-patch normalised prediction is un-normalised with the mean and variance of the
  target's own patches, and the visible patches of the original are pasted over it. The
  target is the method's (the image, or its low-passed version for PixMIM variants) as an
  image, i.e. before the per-patch normalisation, so prediction and target compare as is.

Each runs every N epochs and at the last, on the main process only, in eval mode and
without gradients, with every RNG state (torch's CPU and device generators, Python's,
numpy's) restored afterwards, so the training after it (data order, crops, masks, drop
path) is the one without the monitor; the other processes wait at the epoch's checkpoint
barrier. The k-NN values are part of the loop's epoch records, so the curve survives a
preemption in the resume state.
"""

from __future__ import annotations

import random
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixmim.analysis import frequency as fq
from pixmim.config import JobConfig
from pixmim.data.datasets import Subset, build_dataset, sample_seed
from pixmim.data.loading import UInt8Crop, normalise
from pixmim.data.transforms import build_eval_transform
from pixmim.engine.loop import autocast_for
from pixmim.evaluation.knn import knn_top1
from pixmim.report.plots import plot_reconstructions

RECON_DIR = "reconstructions"
# the draws of the monitor's images (salts of sample_seed: bank, queries, reconstructions)
_BANK, _QUERIES, _RECON = 1, 2, 3


@contextmanager
def preserved_rng(device: torch.device):
    """Restore torch's CPU (and ``device``'s CUDA) generator, Python's and numpy's RNG
    states on exit, whatever ran inside."""
    cpu, py, npy = torch.get_rng_state(), random.getstate(), np.random.get_state()
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        random.setstate(py)
        np.random.set_state(npy)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)


@contextmanager
def eval_mode(model: torch.nn.Module):
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def draw(n_total: int, n: int, seed: int, salt: int) -> list[int]:
    """``min(n, n_total)`` indices of ``range(n_total)``, a seeded draw, sorted."""
    g = torch.Generator().manual_seed(sample_seed(seed, salt, n_total))
    return sorted(torch.randperm(n_total, generator=g)[:n].tolist())


@torch.no_grad()
def reconstruction_panels(model: torch.nn.Module, x: torch.Tensor, seeds: list[int]
                          ) -> np.ndarray:
    """A MIM model's reconstructions of ``x`` [N, 3, H, W] (normalised), image ``i`` masked
    with a mask drawn from ``seeds[i]``: [N, 4, H, W, 3] in [0, 1], original | masked input
    (removed patches grey) | prediction (module docstring) | target as an image."""
    pred, mask = fq.predict(model, x, model.mask_ratio, seeds)
    removed = model.unpatchify(mask.unsqueeze(-1).expand_as(pred))  # 1 = removed
    raw = (x * model.std + model.mean).clamp(0, 1)
    target = model.unpatchify(model.forward_target(x)) * model.std + model.mean
    cols = [raw, raw * (1 - removed) + 0.5 * removed, fq.to_image(model, x, pred, mask, "target"),
            target.clamp(0, 1)]
    return torch.stack(cols, dim=1).permute(0, 1, 3, 4, 2).float().cpu().numpy()


class Monitor:
    """The pretraining's monitor (module docstring); call it with (epoch, last) at the end
    of each epoch (the training loop's ``monitor`` hook) for the epoch record's values."""

    def __init__(self, model: torch.nn.Module, cfg: JobConfig, out: Path, dist,
                 tracker=None) -> None:
        self.model, self.cfg, self.out, self.dist, self.tracker = model, cfg, out, dist, tracker
        self.m, self._cache = cfg.monitor, {}
        self.skipped = None
        val = Path(cfg.data.root) / "val"
        if self.active and not val.is_dir():  # e.g. an unlabelled pretraining set
            self.skipped = f"no labelled validation split {val}"
            print(f"[monitor] off: {self.skipped}", file=sys.stderr)

    @property
    def active(self) -> bool:
        return (self.m.knn_every > 0 or self.m.recon_every > 0) and self.skipped is None

    def due(self, every: int, epoch: int, last: bool) -> bool:
        return every > 0 and (epoch % every == 0 or last)

    def __call__(self, epoch: int, last: bool) -> dict[str, float]:
        knn, recon = (self.due(e, epoch, last) for e in (self.m.knn_every, self.m.recon_every))
        if not self.active or not self.dist.is_main or not (knn or recon):
            return {}
        record = {}
        with preserved_rng(self.dist.device), eval_mode(self.model):
            if knn:
                record["knn_top1"] = self.knn_top1()
            if recon:
                self.reconstructions(epoch)
        return record

    # ------------------------------------------------------------------ data
    def _split(self, split: str):
        """(dataset of uint8 eval crops, label of each class folder by the train split's
        class names: -1 for a class the bank has not)."""
        d = self.cfg.data
        ds = build_dataset(d.root, split, UInt8Crop(build_eval_transform(d.img_size)),
                           imagenet_labels=False, bad_images=d.bad_images)
        names = {c: i for i, c in enumerate(self._train_classes())}
        return ds, [names.get(c, -1) for c in ds.classes]

    def _train_classes(self) -> list[str]:
        root = Path(self.cfg.data.root) / "train"
        return sorted(p.name for p in root.iterdir() if p.is_dir())

    def images(self, what: str) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 [n, 3, S, S] images and [n] labels of ``what`` (bank | queries | recon),
        read once and kept (the draws are fixed; S is the pretraining's input size)."""
        if what not in self._cache:
            split, n, salt = {"bank": ("train", self.m.knn_bank, _BANK),
                              "queries": ("val", self.m.knn_queries, _QUERIES),
                              "recon": ("val", self.m.recon_images, _RECON)}[what]
            ds, labels = self._split(split)
            idx = draw(len(ds), n, self.m.seed, salt)
            loader = torch.utils.data.DataLoader(
                Subset(ds, idx), batch_size=self.batch, num_workers=self.cfg.train.num_workers,
                generator=torch.Generator().manual_seed(self.m.seed))
            imgs, ys = zip(*loader, strict=True)
            self._cache[what] = (torch.cat(imgs), torch.tensor([labels[y] for b in ys
                                                                for y in b.tolist()]))
        return self._cache[what]

    @property
    def batch(self) -> int:
        t = self.cfg.train
        return max(1, t.batch_size // t.accum_steps // self.dist.world)

    # ------------------------------------------------------------------ k-NN
    def features(self, imgs: torch.Tensor) -> torch.Tensor:
        dev, out = self.dist.device, []
        for x in imgs.split(self.batch):
            with autocast_for(self.cfg.train, dev):
                out.append(self.model.forward_probe_features(normalise(x.to(dev))).float())
        return torch.cat(out)

    def knn_top1(self) -> float:
        """k-NN top-1 (%) on the features as the linear probe reads them: its head's
        BatchNorm (no affine) standardises each dimension, here by the bank's mean and
        standard deviation, before the cosine similarity. (Raw MAE features, a few large
        dimensions dominating the cosine, fell below the untrained encoder's k-NN on the
        default: 9.6% against 12.3% after 25 epochs; standardised 15.0% against 12.9%.)"""
        bank, bank_y = self.images("bank")
        queries, query_y = self.images("queries")
        fb, fq = self.features(bank), self.features(queries)
        mean, std = fb.mean(dim=0), fb.std(dim=0) + 1e-6  # 1e-6: a constant dimension
        return knn_top1((fb - mean) / std, bank_y.to(self.dist.device), (fq - mean) / std,
                        query_y.to(self.dist.device), self.m.knn_k, self.m.knn_temperature)

    # ------------------------------------------------------------ reconstructions
    def panels(self) -> np.ndarray:
        """[rows, 4, S, S, 3] in [0, 1]: original | masked input | prediction | target."""
        x = normalise(self.images("recon")[0].to(self.dist.device))
        return reconstruction_panels(self.model, x, [sample_seed(self.m.seed, _RECON, i)
                                                     for i in range(len(x))])

    def reconstructions(self, epoch: int) -> Path:
        path = plot_reconstructions(self.panels(),
                                    self.out / RECON_DIR / f"epoch_{epoch:04d}.png")
        if self.tracker is not None:
            self.tracker.log_image(path, RECON_DIR, step=epoch)
        return path

    # ------------------------------------------------------------------ summary
    def summary(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        """metrics.json's entries: the k-NN curve and final value, its setup, the figures."""
        if self.skipped:
            return {"monitor_skipped": self.skipped}
        if not self.dist.is_main:
            return {}
        out: dict[str, Any] = {}
        curve = [{"epoch": h["epoch"], "top1": h["knn_top1"]} for h in history
                 if "knn_top1" in h]
        if curve:
            m = self.m
            out.update(knn_top1=curve[-1]["top1"], knn_curve=curve,
                       knn={"k": m.knn_k, "temperature": m.knn_temperature,
                            "bank": len(self.images("bank")[1]),
                            "queries": len(self.images("queries")[1]), "seed": m.seed})
        figures = sorted((self.out / RECON_DIR).glob("epoch_*.png"))
        if figures:
            out["reconstructions"] = [str(f.relative_to(self.out)) for f in figures]
        return out
