# PixMIM Bench: pretrain every experiment, evaluate it, assemble the paper's tables.
# `snakemake --profile workflow/profiles/default` runs the embedded default end to end;
# `snakemake results/tables/table2.md` builds one table and only what it needs.
from snakemake.utils import min_version

from pixmim import workflow as W
from pixmim.workflow import check_config

min_version("9.0")


configfile: "config/catalogue.yaml"  # the paper's runs, tables and figures
configfile: "config/config.yaml"  # the embedded default (--configfile config/paper.yaml)


report: "workflow/report/workflow.rst"


check_config(config)  # one line naming a bad key (exit 1), before any job starts


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/dense.smk"
include: "workflow/rules/tables.smk"


rule all:
    """The config's default targets (`targets`)."""
    input:
        W.default_targets(config),
    default_target: True


rule everything:
    """Every table and figure of the catalogue that this config can build."""
    input:
        W.all_targets(config),
