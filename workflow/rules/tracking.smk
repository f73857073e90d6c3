rule init_mlflow:
    """Create the tracking store and experiment once, before tracking jobs fan out."""
    output:
        STORE,
    log:
        f"{R}/logs/init_mlflow.log",
    localrule: True
    conda:
        ENVS["train"]
    params:
        uri=config["mlflow"]["tracking_uri"],
        experiment=config["mlflow"]["experiment"],
    shell:
        "python -m pixmim mlflow-init --uri {params.uri:q} "
        "--experiment {params.experiment:q} --out {output:q} > {log:q} 2>&1"
