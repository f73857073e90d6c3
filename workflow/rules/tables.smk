rule make_table:
    """A paper table with our numbers beside the paper's (CSV + Markdown)."""
    input:
        spec=f"{R}/tables/{{table}}.spec.yaml",
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
        spec=f"{R}/tables/{{table}}.spec.yaml",
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


rule plot_shape_bias:
    """Figure 8: shape bias per category (cue-conflict), one marker set per model."""
    input:
        spec=f"{R}/figures/fig8.spec.yaml",
        metrics=figure_inputs("fig8"),
    output:
        png=report(
            f"{R}/figures/fig8_shape_bias.png",
            caption="../report/fig8.rst",
            category="Figures",
        ),
        csv=f"{R}/figures/fig8_shape_bias.csv",
    log:
        f"{R}/logs/figures/fig8.log",
    localrule: True
    conda:
        ENVS["train"]
    shell:
        "python -m pixmim figure shape_bias --spec {input.spec:q} --out {output.png:q} "
        "> {log:q} 2>&1"


rule plot_frequency:
    """Figures 1 and 5: PSNR of the reconstruction per frequency band, MAE vs PixMIM."""
    input:
        spec=f"{R}/figures/fig5.spec.yaml",
        metrics=figure_inputs("fig5"),
    output:
        png=report(
            f"{R}/figures/fig5_frequency.png",
            caption="../report/fig5.rst",
            category="Figures",
        ),
        csv=f"{R}/figures/fig5_frequency.csv",
        fig1=report(
            f"{R}/figures/fig1_frequency_example.png",
            caption="../report/fig1.rst",
            category="Figures",
        ),
    log:
        f"{R}/logs/figures/fig5.log",
    localrule: True
    conda:
        ENVS["train"]
    shell:
        "python -m pixmim figure frequency --spec {input.spec:q} --out {output.png:q} "
        "> {log:q} 2>&1"


rule plot_coverage:
    """Figure 6: object coverage J(F) of RRC, CC and SRC, with and without masking."""
    input:
        spec=f"{R}/figures/fig6.spec.yaml",
        data=figure_inputs("fig6"),
    output:
        png=report(
            f"{R}/figures/fig6_coverage.png",
            caption="../report/fig6.rst",
            category="Figures",
        ),
        csv=f"{R}/figures/fig6_coverage.csv",
    log:
        f"{R}/logs/figures/fig6.log",
    localrule: True
    conda:
        ENVS["train"]
    shell:
        "python -m pixmim figure coverage --spec {input.spec:q} --out {output.png:q} "
        "> {log:q} 2>&1"


rule plot_epochs:
    """Figure 7: fine-tune, linear-probe and segmentation results vs pretraining epochs."""
    input:
        spec=f"{R}/figures/fig7.spec.yaml",
        metrics=figure_inputs("fig7"),
    output:
        png=report(
            f"{R}/figures/fig7_epochs.png",
            caption="../report/fig7.rst",
            category="Figures",
        ),
        csv=f"{R}/figures/fig7_epochs.csv",
    log:
        f"{R}/logs/figures/fig7.log",
    localrule: True
    conda:
        ENVS["train"]
    shell:
        "python -m pixmim figure epochs --spec {input.spec:q} --out {output.png:q} "
        "> {log:q} 2>&1"


rule texture_sweep:
    """The texture sweep: the linear-probe gain of PixMIM over MAE (paired by seed, 95%
    interval) against data.synth.texture_class_bound. Not in `targets`: build it by name.
    """
    input:
        spec=f"{R}/figures/texture_sweep.spec.yaml",
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
