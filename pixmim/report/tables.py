"""Paper tables: our numbers beside the paper's, built from ``metrics.json`` files.

``python -m pixmim table --spec SPEC.yaml --out results/tables/table2`` writes
``table2.csv`` and ``table2.md``. The spec (written by the workflow) lists the rows:
label, the paper row to compare with, the baseline row (for gains) and, per column, the
``metrics.json`` file of each seed's run and the key holding our value. Each cell is the
mean over the seeds with its 95% interval, each gain the paired (same-seed) difference
with its interval (:mod:`pixmim.report.stats`); the CSV has one column per number and the
number of seeds.

Every number is traceable: per cell, the CSV lists its seeds' ``metrics.json`` files, MLflow
run ids, git commits (``-dirty``: uncommitted changes at run time) and data fingerprints,
``;``-separated in seed order (:func:`cell_provenance`; :mod:`pixmim.report.provenance`),
and the Markdown ends with the same in short.
"""

from __future__ import annotations

import argparse
import math
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pixmim.engine.tracking import UI_URL, log_report, resolve_uri
from pixmim.io import read_json, write_text
from pixmim.report.provenance import NO_DATA, UNFINGERPRINTED, commit_label
from pixmim.report.stats import Estimate, estimate, paired

if TYPE_CHECKING:  # pandas is imported where a table is built: `table --help` stays fast
    import pandas as pd

@cache
def paper_values() -> dict[str, dict[str, dict[str, float]]]:
    text = resources.files("pixmim.report").joinpath("paper_values.yaml").read_text()
    return yaml.safe_load(text)


def our_value(cell: dict[str, str]) -> float:
    """Read one cell: ``{"file": metrics.json, "key": name}``; the value must be finite."""
    data = read_json(cell["file"])
    if cell["key"] not in data:
        raise KeyError(f"{cell['file']}: no key {cell['key']!r} (has {sorted(data)})")
    value = float(data[cell["key"]])
    if not math.isfinite(value):
        raise ValueError(f"{cell['file']}: {cell['key']} is not finite ({value})")
    return value


def seed_values(cell: dict[str, Any]) -> list[float]:
    """The values of a cell, one per seed (``files``; an older spec's single ``file``)."""
    files = cell.get("files") or [cell["file"]]
    return [our_value({"file": f, "key": cell["key"]}) for f in files]


def chance_values(cell: dict[str, Any], prefix: str = "chance_") -> list[float]:
    """The chance level each seed's run wrote beside the cell's value: ``chance_<key>``,
    ``_best`` / ``_last`` dropped (``top1_best`` -> ``chance_top1``); empty if none. With
    ``prefix="sampling_se_"``: the validation split's own standard error of that value."""
    name = prefix + cell["key"].removesuffix("_best").removesuffix("_last")
    files = cell.get("files") or [cell["file"]]
    found = [read_json(f).get(name) for f in files]
    return [float(v) for v in found if v is not None]


# per cell, what its seeds' numbers came from: CSV column suffixes
PROVENANCE = ("metrics_files", "mlflow_runs", "git_commits", "data_fingerprints")
SEP = ";"  # between the seeds of one cell


def seed_provenance(path: str | Path) -> dict[str, str]:
    """One seed's :data:`PROVENANCE` entries, read from its ``metrics.json`` (empty where an
    older one recorded none)."""
    m = read_json(path)
    commit = m.get("git_commit") or ""
    return {"metrics_files": str(path), "mlflow_runs": m.get("mlflow_run_id") or "",
            "git_commits": commit_label(commit, m.get("git_dirty")) if commit else "",
            "data_fingerprints": m.get("data_fingerprint") or ""}


def cell_provenance(cell: dict[str, Any]) -> dict[str, str]:
    """``{suffix: "v0;v1;..."}``: each :data:`PROVENANCE` entry of a cell, in seed order."""
    seeds = [seed_provenance(f) for f in cell.get("files") or [cell["file"]]]
    return {k: SEP.join(s[k] for s in seeds) for k in PROVENANCE}


def build_table(spec: dict[str, Any]) -> pd.DataFrame:
    """One row per spec row; per column: ours (mean, 95% half-width), paper, ours - paper,
    and for variant rows the paired gain over the baseline (ours with its half-width,
    the paper's)."""
    import pandas as pd

    kind = spec.get("reference", "paper")  # or the released checkpoints' published numbers
    if kind == "paper":  # the paper's rows, by paper_row (a baseline by its label)
        by_label = paper_values().get(spec["table"], {})
        refs = {row["label"]: by_label.get(row.get("paper_row") or row["label"], {})
                for row in spec["rows"]}
    else:  # each row's own checkpoint
        by_label = refs = {row["label"]: row.get("published", {}) for row in spec["rows"]}
    values = {row["label"]: {c: seed_values(cell) for c, cell in row["cells"].items()}
              for row in spec["rows"]}
    rows = []
    for row in spec["rows"]:
        ref = refs[row["label"]]
        base = row.get("baseline")
        base_ref = by_label.get(base, {}) if base else {}
        rec: dict[str, Any] = {"method": row["label"], "experiment": row["experiment"],
                               "runs": ";".join(row.get("experiments", [row["experiment"]]))}
        for col, vals in values[row["label"]].items():
            ours, theirs = estimate(vals), ref.get(col, float("nan"))
            rec[f"{col}_ours"] = ours.mean
            rec[f"{col}_ours_ci95"] = ours.half_width
            rec[f"{col}_{kind}"] = theirs
            rec[f"{col}_ours_minus_{kind}"] = ours.mean - theirs
            chance = chance_values(row["cells"][col])
            rec[f"{col}_chance"] = sum(chance) / len(chance) if chance else float("nan")
            se = chance_values(row["cells"][col], "sampling_se_")
            rec[f"{col}_sampling_se"] = max(se) if se else float("nan")
            rec.update({f"{col}_{k}": v for k, v in cell_provenance(row["cells"][col]).items()})
            if base:
                gain = paired(vals, values[base][col])
                rec[f"{col}_gain_ours"] = gain.mean
                rec[f"{col}_gain_ours_ci95"] = gain.half_width
                rec[f"{col}_gain_{kind}"] = theirs - base_ref.get(col, float("nan"))
        rec["seeds"] = len(next(iter(values[row["label"]].values()), []))
        rows.append(rec)
    return pd.DataFrame(rows)


def to_markdown(df: pd.DataFrame, spec: dict[str, Any]) -> str:
    """A readable table: ``mean ± half-width (paper)`` cells and ``gain ± half-width
    (paper's gain)`` for variant rows; the note says what the intervals are."""
    import pandas as pd

    # the spec's column order; headers are declared by the stages that write the columns
    headers = {c: cell.get("header", c) for r in spec["rows"] for c, cell in r["cells"].items()}
    kind = spec.get("reference", "paper")
    out = pd.DataFrame({"method": df["method"]})
    for c in headers:
        out[headers[c] + f" ours ({kind})"] = [
            f"{Estimate(o, h, 0).text()} ({p:.1f})"
            for o, h, p in zip(df[f"{c}_ours"], df[f"{c}_ours_ci95"], df[f"{c}_{kind}"],
                                 strict=True)]
        if kind == "published":  # the calibration: each difference with its interval
            out[f"{headers[c]} ours - published"] = [
                "" if math.isnan(d) else Estimate(d, h, 0).text(sign=True)
                for d, h in zip(df[f"{c}_ours_minus_{kind}"], df[f"{c}_ours_ci95"],
                                strict=True)]
        if f"{c}_gain_ours" in df:
            out[f"gain {c} ours ({kind})"] = [
                "" if math.isnan(g) else f"{Estimate(g, h, 0).text(sign=True)} ({gp:+.1f})"
                for g, h, gp in zip(df[f"{c}_gain_ours"], df[f"{c}_gain_ours_ci95"],
                                    df[f"{c}_gain_{kind}"], strict=True)]
    n = int(df["seeds"].max()) if len(df) else 0
    seeds = (f"{n} seeds: mean ± half-width of the 95% t-interval over seeds; gains paired "
             "by seed." if n > 1 else "1 seed: no interval (set `seeds` to two or more).")
    chance = [f"{headers[c]} {df[f'{c}_chance'].max():.1f}" for c in headers
              if f"{c}_chance" in df and df[f"{c}_chance"].notna().any()]
    if chance:  # the score of the best image-independent guess, as the stage measured it
        seeds += f" Chance level: {', '.join(chance)}."
    se = [f"{headers[c]} {df[f'{c}_sampling_se'].max():.1f}" for c in headers
          if f"{c}_sampling_se" in df and df[f"{c}_sampling_se"].notna().any()]
    if se:  # binomial, at the measured score: what the validation split alone moves a run
        seeds += (" Sampling error of one run on its validation split (SE, at most): "
                  f"{', '.join(se)}.")
    title = spec.get("title", spec["table"])
    note = " ".join(n for n in (spec.get("note", ""), released_note(spec), data_note(spec)) if n)
    return (f"# {title}\n\n{out.to_markdown(index=False)}\n\n{seeds} {note}\n\n"
            f"{provenance_markdown(df, headers)}")


def released_note(spec: dict[str, Any]) -> str:
    """Which rows' cells stand on a released checkpoint (config key checkpoints) rather than
    on a pretraining run here; empty when none does."""
    rel = [f"{r['label']}: {r['released']['name']} ({r['released']['source']})"
           for r in spec["rows"] if r.get("released")]
    if not rel:
        return ""
    return ("Rows from released checkpoints, fetched and evaluated here, not pretrained here: "
            + "; ".join(rel) + ".")


def data_note(spec: dict[str, Any]) -> str:
    """The data the cells' runs read, from their ``metrics.json``: each dataset folder with
    its source (a generated dataset's description, or a folder read in place) and its
    fingerprint, in the order first met; empty when no run recorded any."""
    seen: dict[str, tuple[str, str]] = {}
    for row in spec["rows"]:
        for cell in row["cells"].values():
            for f in cell.get("files") or [cell["file"]]:
                m = read_json(f)
                sources = m.get("data_sources") or {}
                for root, fp in (m.get("data_fingerprints") or {}).items():
                    seen.setdefault(root, (sources.get(root) or "source not recorded", fp))
    if not seen:
        return ""
    parts = [f"{root} ({source}; fingerprint {_short('data_fingerprints', fp)})"
             for root, (source, fp) in seen.items()]
    return "Data read by these runs: " + "; ".join(parts) + "."


def _short(kind: str, value: str) -> str:
    """A commit or fingerprint cut to 12 characters (``-dirty`` and words kept)."""
    if kind == "git_commits":
        sha = value.removesuffix("-dirty")
        return sha[:12] + value[len(sha):]
    if kind == "data_fingerprints" and value not in (UNFINGERPRINTED, NO_DATA):
        return value[:12]
    return value


def provenance_markdown(df: pd.DataFrame, headers: dict[str, str]) -> str:
    """Per row and column: the MLflow run ids of its seeds, the distinct commits and data
    fingerprints they record (shortened; in full in the CSV)."""
    import pandas as pd

    rows = []
    for _, r in df.iterrows():
        for c, header in headers.items():
            if f"{c}_mlflow_runs" not in df:
                continue
            cell = {k: [_short(k, v) or "-" for v in str(r[f"{c}_{k}"]).split(SEP)]
                    for k in ("mlflow_runs", "git_commits", "data_fingerprints")}
            rows.append({"method": r["method"], "column": header,
                         "MLflow runs": " ".join(cell["mlflow_runs"]),
                         "commit": ", ".join(dict.fromkeys(cell["git_commits"])),
                         "data": ", ".join(dict.fromkeys(cell["data_fingerprints"]))})
    if not rows:
        return ""
    return ("## Provenance\n\nThe MLflow runs behind each cell (one per seed), the commit "
            "they ran at (`-dirty`: with uncommitted changes) and the fingerprint of the data "
            f"they read (`{UNFINGERPRINTED}`: a dataset with no fingerprint.json); in full, "
            "with each run's metrics.json, in the CSV.\n\n"
            f"{pd.DataFrame(rows).to_markdown(index=False)}\n")


def spec_files(entry: Any) -> list[str]:
    """Every ``metrics.json`` a table or figure spec reads (its cells' and rows' ``files`` /
    ``file``), in spec order, each once."""
    found: list[str] = []
    if isinstance(entry, dict):
        for k, v in entry.items():
            if k in ("files", "file"):
                found += [f for f in ([v] if isinstance(v, str) else v)
                          if str(f).endswith("metrics.json")]
            else:
                found += spec_files(v)
    elif isinstance(entry, list):
        for v in entry:
            found += spec_files(v)
    return list(dict.fromkeys(found))


def spec_runs(spec: dict[str, Any]) -> list[str]:
    """The MLflow run ids of the runs a spec reads (those whose ``metrics.json`` names one)."""
    ids = [read_json(f).get("mlflow_run_id") for f in spec_files(spec) if Path(f).is_file()]
    return list(dict.fromkeys(i for i in ids if i))


# The resources table's columns: per row and stage, what its seeds' runs used
# (metrics.json ``resources``: pixmim.stages.common.resources), where their checkpoints and
# logs are, and their MLflow runs, as in the model-zoo tables of mmpretrain and lightly.
MB = 2**20


def _log_path(metrics: Path) -> str:
    """A job's log, by the workflow's layout: ``<results>/runs/<exp>/<stage>/metrics.json``
    -> ``<results>/logs/<exp>/<stage>.log`` (workflow/rules); empty outside that layout."""
    run, exp, runs = metrics.parents[:3] if len(metrics.parents) > 3 else (None, None, None)
    if runs is None or runs.name != "runs":
        return ""
    return str(runs.parent / "logs" / exp.name / f"{run.name}.log")


def resources_table(spec: dict[str, Any]) -> pd.DataFrame:
    """One row per table row and stage (its pretraining first, then its columns' stages):
    the seeds' mean wall time and images/s, their total GPU-hours, the peak host and GPU
    memory over them, each run's checkpoints (``*.pth`` in its folder) with their size, its
    log and its MLflow run id (``;``-separated in seed order; blank where a run recorded
    none)."""
    import pandas as pd

    records = []
    for row in spec["rows"]:
        by_stage: dict[str, list[Path]] = {}
        for cell in row["cells"].values():
            for f in map(Path, cell.get("files") or [cell["file"]]):
                pre = f.parent.parent / "pretrain" / "metrics.json"
                if pre.is_file() and pre != f:
                    by_stage.setdefault("pretrain", []).append(pre)
                by_stage.setdefault(f.parent.name, []).append(f)
        for stage, files in by_stage.items():
            files = list(dict.fromkeys(files))
            runs = [read_json(f) for f in files]
            used = [m.get("resources") or {} for m in runs]
            ckpts = [c for f in files for c in sorted(f.parent.glob("*.pth"))]

            def vals(key: str, used=used) -> list[float]:
                return [float(u[key]) for u in used if key in u]

            def mean(v: list[float]) -> float:
                return sum(v) / len(v) if v else float("nan")

            records.append({
                "method": row["label"], "stage": stage, "seeds": len(files),
                "wall_s_mean": mean(vals("wall_s")),
                "gpu_hours_total": sum(vals("gpu_hours")) if vals("gpu_hours") else math.nan,
                "peak_host_mem_mb": max(vals("peak_host_mem_mb"), default=math.nan),
                "peak_gpu_mem_mb": max(vals("peak_gpu_mem_mb"), default=math.nan),
                "images_per_s_mean": mean(vals("images_per_s")),
                "checkpoints": SEP.join(str(c) for c in ckpts),
                "checkpoint_mb": SEP.join(f"{c.stat().st_size / MB:.1f}" for c in ckpts),
                "logs": SEP.join(_log_path(f) for f in files),
                "mlflow_runs": SEP.join(m.get("mlflow_run_id") or "" for m in runs),
            })  # fmt: skip
    return pd.DataFrame(records)


def _duration(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _num(value: float, fmt: str = ".0f") -> str:
    return "-" if math.isnan(value) else format(value, fmt)


def resources_markdown(df: pd.DataFrame, spec: dict[str, Any]) -> str:
    """The resources table in Markdown: a line per row and stage, checkpoints and logs by
    file name with their folder in the CSV, each MLflow run a link into ``make ui``."""
    import pandas as pd

    def runs(ids: str) -> str:
        return " ".join(f"[{i[:8]}]({UI_URL}/#/runs/{i})" for i in str(ids).split(SEP) if i) or "-"

    def ckpts(paths: str, sizes: str) -> str:
        pairs = zip(str(paths).split(SEP), str(sizes).split(SEP), strict=True)
        return ", ".join(f"{Path(p).name} ({mb} MB)" for p, mb in pairs if p) or "-"

    out = pd.DataFrame({
        "method": df["method"], "stage": df["stage"], "seeds": df["seeds"],
        "runtime (mean)": [_duration(v) for v in df["wall_s_mean"]],
        "GPU-hours (total)": [_num(v, ".3f") for v in df["gpu_hours_total"]],
        "peak host memory (MB)": [_num(v) for v in df["peak_host_mem_mb"]],
        "peak GPU memory (MB)": [_num(v) for v in df["peak_gpu_mem_mb"]],
        "images/s (mean)": [_num(v, ".1f") for v in df["images_per_s_mean"]],
        "checkpoint": [ckpts(p, s) for p, s in zip(df["checkpoints"], df["checkpoint_mb"],
                                                   strict=True)],
        "log": [", ".join(f"{Path(p).parent.name}/{Path(p).name}"
                          for p in str(v).split(SEP) if p) or "-" for v in df["logs"]],
        "MLflow runs": [runs(v) for v in df["mlflow_runs"]],
    }) if len(df) else pd.DataFrame()  # fmt: skip
    title = spec.get("title", spec["table"])
    table = out.to_markdown(index=False, disable_numparse=True)
    return (f"# Resources: {title}\n\n{table}\n\nPer row and stage, "
            "what its runs used, measured by each job's main process: runtime and images/s "
            "are means over the seeds, GPU-hours their total (GPUs x wall time), memory the "
            "peak over the seeds (host: resident set size; GPU: allocated, absent off GPU). "
            f"Logs are under `logs/`, checkpoints in the runs' folders (full paths in the CSV); "
            f"run links open in `make ui` ({UI_URL}).\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pixmim table")
    p.add_argument("--spec", required=True, help="table spec YAML written by the workflow")
    p.add_argument("--out", required=True, help="output stem: writes STEM.csv, STEM.md and "
                   "STEM_resources.{csv,md}")
    p.add_argument("--tracking-uri", help="also log the table to this MLflow store as a run "
                   "of its own (MLFLOW_TRACKING_URI overrides; needs --experiment)")
    p.add_argument("--experiment", help="the MLflow experiment of --tracking-uri")
    args = p.parse_args(argv)
    spec = yaml.safe_load(Path(args.spec).read_text())
    df = build_table(spec)
    stem = Path(args.out)
    res_stem = stem.with_name(f"{stem.name}_resources")
    res = resources_table(spec)
    files = [stem.with_suffix(".md"), stem.with_suffix(".csv"),
             res_stem.with_suffix(".md"), res_stem.with_suffix(".csv")]
    markdown, res_markdown = to_markdown(df, spec), resources_markdown(res, spec)
    write_text(files[0], markdown)
    write_text(files[1], df.to_csv(index=False, float_format="%.4f"))
    write_text(files[2], res_markdown)
    write_text(files[3], res.to_csv(index=False, float_format="%.4f"))
    print(f"wrote {stem}.csv and {stem}.md ({len(df)} rows), {res_stem}.csv and .md")
    if args.tracking_uri and args.experiment:
        # the description: the table itself, then its resources table (a heading lower)
        note = [markdown.split("## Provenance")[0], "#" + res_markdown + "\n",
                f"Provenance (each cell's runs, commits, data): `{stem.name}.md` in the "
                "artifacts.\n"]
        run = log_report(resolve_uri(args.tracking_uri), args.experiment, "table",
                         stem.name, files, spec_runs(spec), note)
        if run:
            print(f"logged to MLflow: run {run} ({args.experiment}, tags.table = "
                  f"'{stem.name}')")
    return 0
