"""Torch-free helpers the Snakefile calls: validate the config, resolve jobs and tables.

Data flows one way: config -> :mod:`~pixmim.workflow.catalogue` (runs resolved to job ids)
-> :mod:`~pixmim.workflow.jobs` (each job's config) -> ``python -m pixmim run`` ->
``metrics.json`` -> :mod:`~pixmim.workflow.specs` (which file and key fill each table cell
and figure). :mod:`~pixmim.workflow.targets` reads the requested targets and writes what
they need at DAG build (specs, job configs, tags) where it changed.
:mod:`~pixmim.workflow.schema` builds and checks the config's schema,
:mod:`~pixmim.workflow.budget` the GPU-hours of targets.

The modules import each other one way (each only those listed before it): catalogue;
schema; jobs; rehearsal; specs; targets; roots, resources, budget.
"""

from pixmim.workflow.catalogue import (
    BASE_CONFIGS,
    ROOT,
    SWEEP,
    all_runs,
    buildable,
    check_figure,
    dense_task,
    experiment_of,
    experiments,
    experiments_of,
    figure_files,
    group_id,
    load_config,
    mapped_arch,
    mapped_epochs,
    merge,
    one_line_errors,
    plugins,
    read_jobs,
    resolve_run,
    run_id,
    run_unavailable,
    seeds,
    sweep_runs,
    sweep_unavailable,
    texture_bound,
    texture_dataset,
    texture_datasets,
    unavailable,
)
from pixmim.workflow.jobs import (
    EVAL_SETS,
    data_root,
    dense_root,
    dense_section,
    eval_roots,
    generated_input,
    image_root,
    job_config,
    job_dir,
    job_layout,
    job_tags,
    layout,
    masks_root,
    rule_families,
    run_dir,
    scenes_root,
    stage_inputs,
    synth_dir,
    synth_settings,
    upstream,
    views_root,
    write_if_changed,
    write_yaml,
)
from pixmim.workflow.launch import launch_command, slurm_resources
from pixmim.workflow.roots import check_root, check_targets, job_roots
from pixmim.workflow.schema import SCHEMA, build_schema, check_config, validate_config
from pixmim.workflow.specs import (
    all_targets,
    calibration_targets,
    coverage_patch_size,
    curve_tables,
    default_targets,
    figure_inputs,
    figure_spec,
    spec_path,
    sweep_inputs,
    sweep_spec,
    table_inputs,
    table_spec,
    target_jobs,
)
from pixmim.workflow.targets import cli_targets, materialize, requested

__all__ = [
    "all_runs", "all_targets", "calibration_targets", "image_root", "SWEEP", "sweep_inputs",
    "sweep_runs",
    "sweep_spec", "sweep_unavailable", "synth_dir", "synth_settings", "texture_bound",
    "texture_dataset", "texture_datasets", "BASE_CONFIGS", "build_schema", "buildable",
    "check_config", "check_figure", "check_root", "check_targets", "cli_targets",
    "dense_task", "figure_files", "job_roots", "read_jobs", "requested", "spec_path",
    "coverage_patch_size", "curve_tables", "data_root", "default_targets", "dense_root",
    "dense_section", "eval_roots", "EVAL_SETS", "experiment_of", "experiments",
    "experiments_of", "figure_inputs", "figure_spec",
    "generated_input", "group_id", "job_config", "job_dir", "job_layout", "job_tags",
    "launch_command", "layout", "load_config", "slurm_resources",
    "mapped_arch", "mapped_epochs", "one_line_errors", "masks_root", "materialize", "merge",
    "plugins",
    "resolve_run", "ROOT", "rule_families", "run_dir", "run_id", "run_unavailable",
    "scenes_root", "SCHEMA", "seeds", "stage_inputs", "table_inputs", "table_spec",
    "target_jobs", "unavailable", "upstream", "validate_config", "views_root",
    "write_if_changed", "write_yaml",
]
