rule make_table:
    """A paper table with our numbers beside the paper's (CSV + Markdown)."""
    input:
        spec=W.spec_path(config, "tables", "{table}"),
        metrics=table_inputs,
    output:
        csv=report(
            f"{R}/tables/{{table}}.csv",
            caption="../report/table.rst",
            category="Tables",
            subcategory="{table}",
        ),
        md=report(
            f"{R}/tables/{{table}}.md",
            caption="../report/table_md.rst",
            category="Tables",
            subcategory="{table}",
        ),
        # per row and stage: runtime, memory, checkpoint, log, MLflow run
        resources_csv=f"{R}/tables/{{table}}_resources.csv",
        resources_md=f"{R}/tables/{{table}}_resources.md",
    log:
        f"{R}/logs/tables/{{table}}.log",
    localrule: True
    conda:
        # the training env: it has MLflow, which logs the table as a run of its own
        ENVS["train"]
    params:
        stem=stem,
        uri=config["mlflow"]["tracking_uri"],
        experiment=config["mlflow"]["experiment"],
    shell:
        # also logged to MLflow as the run `{table}` (a failure there only warns)
        "python -m pixmim table --spec {input.spec:q} --out {params.stem:q} "
        "--tracking-uri {params.uri:q} --experiment {params.experiment:q} > {log:q} 2>&1"


rule plot_curves:
    """Pretraining loss and linear-probe top-1 curves of a table's experiments."""
    input:
        spec=W.spec_path(config, "tables", "{table}"),
        metrics=table_inputs,
    output:
        png=report(
            f"{R}/figures/{{table}}_curves.png",
            caption="../report/curves.rst",
            category="Figures",
        ),
    log:
        f"{R}/logs/figures/{{table}}_curves.log",
    localrule: True
    conda:
        ENVS["train"]
    params:
        uri=config["mlflow"]["tracking_uri"],
        experiment=config["mlflow"]["experiment"],
    shell:
        "python -m pixmim figure curves --spec {input.spec:q} --out {output.png:q} "
        "--tracking-uri {params.uri:q} --experiment {params.experiment:q} > {log:q} 2>&1"


# One rule per figure of the catalogue, from its declaration (config/catalogue.yaml:
# what it reads, the function that draws it, its files): a new figure needs no new rule.
for _name in config["figures"]:

    rule:
        name:
            f"plot_{_name}"
        input:
            spec=W.spec_path(config, "figures", _name),
            data=figure_inputs(_name),
        output:
            **figure_outputs(_name),
        log:
            f"{R}/logs/figures/{_name}.log",
        localrule: True
        conda:
            ENVS["train"]
        params:
            draw=config["figures"][_name]["draw"],
            uri=config["mlflow"]["tracking_uri"],
            experiment=config["mlflow"]["experiment"],
        shell:
            # also logged to MLflow as the run `<first file's stem>`, its files as artifacts
            "python -m pixmim figure {params.draw:q} --spec {input.spec:q} "
            "--out {output.out:q} --tracking-uri {params.uri:q} "
            "--experiment {params.experiment:q} --files {output:q} > {log:q} 2>&1"


rule texture_sweep:
    """The texture sweep: the linear-probe gain of PixMIM over MAE (paired by seed, 95%
    interval) against data.synth.texture_class_bound. Not in `targets`: build it by name.
    """
    input:
        spec=W.spec_path(config, "figures", W.SWEEP),
        metrics=sweep_inputs,
    output:
        png=report(
            f"{R}/figures/texture_sweep.png",
            caption="../report/texture_sweep.rst",
            category="Figures",
        ),
        csv=f"{R}/figures/texture_sweep.csv",
    log:
        f"{R}/logs/figures/texture_sweep.log",
    localrule: True
    conda:
        ENVS["train"]
    params:
        uri=config["mlflow"]["tracking_uri"],
        experiment=config["mlflow"]["experiment"],
    shell:
        "python -m pixmim figure texture_sweep --spec {input.spec:q} --out {output.png:q} "
        "--tracking-uri {params.uri:q} --experiment {params.experiment:q} "
        "--files {output:q} > {log:q} 2>&1"
