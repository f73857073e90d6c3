# Shared names and input functions; all logic lives in the torch-free pixmim.workflow.
import sys

from pixmim import registry
from pixmim import workflow as W

R = config["results"]
PY = sys.executable
STORE = f"{R}/mlflow/store.json"


wildcard_constraints:
    exp="[A-Za-z0-9][A-Za-z0-9_.-]*",
    stage="|".join(registry.stages(W.plugins(config))),
    table="table[0-9a-z]+",
    figure="fig[0-9a-z]+",


def stage_input(wildcards, stage=None):
    """A job's inputs (pixmim.workflow.stage_inputs): its config (written at DAG build),
    its MLflow tags as an input that never triggers a rerun (ancient: adding a table
    retags runs, it does not recompute them), the outputs of the stage it consumes, the
    generated data it reads, the tracking store."""
    d = W.stage_inputs(config, wildcards.exp, stage or wildcards.stage)
    return {**d, "tags": ancient(d["tags"]), "store": STORE}


def table_inputs(wildcards):
    return W.table_inputs(config, wildcards.table)


def sweep_inputs(wildcards):
    return W.sweep_inputs(config)


def figure_inputs(name):
    return lambda wildcards: W.figure_inputs(config, name)


rule init_mlflow:
    """Create the tracking store and experiment once, before tracking jobs fan out."""
    output:
        STORE,
    params:
        uri=config["mlflow"]["tracking_uri"],
        experiment=config["mlflow"]["experiment"],
    log:
        f"{R}/logs/init_mlflow.log",
    localrule: True
    shell:
        "{PY:q} -m pixmim mlflow-init --uri {params.uri:q} "
        "--experiment {params.experiment:q} --out {output:q} > {log:q} 2>&1"
