# PixMIM Bench: pretrain every experiment, evaluate it, assemble the paper's tables.
# From the repo root, with the venv's bin first on PATH (or `.venv/bin/snakemake`):
#   snakemake                                  the embedded default end to end (profiles/default)
#   snakemake results/tables/table2.md         one table and only what it needs
#   snakemake --workflow-profile profiles/slurm --configfile config/paper.yaml   paper, SLURM
#   snakemake --sdm conda ...                  each rule in its env (envs/*.yaml)
import sys

from snakemake.cli import get_argument_parser
from snakemake.utils import min_version

from pixmim import warm
from pixmim import workflow as W
from pixmim.workflow.targets import cli_targets

min_version("9.0")


configfile: "config/catalogue.yaml"  # the paper's runs, tables and figures
configfile: "config/config.yaml"  # the embedded default (--configfile config/paper.yaml)


report: "workflow/report/workflow.rst"


W.check_config(config)  # one line naming a bad key (exit 1), before any job starts
if workflow.is_main_process:  # (a job's own process finds its inputs written)
    TARGETS = cli_targets(sys.argv[1:], get_argument_parser())
    # The dataset roots the requested targets read, against their layouts: one line per
    # problem naming the config key and the path (exit 1); data.check_roots: false skips it.
    # A target that no table, figure or job of the config writes: one line too.
    W.one_line_errors(W.check_targets, config, TARGETS)
    # The specs, job configs and MLflow tags the requested targets need (nothing else),
    # written where their content changed: a config change reaches the DAG through file
    # times, with or without .snakemake/. A job's bad layout: one line, as a bad key.
    W.one_line_errors(W.materialize, config, TARGETS)


# A local run's jobs fork from one process with torch, timm and MLflow imported
# (config warm_start; pixmim.warm): started before the first job, stopped after the last.
onstart:
    warm.start(config, workflow)


onsuccess:
    warm.stop()


onerror:
    warm.stop()


include: "workflow/rules/common.smk"
include: "workflow/rules/tracking.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/stages.smk"
include: "workflow/rules/tables.smk"


rule all:
    """The config's default targets (`targets`)."""
    default_target: True
    input:
        W.default_targets(config),


rule everything:
    """Every table and figure of the catalogue that this config can build."""
    input:
        W.all_targets(config),


rule calibration:
    """Our evaluations of each released checkpoint beside its authors' published numbers
    (the tables whose reference is `published`: config/released.yaml)."""
    input:
        W.calibration_targets(config),
