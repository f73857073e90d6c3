"""Table and figure specs: which ``metrics.json`` file and key fill each cell, and the
targets (output files) of ``rule all`` and ``rule everything``.

A column is declared by the stage that writes it (``pixmim.registry``: ``columns``), so a
new evaluation stage brings its own columns; the spec carries each column's header, and
the table command needs nothing else. A figure's spec holds what its declaration says it
reads (:mod:`pixmim.workflow.catalogue`, "figures"), for the function that draws it.

A spec is written at DAG build (:func:`pixmim.workflow.targets.materialize`) into
``results/.specs/`` (:func:`spec_path`), a folder of derived inputs only, where its content
changed: a table's or figure's rule reads it, and its time reruns that rule when its rows,
title or notes change, with or without ``.snakemake/``.
"""

from __future__ import annotations

from typing import Any

from pixmim import registry
from pixmim.config import ConfigError
from pixmim.workflow import rehearsal
from pixmim.workflow.catalogue import (
    SWEEP,
    buildable,
    experiments_of,
    figure_files,
    group_id,
    mapped_arch,
    plugins,
    read_jobs,
    resolve_run,
    rows,
    run_id,
    runs,
    seeds,
    sweep_unavailable,
    texture_dataset,
    unavailable,
)
from pixmim.workflow.jobs import run_dir, upstream
from pixmim.workflow.rehearsal import rehearsed


def spec_path(config: dict[str, Any], kind: str, name: str) -> str:
    """Where the spec of table or figure (or the texture sweep) ``name`` is written at DAG
    build (``kind``: ``tables`` or ``figures``)."""
    return f"{config['results']}/.specs/{kind}/{name}.yaml"


def _check_buildable(config: dict[str, Any], name: str) -> None:
    reason = unavailable(config, name)
    if reason:
        raise ConfigError(f"{name} cannot be built with this config: {reason}")


def _cell(config: dict[str, Any], exps: list[str], col: str) -> dict[str, Any]:
    """One column of a row: the metrics file of each seed's run (in the order of
    ``seeds``), the key holding the value, the column's header."""
    c = registry.columns(plugins(config))[col]
    return {"files": [f"{run_dir(config, *rehearsed(config, exp, c.stage))}/metrics.json"
                      for exp in exps],
            "key": c.key, "header": c.header}


def table_spec(config: dict[str, Any], name: str) -> dict[str, Any]:
    """Rows of one table with, per column, the metrics file and key that hold our value."""
    if name not in config["tables"]:
        raise ConfigError(f"no table {name!r} in the catalogue (tables: "
                          f"{', '.join(sorted(config['tables']))})")
    _check_buildable(config, name)
    table = config["tables"][name]
    kept, named = rows(config, table), runs(config)
    labels = {r["label"] for r in kept}
    out = []
    for row in kept:
        exps = experiments_of(config, row["run"])
        base = row.get("baseline") if row.get("baseline") in labels else None
        out.append({"label": row["label"], "paper_row": row.get("paper_row", row["label"]),
                    "baseline": base, "experiment": group_id(exps[0]), "experiments": exps,
                    "cells": {col: _cell(config, exps, col) for col in table["columns"]}})
        released = named[row["run"]].get("checkpoint")
        if released:  # its cells stand on a released file, not on a pretraining of ours
            out[-1]["released"] = {"name": released,
                                   "source": config["checkpoints"][released]["source"]}
        if table.get("reference") == "published":  # the authors' numbers for this file
            out[-1]["published"] = dict(config["checkpoints"][row["run"]].get("published")
                                        or {})
    # the catalogue's note (about the paper's numbers), then the config's (about ours)
    note = " ".join(n for n in (table.get("note", ""), (config.get("notes") or {}).get(name, ""))
                    if n)
    title = table["title"]
    if rehearsal.enabled(config):  # said where a reader looks first
        title, note = f"[REHEARSAL] {title}", f"{rehearsal.NOTE} {note}".strip()
    return {"table": name, "title": title, "note": note, "seeds": seeds(config),
            "reference": table.get("reference", "paper"), "rows": out}


def figure_spec(config: dict[str, Any], name: str) -> dict[str, Any]:
    """Rows of a figure with the files that feed it, as its declaration says: per row, the
    metrics file of each seed's run of its ``stage`` and its ``columns``' cells; the
    ``inputs`` other rules write."""
    if name not in config["figures"]:
        raise ConfigError(f"no figure {name!r} in the catalogue (figures: "
                          f"{', '.join(sorted(config['figures']))})")
    _check_buildable(config, name)
    fig = config["figures"][name]
    stage = fig.get("stage")
    out = []
    for row in rows(config, fig):
        exps = experiments_of(config, row["run"])
        entry = {"label": row["label"], "experiment": group_id(exps[0]), "experiments": exps,
                 "epochs": runs(config)[row["run"]].get("epochs")}
        if stage is not None:
            entry["files"] = [f"{run_dir(config, *rehearsed(config, exp, stage))}/metrics.json"
                              for exp in exps]
        if fig.get("columns"):
            entry["cells"] = {col: _cell(config, exps, col) for col in fig["columns"]}
        out.append(entry)
    spec: dict[str, Any] = {"figure": name, "seeds": seeds(config), "rows": out}
    if fig.get("inputs"):
        spec["inputs"] = [f"{config['results']}/{f}" for f in fig["inputs"]]
    if rehearsal.enabled(config):
        spec["rehearsal"] = rehearsal.NOTE
    return spec


def sweep_spec(config: dict[str, Any]) -> dict[str, Any]:
    """The texture sweep: per ``texture_sweep.values`` entry, its dataset and the linear
    probe of the baseline and variant run on it, one file per seed (paired by position)."""
    reason = sweep_unavailable(config)
    if reason:
        raise ConfigError(f"{SWEEP} cannot be built with this config: {reason}")
    sweep, out = config[SWEEP], []
    for value in sweep["values"]:
        dataset, cells = texture_dataset(config, value), {}
        for role in ("baseline", "variant"):
            run = {**config["runs"][sweep[role]], "dataset": dataset}
            exps = [run_id(resolve_run(config, run, s)) for s in seeds(config)]
            cells[role] = {**_cell(config, exps, "lin"), "run": sweep[role], "experiments": exps}
        out.append({"value": float(value), "dataset": dataset, "cells": cells})
    return {"figure": SWEEP, "seeds": seeds(config), "rows": out}


def sweep_inputs(config: dict[str, Any]) -> list[str]:
    """The metrics files of the texture sweep (raises ConfigError when it cannot be made)."""
    return sorted(_spec_files(sweep_spec(config)))


def _spec_files(spec: dict[str, Any]) -> set[str]:
    files = {f for r in spec["rows"] for f in r.get("files", [])} | set(spec.get("inputs", []))
    return files | {f for r in spec["rows"] for c in r.get("cells", {}).values()
                    for f in c["files"]}


def table_inputs(config: dict[str, Any], name: str) -> list[str]:
    return sorted(_spec_files(table_spec(config, name)))


def figure_inputs(config: dict[str, Any], name: str) -> list[str]:
    return sorted(_spec_files(figure_spec(config, name)))


def target_jobs(config: dict[str, Any], target: str) -> set[tuple[str, str]]:
    """(experiment, stage) jobs a table or figure needs, upstream stages included (under
    ``rehearsal``, their representatives)."""
    if target not in config["tables"] and target not in config["figures"]:
        raise ConfigError(f"no table or figure {target!r} in the catalogue")
    _check_buildable(config, target)
    jobs = {rehearsed(config, exp, stage) for exp, stage in read_jobs(config, target)}
    return {(e, s) for e, stage in jobs for s in (stage, *upstream(config, stage, e))}


def spec_jobs(config: dict[str, Any], spec: dict[str, Any]) -> set[tuple[str, str]]:
    """(experiment, stage) jobs whose metrics feed a table or figure spec, and upstream."""
    prefix = f"{config['results']}/runs/"
    jobs = set()
    for f in _spec_files(spec):
        if f.startswith(prefix):
            exp, stage = f[len(prefix):].split("/")[:2]
            jobs |= {(exp, stage)} | {(exp, up) for up in upstream(config, stage, exp)}
    return jobs


def curve_tables(config: dict[str, Any], names: list[str] | None = None) -> list[str]:
    """Tables whose experiments get a loss / linear-probe curves figure (those with ``lin``;
    not a calibration: its released checkpoints have no pretraining curve)."""
    names = list(config["tables"]) if names is None else names
    tables = config["tables"]
    return [n for n in names if n in tables and "lin" in tables[n]["columns"]
            and tables[n].get("reference", "paper") == "paper"]


def coverage_patch_size(config: dict[str, Any]) -> int:
    """The mask unit of Figure 6: the patch size of MAE's arch in this config."""
    arch = mapped_arch(config, {"method": "mae"}) or config["default_archs"]["mae"]
    return int(registry.method("mae").archs[arch].get("patch_size", 16))


def default_targets(config: dict[str, Any]) -> list[str]:
    """The output files of ``rule all``: the config's ``targets`` (tables: csv + md, and the
    curves figure of tables with a lin column; figures: their files)."""
    R = config["results"]
    out = []
    for t in config["targets"]:
        if t in config["tables"]:
            out += [f"{R}/tables/{t}.csv", f"{R}/tables/{t}.md"]
            out += [f"{R}/figures/{t}_curves.png" for _ in curve_tables(config, [t])]
        else:
            out += [path for path, _ in figure_files(config, t)]
    if rehearsal.enabled(config):  # a kind no cell reads (a crop variant's pretraining) too
        out += sorted(f"{run_dir(config, exp, stage)}/metrics.json"
                      for exp, stage in rehearsal.rehearsal_jobs(config))
    return out


def calibration_targets(config: dict[str, Any]) -> list[str]:
    """The output files of ``rule calibration``: every table whose reference is the released
    checkpoints' published numbers (config/released.yaml ``tablecal``)."""
    names = [n for n, t in config["tables"].items() if t.get("reference") == "published"]
    return default_targets({**config, "targets": names})


def all_targets(config: dict[str, Any]) -> list[str]:
    """Every table and figure this config can build (``rule everything``)."""
    return default_targets({**config, "targets": buildable(config, "tables")
                            + buildable(config, "figures")})
