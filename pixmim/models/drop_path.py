"""Stochastic depth drawn from each sample's seed, not from the process's RNG.

timm's DropPath draws one Bernoulli per sample from the global torch RNG of the process
that runs the batch: which samples skip a block then depends on how the batch is split
over processes and micro-batches (and every process, seeded alike, draws the same pattern
for its shard). :func:`seed_drop_path` swaps each DropPath of a model for one that reads
its per-sample uniforms from a table filled, before each training forward, from the
samples' seeds (:func:`pixmim.data.datasets.sample_seed`: run seed, epoch, index), so a
sample's drop decisions are the same whatever the process count, the per-process batch or
the accumulation. Same law as timm's: keep with probability 1 - p, kept paths scaled by
1 / (1 - p) (Huang et al. 2016; timm ``drop_path`` with ``scale_by_keep``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import DropPath

_SALT = 0xD209  # decorrelates these draws from the other uses of a sample's seed


class SampleDraws:
    """Per-sample uniforms for one forward: ``columns`` draws per sample, handed out in call
    order (a module called twice in a forward, as ConvMAE's CBlock does, takes two)."""

    def __init__(self, columns: int) -> None:
        self.columns, self.noise, self.used = columns, None, 0

    def fill(self, seeds, device: torch.device) -> None:
        rows = [torch.rand(self.columns, generator=torch.Generator().manual_seed(int(s) ^ _SALT))
                for s in seeds]
        self.noise, self.used = torch.stack(rows).to(device), 0

    def take(self, x: torch.Tensor) -> torch.Tensor:
        if self.noise is None or self.used >= self.columns or len(self.noise) != len(x):
            raise RuntimeError("seeded drop path: fill() the draws with the batch's sample "
                               "seeds before each training forward")
        self.used += 1
        return self.noise[:, self.used - 1]


class SampleDropPath(nn.Module):
    """DropPath(p) whose keep decisions come from :class:`SampleDraws`."""

    def __init__(self, drop_prob: float, draws: SampleDraws, scale_by_keep: bool = True) -> None:
        super().__init__()
        self.drop_prob, self.draws, self.scale_by_keep = drop_prob, draws, scale_by_keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        mask = (self.draws.take(x) < keep).to(x.dtype)
        if self.scale_by_keep:
            mask = mask / keep
        return x * mask.view(-1, *([1] * (x.ndim - 1)))

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def seed_drop_path(model: nn.Module) -> SampleDraws | None:
    """Replace every timm DropPath of ``model`` (in place) by a :class:`SampleDropPath`
    sharing one :class:`SampleDraws`; returns it (None: the model has no DropPath)."""
    found = [(parent, name, child) for parent in model.modules()
             for name, child in parent.named_children() if isinstance(child, DropPath)]
    if not found:
        return None
    draws = SampleDraws(2 * len(found))
    for parent, name, child in found:
        setattr(parent, name, SampleDropPath(child.drop_prob, draws,
                                             getattr(child, "scale_by_keep", True)))
    return draws
