# Shared names and input functions; all logic lives in the torch-free pixmim.workflow.
import sys

from pixmim import workflow as W

R = config["results"]
PY = sys.executable
STORE = f"{R}/mlflow/store.json"


wildcard_constraints:
    exp="[A-Za-z0-9][A-Za-z0-9_.-]*",
    stage="|".join(W.STAGES),
    table="table[0-9a-z]+",
    figure="fig[0-9a-z]+",


def job_config(wildcards):
    return W.job_config(config, wildcards.exp, wildcards.stage)


def data_input(wildcards):
    """The generated dataset folder (a dependency only when the data are synthetic)."""
    return [W.data_root(config)] if config["data"]["source"] == "synth" else []


def views_input(wildcards):
    """The generated evaluation views (a dependency only when the data are synthetic)."""
    return [W.views_root(config)] if config["data"]["source"] == "synth" else []


def scenes_input(wildcards):
    """The generated scenes (a dependency only when the data are synthetic)."""
    return [W.scenes_root(config)] if config["data"]["source"] == "synth" else []


def table_spec(wildcards):
    return W.table_spec(config, wildcards.table)


def table_inputs(wildcards):
    return W.table_inputs(config, wildcards.table)


def figure_spec(wildcards):
    return W.figure_spec(config, wildcards.figure)


def figure_inputs(wildcards):
    return W.figure_inputs(config, wildcards.figure)


def job_tags(wildcards):
    return W.job_tags(config, wildcards.exp, wildcards.stage)


def tags_input(stage=None):
    """The job's MLflow tags, as an input that never triggers a rerun (ancient): adding a
    table to the catalogue retags runs, it does not recompute them."""
    return lambda wc: ancient(f"{R}/runs/{wc.exp}/{stage or wc.stage}/tags.yaml")


rule write_job_config:
    """The resolved config of one job; rewritten (and the job rerun) when it changes."""
    output:
        f"{R}/runs/{{exp}}/{{stage}}/config.yaml",
    params:
        cfg=job_config,
    localrule: True
    run:
        W.write_yaml(output[0], params.cfg)


rule write_job_tags:
    """The MLflow tags of one job (tables, figures, catalogue names): not its identity."""
    output:
        f"{R}/runs/{{exp}}/{{stage}}/tags.yaml",
    params:
        tags=job_tags,
    localrule: True
    run:
        W.write_yaml(output[0], params.tags)


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
