"""Shape bias on the Geirhos cue-conflict stimuli (torch-free), and its Figure-8 plot.

Geirhos et al., ICLR 2019; protocol of bethgelab/model-vs-human: a 1000-way softmax is
mapped to 16 entry-level categories by the MEAN probability over each category's ImageNet
indices; images whose shape and texture categories agree are dropped; the shape bias is
``shape hits / (shape hits + texture hits)`` (decisions matching neither cue do not count).

Undefined values: when no decision matches either cue the ratio is 0/0, and
:func:`shape_bias` returns ``nan`` (a degenerate model, not an input error); callers store it
as ``null`` with the reason. Malformed inputs (unequal lengths, unknown names) raise.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pixmim.io import atomic_write

# ImageNet-1k indices of the 16 categories, as data: bethgelab/model-vs-human
# `modelvshuman/helper/human_categories.py` (HumanCategories.<category>_indices).
CATEGORY_INDICES: dict[str, list[int]] = {
    "airplane": [404],
    "bear": [294, 295, 296, 297],
    "bicycle": [444, 671],
    "bird": [8, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 22, 23, 24, 80, 81, 82, 83, 87, 88, 89,
             90, 91, 92, 93, 94, 95, 96, 98, 99, 100, 127, 128, 129, 130, 131, 132, 133, 135,
             136, 137, 138, 139, 140, 141, 142, 143, 144, 145],
    "boat": [472, 554, 625, 814, 914],
    "bottle": [440, 720, 737, 898, 899, 901, 907],
    "car": [436, 511, 817],
    "cat": [281, 282, 283, 284, 285, 286],
    "chair": [423, 559, 765, 857],
    "clock": [409, 530, 892],
    "dog": [*range(152, 192), *range(193, 204), *range(205, 227), *range(228, 242),
            *range(243, 251), *range(252, 258), 259, 261, 262, 263, *range(265, 269)],
    "elephant": [385, 386],
    "keyboard": [508, 878],
    "knife": [499],
    "oven": [766],
    "truck": [555, 569, 656, 675, 717, 734, 864, 867],
}  # fmt: skip
CATEGORIES: tuple[str, ...] = tuple(sorted(CATEGORY_INDICES))
OVERALL = "overall"  # key of a model's overall shape bias in plot_shape_bias's input

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def category_scores(probs: Any) -> np.ndarray:
    """Mean softmax probability of each category's ImageNet indices.

    Args:
        probs: [N, 1000] softmax probabilities (ndarray or torch tensor).

    Returns:
        [N, 16] scores, columns in :data:`CATEGORIES` order.
    """
    if hasattr(probs, "detach"):
        probs = probs.detach().float().cpu().numpy()
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 1000:
        raise ValueError(f"expected probabilities [N, 1000], got shape {p.shape}")
    if p.size and (p.min() < 0 or not np.allclose(p.sum(1), 1.0, atol=1e-3)):
        raise ValueError("expected softmax probabilities (rows >= 0 summing to 1), got "
                         "something else (logits?): apply softmax first")
    return np.stack([p[:, CATEGORY_INDICES[c]].mean(1) for c in CATEGORIES], axis=1)


def probabilities_to_16(probs: Any) -> list[str]:
    """The 16-class decision of each row: the category with the highest mean probability.

    Args:
        probs: [N, 1000] softmax probabilities (ndarray or torch tensor).
    """
    return [CATEGORIES[j] for j in category_scores(probs).argmax(1)]


def _check(shape: Sequence[str], texture: Sequence[str], decision: Sequence[str]) -> None:
    if not len(shape) == len(texture) == len(decision):
        raise ValueError(f"shape, texture and decision differ in length: "
                         f"{len(shape)}, {len(texture)}, {len(decision)}")
    unknown = sorted((set(shape) | set(texture) | set(decision)) - set(CATEGORIES))
    if unknown:
        raise ValueError(f"unknown category name(s) {unknown}; expected one of {CATEGORIES}")


def cue_hits(shape: Sequence[str], texture: Sequence[str],
             decision: Sequence[str]) -> tuple[int, int]:
    """(shape hits, texture hits) over the rows whose shape and texture differ."""
    _check(shape, texture, decision)
    rows = [(s, t, d) for s, t, d in zip(shape, texture, decision, strict=True) if s != t]
    return sum(d == s for s, _, d in rows), sum(d == t for _, t, d in rows)


def shape_bias(shape: Sequence[str], texture: Sequence[str], decision: Sequence[str]) -> float:
    """Fraction of cue-matching decisions that follow the shape (1 = all shape).

    Args:
        shape, texture, decision: category names, one per image; rows with
            ``shape == texture`` are dropped.

    Returns:
        ``shape hits / (shape hits + texture hits)``, or ``nan`` when no decision matches
        either cue (0/0: undefined, see the module docstring).

    Raises:
        ValueError: unequal lengths or a name not in :data:`CATEGORIES`.
    """
    s, t = cue_hits(shape, texture, decision)
    return s / (s + t) if s + t else math.nan


def shape_bias_per_category(shape: Sequence[str], texture: Sequence[str],
                            decision: Sequence[str]) -> dict[str, float]:
    """:func:`shape_bias` of the images of each shape category (``nan``: no hits there)."""
    _check(shape, texture, decision)
    out = {}
    for c in CATEGORIES:
        rows = [i for i, s in enumerate(shape) if s == c]
        out[c] = shape_bias(*([seq[i] for i in rows] for seq in (shape, texture, decision)))
    return out


def parse_cue_conflict_name(path: str | Path) -> tuple[str, str]:
    """``<root>/<shape>/<shape><i>-<texture><j>.png`` -> ``(shape, texture)``.

    The shape is the folder; the texture is the last ``-``-separated token of the file stem
    with its digits removed (model-vs-human's ``get_texture_category``).

    Raises:
        ValueError: naming the file when the folder, the stem or the texture is not a category.
    """
    p = Path(path)
    shape = p.parent.name
    texture = re.sub(r"\d", "", p.stem.split("-")[-1])
    stem_shape = re.sub(r"\d", "", p.stem.split("-")[0])
    if shape not in CATEGORIES or texture not in CATEGORIES or stem_shape != shape:
        raise ValueError(f"{p}: not a cue-conflict stimulus name "
                         "<root>/<shape>/<shape><i>-<texture><j>.png of the 16 categories")
    return shape, texture


def list_stimuli(root: str | Path) -> list[Path]:
    """The stimulus files ``<root>/<category>/*`` (sorted); errors when there are none."""
    root = Path(root)
    files = sorted(f for f in root.glob("*/*") if f.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"eval.cue_conflict: no images under {root}/<category>/")
    return files


def figure_input(metrics: Mapping[str, Any]) -> dict[str, float]:
    """A shape-bias stage's ``metrics.json`` -> one model's entry of :func:`plot_shape_bias`."""
    nan = math.nan
    out = {c: nan if v is None else float(v) for c, v in metrics["per_category"].items()}
    out[OVERALL] = nan if metrics["shape_bias"] is None else float(metrics["shape_bias"])
    return out


def _value(values: Mapping[str, float | None], key: str) -> float:
    """``values[key]`` as a float; missing or None (JSON null) -> nan."""
    v = values.get(key)
    return math.nan if v is None else float(v)


def plot_shape_bias(results: Mapping[str, Mapping[str, float]], out_png: str | Path) -> Path:
    """Figure-8-style plot: one row per category, x = fraction of shape decisions.

    Args:
        results: ``results[model][category]`` = per-category shape bias (``nan``, ``None``
            or absent: no hits, not drawn); ``results[model]["overall"]`` (optional) is drawn
            as a vertical line. :func:`figure_input` builds an entry from ``metrics.json``.
        out_png: the PNG to write (atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 7))
    rows = {c: i for i, c in enumerate(reversed(CATEGORIES))}
    markers = "os^Dvp*hX<>"
    for k, (model, values) in enumerate(results.items()):
        color = f"C{k % 10}"
        vals = {c: _value(values, c) for c in (*CATEGORIES, OVERALL)}
        cats = [c for c in CATEGORIES if not math.isnan(vals[c])]
        overall = vals[OVERALL]
        label = model if math.isnan(overall) else f"{model} ({overall:.2f})"
        ax.scatter([vals[c] for c in cats], [rows[c] for c in cats], color=color,
                   marker=markers[k % len(markers)], s=45, alpha=0.85, label=label,
                   clip_on=False, zorder=3)
        if not math.isnan(overall):
            ax.axvline(overall, color=color, lw=1.5, ls="--")
    ax.set(xlim=(0, 1), ylim=(-0.5, len(CATEGORIES) - 0.5),
           xlabel="fraction of 'shape' decisions", ylabel="shape category")
    ax.set_yticks(list(rows.values()), list(rows))
    top = ax.secondary_xaxis("top", functions=(lambda x: 1 - x, lambda x: 1 - x))
    top.set_xlabel("fraction of 'texture' decisions")
    ax.grid(axis="x", alpha=0.3)
    if results:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=min(len(results), 4),
                  fontsize="small", frameon=False)
    fig.tight_layout()
    atomic_write(out_png, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return Path(out_png)
