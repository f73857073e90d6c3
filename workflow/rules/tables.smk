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
    log:
        f"{R}/logs/tables/{{table}}.log",
    localrule: True
    conda:
        ENVS["report"]
    params:
        stem=stem,
    shell:
        "python -m pixmim table --spec {input.spec:q} --out {params.stem:q} > {log:q} 2>&1"


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
    shell:
        "python -m pixmim figure curves --spec {input.spec:q} --out {output.png:q} > {log:q} 2>&1"


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
        shell:
            "python -m pixmim figure {params.draw:q} --spec {input.spec:q} "
            "--out {output.out:q} > {log:q} 2>&1"


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
    shell:
        "python -m pixmim figure texture_sweep --spec {input.spec:q} --out {output.png:q} "
        "> {log:q} 2>&1"
