"""The figures of the paper's analyses, drawn from their stages' files (torch-free).

* :func:`plot_frequency`: PSNR per frequency band (PixMIM Fig. 1 and Fig. 5) from the
  frequency stages' ``metrics.json`` (:mod:`pixmim.analysis.frequency` computes them).
* :func:`plot_coverage`: object coverage J(F) per crop (PixMIM Fig. 6) from the coverage
  stage's ``coverage.csv``, whose format (:func:`to_csv`, :func:`read_csv`) is kept here
  (:mod:`pixmim.analysis.coverage` computes the values).
* :func:`plot_reconstructions`: original | masked input | prediction | target per image (a
  pretraining's reconstructions, :mod:`pixmim.stages.monitor`), from arrays.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from pixmim.io import atomic_write, write_text
from pixmim.report.stats import estimate, paired

PAPER = {  # PixMIM Fig. 6 (%): (without masking, with 75 % masking)
    "rrc": (68.3, 17.1), "cc": (82.7, 20.7), "src": (88.2, 22.1)}


# ------------------------------------------------------------- Fig. 1 and Fig. 5
def _fmt(v: float | None) -> str:
    return "" if v is None or v != v else f"{v:.4f}"  # None or nan: empty


def plot_frequency(rows: list[tuple[str, list[str | Path]]], out_png: str | Path,
                   out_csv: str | Path, key: str = "band_psnr",
                   title: str = "Reconstruction PSNR per frequency band") -> Path:
    """PSNR per frequency band, one line per model (PixMIM Fig. 5), and its data as CSV.

    Args:
        rows: ``(label, paths of a frequency stage's metrics.json, one per seed)`` pairs
            (a single path is one seed); a line is the mean over seeds, its band the 95%
            interval.
        out_png: figure to write; out_csv: ``model,band,r_lo,r_hi,r_mid,psnr_db,ci95,seeds``.
        key: the metrics entry drawn: ``band_psnr`` (mean over images, Fig. 5),
            ``example_band_psnr`` (the first image, Fig. 1), ``band_psnr_patch_stats``, ...
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loaded = []
    for label, paths in rows:
        paths = [paths] if isinstance(paths, str | Path) else list(paths)
        loaded.append((label, [json.loads(Path(p).read_text()) for p in paths]))
    diff = len(loaded) > 1 and all(len(ms) == len(loaded[0][1]) for _, ms in loaded)
    fig, axes = plt.subplots(1, 2 if diff else 1, figsize=(11 if diff else 5.5, 3.8),
                             squeeze=False)
    ax = axes[0][0]
    lines = ["model,band,r_lo,r_hi,r_mid,psnr_db,ci95,seeds"]

    def bands(ms: list[dict], k: str) -> list[list[float]]:
        return [[float("nan") if m[k][b] is None else m[k][b] for m in ms]
                for b in range(ms[0]["n_bands"])]

    e = loaded[0][1][0]["band_edges"]
    mids = [(e[b] + e[b + 1]) / 2 for b in range(loaded[0][1][0]["n_bands"])]
    for label, ms in loaded:
        est = [estimate(v) for v in bands(ms, key)]
        line, = ax.plot(mids, [x.mean for x in est], marker="o", ms=3, label=label)
        if len(ms) > 1:
            ax.fill_between(mids, [x.low for x in est], [x.high for x in est],
                            color=line.get_color(), alpha=0.2, lw=0)
        lines += [f"{label},{b},{e[b]:.4f},{e[b + 1]:.4f},{mids[b]:.4f},{_fmt(x.mean)},"
                  f"{_fmt(x.half_width)},{x.n}" for b, x in enumerate(est)]
        control = key.replace("band_psnr", "band_psnr_untrained")
        if key.startswith("band_psnr") and control in ms[0]:
            est = [estimate(v) for v in bands(ms, control)]
            ax.plot(mids, [x.mean for x in est], ls=":", color=line.get_color(),
                    label=f"{label}, untrained (control)")
            lines += [f"{label} untrained,{b},{e[b]:.4f},{e[b + 1]:.4f},{mids[b]:.4f},"
                      f"{_fmt(x.mean)},{_fmt(x.half_width)},{x.n}" for b, x in enumerate(est)]
    if diff:  # each model minus the first, paired by seed, with its interval
        dx = axes[0][1]
        base_label, base = loaded[0]
        for label, ms in loaded[1:]:
            est = [paired(v, b) for v, b in zip(bands(ms, key), bands(base, key), strict=True)]
            line, = dx.plot(mids, [x.mean for x in est], marker="o", ms=3,
                            label=f"{label} - {base_label}")
            if len(ms) > 1:
                dx.fill_between(mids, [x.low for x in est], [x.high for x in est],
                                color=line.get_color(), alpha=0.2, lw=0)
        dx.axhline(0, color="k", lw=0.8)
        dx.set(xlabel="frequency (radius of the band, bins)", ylabel="PSNR difference (dB)",
               title=f"Paired difference over {len(base)} seed(s), 95% interval")
        dx.grid(alpha=0.3)
        dx.legend(fontsize=8)
    ax.set(xlabel="frequency (radius of the band, bins; last band holds the corners)",
           ylabel="PSNR (dB)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out_png = Path(out_png)
    atomic_write(out_png, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    write_text(out_csv, "\n".join(lines) + "\n")
    return out_png


# ------------------------------------------------------------------------ Fig. 6
def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, ["crop", "masking", "J_mean", "J_std", "n"],
                            lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({**r, "masking": str(r["masking"]).lower(),
                         "J_mean": f"{r['J_mean']:.6f}", "J_std": f"{r['J_std']:.6f}"})
    return buf.getvalue()


def read_csv(path: str | Path) -> list[dict]:
    with Path(path).open() as f:
        return [{"crop": r["crop"], "masking": r["masking"] == "true",
                 "J_mean": float(r["J_mean"]), "J_std": float(r["J_std"]), "n": int(r["n"])}
                for r in csv.DictReader(f)]


def plot_coverage(csv_path: str | Path, out_png: str | Path, upper_bound: float | None = 0.25,
                  paper: bool = True) -> Path:
    """Horizontal bars of J(F) (%) per crop, without and with masking (PixMIM Fig. 6).

    Args:
        csv_path: a ``coverage.csv`` of the coverage stage.
        upper_bound: the with-masking bound ``1 - mask_ratio`` (dashed line); None: none.
        paper: mark the paper's values (Fig. 6) for the crops it reports.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_csv(csv_path)
    crops = list(dict.fromkeys(r["crop"] for r in rows))
    value = {(r["crop"], r["masking"]): 100 * r["J_mean"] for r in rows}
    fig, ax = plt.subplots(figsize=(8.0, 1.2 + 0.75 * len(crops)))
    height = 0.38
    for k, (masked, colour, label) in enumerate(
            [(False, "tab:blue", "w/o mask"), (True, "tab:orange", "w/ mask")]):
        ys = [i + (k - 0.5) * height for i in range(len(crops))]
        vals = [value.get((c, masked), math.nan) for c in crops]
        bars = ax.barh(ys, vals, height=height, color=colour, label=label)
        ax.bar_label(bars, fmt="%.1f", padding=2, fontsize=8)
        if paper:
            ref = [(y, PAPER[c][k]) for y, c in zip(ys, crops, strict=True) if c in PAPER]
            if ref:
                ax.scatter([v for _, v in ref], [y for y, _ in ref], marker="|", s=160,
                           color="black", zorder=3, label="paper" if k == 0 else None)
    if upper_bound is not None:
        ax.axvline(100 * upper_bound, color="grey", ls="--", lw=1,
                   label=f"upper bound w/ mask ({100 * upper_bound:.0f}%)")
    ax.set_yticks(range(len(crops)), [c.upper() for c in crops])
    ax.set(xlabel="object coverage J(F) (%)", xlim=(0, 112), title="Object coverage")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    out_png = Path(out_png)
    atomic_write(out_png, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return out_png


# --------------------------------------------------------------- reconstructions
RECON_COLUMNS = ("original", "masked input", "prediction", "target")
RECON_PANEL_PX = 128  # side of one panel in the PNG (px); images are scaled up to it
RECON_HEADER_PX = 24  # the column titles' strip above the panels (px)


def plot_reconstructions(panels, out_png: str | Path, columns=RECON_COLUMNS) -> Path:
    """A grid of images, one row per image and one column per panel (MAE's visualisation:
    original | masked input | prediction with the visible patches pasted | target), the
    column titles above; the PNG is exactly ``len(columns) x RECON_PANEL_PX`` px wide and
    ``rows x RECON_PANEL_PX + RECON_HEADER_PX`` px high.

    Args:
        panels: [rows, len(columns), H, W, 3] RGB values in [0, 1] (a numpy array or nested
            lists; no torch here).
        out_png: figure to write (atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    grid = np.clip(np.asarray(panels, dtype=np.float32), 0.0, 1.0)
    if grid.ndim != 5 or grid.shape[1] != len(columns) or grid.shape[-1] != 3:
        raise ValueError(f"expected panels [rows, {len(columns)}, H, W, 3], got {grid.shape}")
    rows, cols = grid.shape[:2]
    dpi = 100
    width, height = cols * RECON_PANEL_PX, rows * RECON_PANEL_PX + RECON_HEADER_PX
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    for r in range(rows):
        for c in range(cols):
            ax = fig.add_axes((c / cols, 1 - (RECON_HEADER_PX + (r + 1) * RECON_PANEL_PX)
                               / height, 1 / cols, RECON_PANEL_PX / height))
            ax.imshow(grid[r, c], interpolation="nearest")
            ax.set_axis_off()
    for c, name in enumerate(columns):
        fig.text((c + 0.5) / cols, 1 - RECON_HEADER_PX / 2 / height, name, ha="center",
                 va="center", fontsize=9)
    out_png = Path(out_png)
    atomic_write(out_png, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    plt.close(fig)
    return out_png
