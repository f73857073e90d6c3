"""Paper tables: our numbers beside the paper's, built from ``metrics.json`` files.

``python -m pixmim table --spec SPEC.yaml --out results/tables/table2`` writes
``table2.csv`` and ``table2.md``. The spec (written by the workflow) lists the rows:
label, the paper row to compare with, the baseline row (for gains) and, per column, the
``metrics.json`` file and the key holding our value.
"""

from __future__ import annotations

import argparse
import math
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from pixmim.io import read_json, write_text

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


def build_table(spec: dict[str, Any]) -> pd.DataFrame:
    """One row per spec row; per column: ours, paper, ours - paper, gain vs baseline (both)."""
    paper = paper_values().get(spec["table"], {})
    rows, ours_by_label = [], {}
    for row in spec["rows"]:
        ours_by_label[row["label"]] = {c: our_value(cell) for c, cell in row["cells"].items()}
    for row in spec["rows"]:
        ref = paper.get(row.get("paper_row") or row["label"], {})
        base = row.get("baseline")
        base_ref = paper.get(base, {}) if base else {}
        rec: dict[str, Any] = {"method": row["label"], "experiment": row["experiment"]}
        for col, ours in ours_by_label[row["label"]].items():
            theirs = ref.get(col, float("nan"))
            rec[f"{col}_ours"] = ours
            rec[f"{col}_paper"] = theirs
            rec[f"{col}_ours_minus_paper"] = ours - theirs
            if base:
                rec[f"{col}_gain_ours"] = ours - ours_by_label[base][col]
                rec[f"{col}_gain_paper"] = theirs - base_ref.get(col, float("nan"))
        rows.append(rec)
    return pd.DataFrame(rows)


def to_markdown(df: pd.DataFrame, spec: dict[str, Any]) -> str:
    """A readable table: ``ours (paper)`` cells and ``gain ours (paper)`` for variant rows."""
    # the spec's column order; headers are declared by the stages that write the columns
    headers = {c: cell.get("header", c) for r in spec["rows"] for c, cell in r["cells"].items()}
    out = pd.DataFrame({"method": df["method"]})
    for c in headers:
        out[headers[c] + " ours (paper)"] = [
            f"{o:.1f} ({p:.1f})" for o, p in zip(df[f"{c}_ours"], df[f"{c}_paper"])]
        if f"{c}_gain_ours" in df:
            out[f"gain {c} ours (paper)"] = [
                "" if math.isnan(g) else f"{g:+.1f} ({gp:+.1f})"
                for g, gp in zip(df[f"{c}_gain_ours"], df[f"{c}_gain_paper"])]
    title = spec.get("title", spec["table"])
    note = spec.get("note", "")
    return f"# {title}\n\n{out.to_markdown(index=False)}\n\n{note}\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pixmim table")
    p.add_argument("--spec", required=True, help="table spec YAML written by the workflow")
    p.add_argument("--out", required=True, help="output stem: writes STEM.csv and STEM.md")
    args = p.parse_args(argv)
    spec = yaml.safe_load(Path(args.spec).read_text())
    df = build_table(spec)
    stem = Path(args.out)
    write_text(stem.with_suffix(".csv"), df.to_csv(index=False, float_format="%.4f"))
    write_text(stem.with_suffix(".md"), to_markdown(df, spec))
    print(f"wrote {stem}.csv and {stem}.md ({len(df)} rows)")
    return 0
