"""Figures built from ``metrics.json`` files (torch-free).

``python -m pixmim figure curves --spec SPEC.yaml --out FILE.png`` draws, for each row of
a table spec, the pretraining loss curve and the linear-probe top-1 curve side by side.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from pixmim.engine.io import atomic_write, read_json


def curves(spec: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_top1) = plt.subplots(1, 2, figsize=(10, 3.8))
    for row in spec["rows"]:
        probe_file = Path(row["cells"]["lin"]["file"])
        pre = read_json(probe_file.parent.parent / "pretrain" / "metrics.json")
        probe = read_json(probe_file)
        ax_loss.plot(range(1, len(pre["loss_curve"]) + 1), pre["loss_curve"], label=row["label"])
        ax_top1.plot(range(1, len(probe["top1_curve"]) + 1), probe["top1_curve"],
                     label=f"{row['label']} (best {probe['top1_best']:.1f})")
    ax_loss.set(xlabel="pretraining epoch", ylabel="reconstruction loss (masked patches)",
                title="Pretraining")
    ax_top1.set(xlabel="linear-probe evaluation", ylabel="top-1 (%)", title="Linear probe")
    for ax in (ax_loss, ax_top1):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(spec["title"])
    fig.tight_layout()
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return out


def shape_bias(spec: dict, out: Path) -> Path:
    """Figure 8 from the shape_bias stages' metrics; its data also as ``<out>.csv``."""
    import pandas as pd

    from pixmim.evaluation.shape_bias import figure_input, plot_shape_bias

    results = {row["label"]: figure_input(read_json(row["file"])) for row in spec["rows"]}
    rows = [{"model": model, "category": c, "shape_bias": v}
            for model, values in results.items() for c, v in values.items()]
    plot_shape_bias(results, out)
    csv = pd.DataFrame(rows).to_csv(index=False, float_format="%.4f")
    atomic_write(out.with_suffix(".csv"), lambda tmp: tmp.write_text(csv))
    return out


FIGURES = {"curves": curves, "shape_bias": shape_bias}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pixmim figure")
    p.add_argument("kind", choices=sorted(FIGURES))
    p.add_argument("--spec", required=True, help="table spec YAML written by the workflow")
    p.add_argument("--out", required=True, help="PNG file to write")
    args = p.parse_args(argv)
    FIGURES[args.kind](yaml.safe_load(Path(args.spec).read_text()), Path(args.out))
    print(f"wrote {args.out}")
    return 0
