"""The targets of a ``snakemake`` command, and what they need written at DAG build.

:func:`requested` reads each target as Snakemake does (a rule name or an output path) and
returns what it needs: the tables and figures whose specs it reads, the (experiment, stage)
jobs, upstream stages included, and the analyses. Any file a job of the catalogue writes
is a target (``results/runs/<exp>/<stage>/metrics.json``), whether or not a table of the
config's ``targets`` reads it; a path under the results folder that no table, figure or job
of this config writes is one line naming it. :func:`materialize` writes, for the requested
targets only, each spec, job config and tag file whose content changed: a dry run adds
nothing else (no folder of a job or table not asked for), and a config change still
reaches the DAG through file times, with or without ``.snakemake/``.
"""

from __future__ import annotations

import argparse
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pixmim import registry
from pixmim.config import ConfigError
from pixmim.workflow.catalogue import (
    SWEEP,
    experiments,
    figure_files,
    plugins,
    sweep_unavailable,
)
from pixmim.workflow.jobs import (
    job_config,
    job_dir,
    job_tags,
    run_dir,
    tags_path,
    upstream,
    write_if_changed,
    write_job_config,
)
from pixmim.workflow.specs import (
    all_targets,
    calibration_targets,
    default_targets,
    figure_spec,
    spec_jobs,
    spec_path,
    sweep_spec,
    table_spec,
    target_jobs,
)

# the analyses (rules of their own, no job config) and the folder their outputs live in
ANALYSES = {"coverage": "analysis/coverage"}


def cli_targets(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """The targets of a ``snakemake`` command line, as Snakemake's own ``parser`` reads them
    (the Snakefile is parsed before Snakemake hands its targets to the DAG); none: the
    default rule's. The Snakefile passes ``snakemake.cli.get_argument_parser()``: the package
    itself imports no Snakemake (the ``workflow`` extra)."""
    try:
        args, _ = parser.parse_known_args(argv)
    except SystemExit:  # not a snakemake command line (an API call): the default targets
        return []
    return sorted(args.targets or [])


@dataclass
class Request:
    """What a set of targets needs: table and figure names (``texture_sweep`` included),
    (experiment, stage) jobs with their upstream stages, analysis rules (``coverage``)."""

    names: set[str] = field(default_factory=set)
    jobs: set[tuple[str, str]] = field(default_factory=set)
    analyses: set[str] = field(default_factory=set)


def requested(config: dict[str, Any], targets: list[str] | set[str] | tuple = ()
              ) -> Request:
    """What ``targets`` (Snakemake's: rule names or output paths; none: ``rule all``)
    need. A ConfigError names a target that no table, figure or job of this config
    writes, or a table or figure this config cannot build."""
    req = Request()
    for target in targets or ["all"]:
        _add_target(config, req, target)
    for name in sorted(req.names):
        if name == SWEEP:
            reason = sweep_unavailable(config)
            if reason:
                raise ConfigError(f"{SWEEP} cannot be built with this config: {reason}")
            req.jobs |= spec_jobs(config, sweep_spec(config))
            continue
        req.jobs |= target_jobs(config, name)
        for path in (config["figures"].get(name) or {}).get("inputs", []):
            _add_target(config, req, f"{config['results']}/{path}")
    return req


def _add_target(config: dict[str, Any], req: Request, target: str) -> None:
    if target in ("all", "everything", "calibration"):  # the rules' input files
        for path in {"all": default_targets, "everything": all_targets,
                     "calibration": calibration_targets}[target](config):
            _add_target(config, req, path)
    elif target == SWEEP:
        req.names.add(SWEEP)
    elif target in ANALYSES:
        req.analyses.add(target)
    elif target.startswith("plot_") and target[5:] in config["figures"]:
        req.names.add(target[5:])
    else:
        rel = os.path.relpath(os.path.abspath(target), os.path.abspath(config["results"]))
        if not rel.startswith(".."):
            _add_path(config, req, target, Path(rel).parts)
    # any other rule name or path: Snakemake's own


def _add_path(config: dict[str, Any], req: Request, target: str, parts: tuple) -> None:
    """A path under the results folder (``parts``: relative to it)."""
    top = parts[0] if parts else ""
    if top == "tables" and len(parts) == 2:
        name = parts[1].split(".")[0]
        if name not in config["tables"]:
            raise _unknown(target, "table", name, config["tables"])
        req.names.add(name)
    elif top == "figures" and len(parts) == 2:
        req.names.add(_figure_of(config, target, parts[1]))
    elif top == "runs":
        req.jobs |= _run_job(config, target, parts[1:])
    elif top == "jobs" and len(parts) >= 4:  # a job config (tags.yaml: no job of its own)
        req.jobs |= _run_job(config, target, parts[1:3], need_file=False)
    elif top in ("logs", "benchmarks") and len(parts) == 3 \
            and parts[1] in experiments(config):
        req.jobs |= _run_job(config, target, (parts[1], Path(parts[2]).stem), need_file=False)
    else:
        req.analyses |= {a for a, folder in ANALYSES.items()
                         if "/".join(parts).startswith(folder)}


def _figure_of(config: dict[str, Any], target: str, file: str) -> str:
    """The figure (or table, for its curves, or the texture sweep) that writes ``file`` of
    the figures folder."""
    for name in config["figures"]:
        if any(Path(path).name == file for path, _ in figure_files(config, name)):
            return name
    table = file.removesuffix("_curves.png")
    if table != file and table in config["tables"]:
        return table
    if file.split(".")[0] == SWEEP:
        return SWEEP
    raise ConfigError(f"target {target}: no figure of this config writes {file}")


def _run_job(config: dict[str, Any], target: str, parts: tuple,
             need_file: bool = True) -> set[tuple[str, str]]:
    """The job (and its upstream stages) whose run folder holds ``parts``
    (``exp/stage/file``)."""
    if len(parts) < 2:
        raise ConfigError(f"target {target}: not a file of a job (runs/<experiment>/<stage>/"
                          "<file>)")
    exp, stage = parts[:2]
    exps = experiments(config)
    if exp not in exps:
        raise _unknown(target, "experiment", exp, exps)
    stages = registry.stages(plugins(config))
    if stage not in stages:
        raise _unknown(target, "stage", stage, stages)
    file = "/".join(parts[2:])
    if need_file and file not in stages[stage].outputs:
        raise ConfigError(f"target {target}: stage {stage} writes "
                          f"{', '.join(stages[stage].outputs)}, not {file or 'a folder'}")
    return {(exp, stage)} | {(exp, up) for up in upstream(config, stage, exp)}


def _unknown(target: str, what: str, name: str, known: Any) -> ConfigError:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f" (did you mean {close[0]}?)" if close else f" (it has {len(known)})"
    return ConfigError(f"target {target}: no {what} {name!r} in this config{hint}")


def materialize(config: dict[str, Any], targets: list[str] | set[str] | tuple = ()
                ) -> list[str]:
    """Write what ``targets`` need (:func:`requested`) where its content changed: each
    table's and figure's spec, each job's config and its experiment's tags. Returns the
    paths written."""
    req = requested(config, targets)
    written = []
    for name in sorted(req.names):
        kind = "tables" if name in config["tables"] else "figures"
        spec = (sweep_spec(config) if name == SWEEP else
                table_spec(config, name) if kind == "tables" else figure_spec(config, name))
        path = spec_path(config, kind, name)
        if write_if_changed(path, spec) is not None:
            written.append(path)
    exps = experiments(config)
    for exp in sorted({e for e, _ in req.jobs}):
        if write_if_changed(tags_path(config, exp), job_tags(config, exp, exps)) is not None:
            written.append(tags_path(config, exp))
    table = registry.stages(plugins(config))
    for exp, stage in sorted(req.jobs):
        path = f"{job_dir(config, exp, stage)}/config.yaml"
        outputs = [f"{run_dir(config, exp, stage)}/{o}" for o in table[stage].outputs]
        if write_job_config(path, job_config(config, exp, stage, exps), outputs):
            written.append(path)
    return written

