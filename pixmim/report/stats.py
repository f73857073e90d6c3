"""Means and 95% confidence intervals over seeds (torch-free).

A cell of a table is the mean over the seeds of its run; its interval is Student's t
interval of that mean, ``mean ± t(0.975, n-1) * s / sqrt(n)`` (``s``: the sample standard
deviation). A gain (variant minus baseline) pairs the two runs of the same seed and takes
the same interval of the per-seed differences, which removes what the seed moves in both.
One seed has no interval (``nan``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds with the half-width of its 95% interval (nan for one seed)."""

    mean: float
    half_width: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def text(self, digits: int = 1, sign: bool = False) -> str:
        """``40.1 ± 2.3`` (``+1.2 ± 0.8`` with ``sign``); one seed: the mean alone."""
        mean = f"{self.mean:+.{digits}f}" if sign else f"{self.mean:.{digits}f}"
        if math.isnan(self.half_width):
            return mean
        return f"{mean} ± {self.half_width:.{digits}f}"


def estimate(values: Sequence[float]) -> Estimate:
    """Mean and t-interval half-width of ``values`` (one per seed)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values to average")
    mean = sum(values) / n
    if n == 1:
        return Estimate(mean, float("nan"), 1)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    from scipy import stats  # here, not at import: `table --help` starts in 0.1 s

    t = float(stats.t.ppf(0.5 + LEVEL / 2, n - 1))
    return Estimate(mean, t * sd / math.sqrt(n), n)


def paired(variant: Sequence[float], baseline: Sequence[float]) -> Estimate:
    """The gain ``variant - baseline`` over seeds, paired by seed (same order)."""
    if len(variant) != len(baseline):
        raise ValueError(f"paired seeds differ in number: {len(variant)} vs {len(baseline)}")
    return estimate([v - b for v, b in zip(variant, baseline, strict=True)])
