# PixMIM Bench: pretrain every experiment, evaluate it, assemble the paper's tables.
# `snakemake --profile workflow/profiles/default` runs the embedded default end to end;
# `snakemake results/tables/table2.md` builds one table and only what it needs.
from snakemake.utils import min_version

from pixmim import workflow as W
from pixmim.workflow import validate_config

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


validate_config(config)  # one-line error naming the key, before any job starts


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/dense.smk"
include: "workflow/rules/tables.smk"


rule all:
    input:
        expand(f"{R}/tables/{{table}}.{{ext}}", table=config["tables"], ext=["csv", "md"]),
        expand(f"{R}/figures/{{table}}_curves.png", table=W.curve_tables(config)),
        expand(f"{R}/figures/fig8_shape_bias.png", figure=config["figures"]) if "fig8" in
        config["figures"] else [],
    default_target: True
