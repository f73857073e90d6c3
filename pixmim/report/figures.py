"""Figures built from ``metrics.json`` files (torch-free).

``python -m pixmim figure curves --spec SPEC.yaml --out FILE.png`` draws, for each row of
a table spec, the pretraining loss curve and the linear-probe top-1 curve side by side.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from pixmim.io import atomic_write, read_json


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


def frequency(spec: dict, out: Path) -> Path:
    """Figure 5 (band PSNR, one line per model) and Figure 1 (the first image's bands)."""
    from pixmim.analysis.frequency import plot_frequency

    rows = [(row["label"], row["file"]) for row in spec["rows"]]
    plot_frequency(rows, out, out.with_suffix(".csv"))
    example = out.parent / "fig1_frequency_example.png"
    plot_frequency(rows, example, example.with_suffix(".csv"), key="example_band_psnr",
                   title="Reconstruction PSNR per frequency band, one example image")
    return out


def coverage(spec: dict, out: Path) -> Path:
    """Figure 6 from the coverage stage's CSV (copied beside the PNG)."""
    from pixmim.analysis.coverage import plot_coverage

    plot_coverage(spec["file"], out)
    text = Path(spec["file"]).read_text()
    atomic_write(out.with_suffix(".csv"), lambda tmp: tmp.write_text(text))
    return out


def epochs(spec: dict, out: Path) -> Path:
    """Figure 7: each column of the spec against the pretraining epochs (the catalogue's),
    one line per label; the data also as ``<out>.csv``."""
    import matplotlib
    import pandas as pd

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = []
    for row in spec["rows"]:
        for col, cell in row["cells"].items():
            value = read_json(cell["file"]).get(cell["key"])
            records.append({"model": row["label"], "epochs": row["epochs"], "column": col,
                            "value": None if value is None else float(value),
                            "experiment": row["experiment"]})
    df = pd.DataFrame(records)
    cols = list(dict.fromkeys(df["column"]))
    names = {"ft": "fine-tune top-1 (%)", "lin": "linear-probe top-1 (%)", "miou": "mIoU"}
    fig, axes = plt.subplots(1, len(cols), figsize=(4.2 * len(cols), 3.6), squeeze=False)
    for ax, col in zip(axes[0], cols, strict=True):
        for model, part in df[df["column"] == col].groupby("model", sort=False):
            part = part.sort_values("epochs")
            ax.plot(part["epochs"], part["value"], marker="o",
                    ls="--" if not model.startswith("PixMIM") else "-", label=model)
        ax.set(xlabel="pretraining epochs (catalogue)", ylabel=names.get(col, col))
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    fig.suptitle("Performance vs pretraining epochs")
    fig.tight_layout()
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    csv = df.to_csv(index=False, float_format="%.4f")
    atomic_write(out.with_suffix(".csv"), lambda tmp: tmp.write_text(csv))
    return out


FIGURES = {"curves": curves, "shape_bias": shape_bias, "frequency": frequency,
           "coverage": coverage, "epochs": epochs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pixmim figure")
    p.add_argument("kind", choices=sorted(FIGURES))
    p.add_argument("--spec", required=True, help="table spec YAML written by the workflow")
    p.add_argument("--out", required=True, help="PNG file to write")
    args = p.parse_args(argv)
    FIGURES[args.kind](yaml.safe_load(Path(args.spec).read_text()), Path(args.out))
    print(f"wrote {args.out}")
    return 0
