"""Figures built from ``metrics.json`` files (torch-free).

``python -m pixmim figure curves --spec SPEC.yaml --out FILE.png`` draws, for each row of
a table spec, the pretraining loss curve and the linear-probe top-1 curve side by side.
A catalogue figure names its function as ``module:function`` (``draw``), called with its
spec and the first of its files; these here are the paper's.
With several seeds each line is the mean over seeds with its 95% interval as a band or
error bar (:mod:`pixmim.report.stats`).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from pathlib import Path

import yaml

from pixmim.engine.tracking import log_report, resolve_uri
from pixmim.evaluation.shape_bias import figure_input, plot_shape_bias
from pixmim.io import atomic_write, read_json
from pixmim.report.plots import plot_coverage, plot_frequency
from pixmim.report.stats import estimate, paired
from pixmim.report.tables import spec_runs


def files_of(entry: dict) -> list[str]:
    """The per-seed files of a spec row or cell (an older spec's single ``file``)."""
    return list(entry.get("files") or [entry["file"]])


def mean_band(curves: list[list[float]]) -> tuple[list[float], list[float], list[float]]:
    """Point-wise mean and 95% interval of equally long curves (one per seed)."""
    n = min(len(c) for c in curves)
    points = [estimate([c[i] for c in curves]) for i in range(n)]
    return [p.mean for p in points], [p.low for p in points], [p.high for p in points]


def _plot_band(ax, curves: list[list[float]], label: str) -> None:
    mean, low, high = mean_band(curves)
    x = range(1, len(mean) + 1)
    line, = ax.plot(x, mean, label=label)
    if len(curves) > 1:
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, lw=0)


def curves(spec: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_top1) = plt.subplots(1, 2, figsize=(10, 3.8))
    for row in spec["rows"]:
        probes = [Path(f) for f in files_of(row["cells"]["lin"])]
        pre = [read_json(f.parent.parent / "pretrain" / "metrics.json") for f in probes]
        probe = [read_json(f) for f in probes]
        _plot_band(ax_loss, [m["loss_curve"] for m in pre], row["label"])
        best = estimate([m["top1_best"] for m in probe]).text()
        _plot_band(ax_top1, [m["top1_curve"] for m in probe], f"{row['label']} (best {best})")
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

    results = {}
    for row in spec["rows"]:  # per category: the mean over seeds
        per_seed = [figure_input(read_json(f)) for f in files_of(row)]
        results[row["label"]] = {c: sum(v[c] for v in per_seed) / len(per_seed)
                                 for c in per_seed[0]}
    rows = [{"model": model, "category": c, "shape_bias": v}
            for model, values in results.items() for c, v in values.items()]
    plot_shape_bias(results, out)
    csv = pd.DataFrame(rows).to_csv(index=False, float_format="%.4f")
    atomic_write(out.with_suffix(".csv"), lambda tmp: tmp.write_text(csv))
    return out


def frequency(spec: dict, out: Path) -> Path:
    """Figure 5 (band PSNR, one line per model) and Figure 1 (the first image's bands)."""
    rows = [(row["label"], files_of(row)) for row in spec["rows"]]
    plot_frequency(rows, out, out.with_suffix(".csv"))
    example = out.parent / "fig1_frequency_example.png"
    plot_frequency(rows, example, example.with_suffix(".csv"), key="example_band_psnr",
                   title="Reconstruction PSNR per frequency band, one example image")
    return out


def coverage(spec: dict, out: Path) -> Path:
    """Figure 6 from the coverage analysis' CSV (its one input; copied beside the PNG)."""
    (csv,) = spec["inputs"]
    plot_coverage(csv, out)
    text = Path(csv).read_text()
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
            vals = [read_json(f).get(cell["key"]) for f in files_of(cell)]
            est = None if None in vals else estimate([float(v) for v in vals])
            records.append({"model": row["label"], "epochs": row["epochs"], "column": col,
                            "value": None if est is None else est.mean,
                            "ci95": None if est is None else est.half_width,
                            "seeds": len(vals), "experiment": row["experiment"]})
    df = pd.DataFrame(records)
    cols = list(dict.fromkeys(df["column"]))
    names = {"ft": "fine-tune top-1 (%)", "lin": "linear-probe top-1 (%)", "miou": "mIoU"}
    fig, axes = plt.subplots(1, len(cols), figsize=(4.2 * len(cols), 3.6), squeeze=False)
    for ax, col in zip(axes[0], cols, strict=True):
        for model, part in df[df["column"] == col].groupby("model", sort=False):
            part = part.sort_values("epochs")
            ax.errorbar(part["epochs"], part["value"], yerr=part["ci95"].fillna(0), marker="o",
                        capsize=3, ls="--" if not model.startswith("PixMIM") else "-",
                        label=model)
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


def sweep_table(spec: dict):
    """The texture sweep's data: per value, the gain (variant minus baseline, paired by
    seed) with its 95% half-width, and each run's mean top-1 over the seeds."""
    import pandas as pd

    records = []
    for row in spec["rows"]:
        vals = {}
        for role, cell in row["cells"].items():
            vals[role] = [float(read_json(f)[cell["key"]]) for f in files_of(cell)]
        gain = paired(vals["variant"], vals["baseline"])
        records.append({
            "texture_class_bound": row["value"], "dataset": row["dataset"], "seeds": gain.n,
            "gain": gain.mean, "gain_ci95": gain.half_width,
            "baseline": row["cells"]["baseline"]["run"],
            "baseline_top1": estimate(vals["baseline"]).mean,
            "variant": row["cells"]["variant"]["run"],
            "variant_top1": estimate(vals["variant"]).mean,
        })  # fmt: skip
    return pd.DataFrame(records).sort_values("texture_class_bound", ignore_index=True)


def texture_sweep(spec: dict, out: Path) -> Path:
    """The texture sweep: the gain against texture_class_bound with its interval (left),
    each run's top-1 (right); the data also as ``<out>.csv``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = sweep_table(spec)
    x = df["texture_class_bound"]
    fig, (ax_gain, ax_top1) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_gain.axhline(0.0, color="0.4", lw=1)
    ax_gain.errorbar(x, df["gain"], yerr=df["gain_ci95"].fillna(0.0), marker="o", capsize=3)
    ax_gain.set(xlabel="texture_class_bound (P[texture is the class's])",
                ylabel="linear-probe top-1 gain (pp)",
                title=f"{df['variant'][0]} minus {df['baseline'][0]}")
    for role in ("baseline", "variant"):
        ax_top1.plot(x, df[f"{role}_top1"], marker="o", label=df[role][0])
    ax_top1.set(xlabel="texture_class_bound", ylabel="linear-probe top-1 (%)",
                title=f"Mean over {df['seeds'][0]} seed(s)")
    ax_top1.legend()
    for ax in (ax_gain, ax_top1):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    csv = df.to_csv(index=False, float_format="%.4f")
    atomic_write(out.with_suffix(".csv"), lambda tmp: tmp.write_text(csv))
    return out


FIGURES = {"curves": curves, "shape_bias": shape_bias, "frequency": frequency,
           "coverage": coverage, "epochs": epochs, "texture_sweep": texture_sweep}


def drawing_function(kind: str) -> Callable[[dict, Path], Path]:
    """A key of :data:`FIGURES`, or ``module:function`` (a figure's ``draw`` in the
    catalogue: any importable module, a plugin's or a test's included)."""
    if ":" not in kind:
        if kind not in FIGURES:
            raise SystemExit(f"figure {kind!r}: not one of {', '.join(sorted(FIGURES))} "
                             "(or module:function)")
        return FIGURES[kind]
    module, _, name = kind.partition(":")
    fn = getattr(importlib.import_module(module), name, None)
    if not callable(fn):
        raise SystemExit(f"figure {kind!r}: module {module} has no function {name!r}")
    return fn


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pixmim figure")
    p.add_argument("kind", help=f"the figure to draw: {', '.join(sorted(FIGURES))}, or "
                   "module:function (a catalogue figure's draw)")
    p.add_argument("--spec", required=True, help="spec YAML written by the workflow")
    p.add_argument("--out", required=True, help="the first file to write (PNG)")
    p.add_argument("--tracking-uri", help="also log the figure to this MLflow store as a run "
                   "of its own (MLFLOW_TRACKING_URI overrides; needs --experiment)")
    p.add_argument("--experiment", help="the MLflow experiment of --tracking-uri")
    p.add_argument("--files", nargs="*", default=[], help="the figure's files to log (its "
                   "outputs; default: --out and the CSV beside it)")
    args = p.parse_args(argv)
    draw = drawing_function(args.kind)
    spec = yaml.safe_load(Path(args.spec).read_text())
    out = Path(args.out)
    draw(spec, out)
    print(f"wrote {args.out}")
    if args.tracking_uri and args.experiment:
        files = [Path(f) for f in args.files] or [f for f in (out, out.with_suffix(".csv"))
                                                   if f.is_file()]
        note = f"# {spec.get('title') or out.stem}\n\nFiles: " + ", ".join(
            f"`{f.name}`" for f in files) + " (artifacts); `cell_runs`: the runs it reads."
        run = log_report(resolve_uri(args.tracking_uri), args.experiment, "figure", out.stem,
                         files, spec_runs(spec), note)
        if run:
            print(f"logged to MLflow: run {run} ({args.experiment}, tags.figure = "
                  f"'{out.stem}')")
    return 0
