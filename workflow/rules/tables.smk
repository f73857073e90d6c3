rule write_table_spec:
    """Which metrics file and key fill each cell of a table."""
    output:
        f"{R}/tables/{{table}}.spec.yaml",
    params:
        spec=table_spec,
    localrule: True
    run:
        W.write_yaml(output[0], params.spec)


rule make_table:
    """A paper table with our numbers beside the paper's (CSV + Markdown)."""
    input:
        spec=f"{R}/tables/{{table}}.spec.yaml",
        metrics=table_inputs,
    output:
        csv=f"{R}/tables/{{table}}.csv",
        md=f"{R}/tables/{{table}}.md",
    params:
        stem=f"{R}/tables/{{table}}",
    log:
        f"{R}/logs/tables/{{table}}.log",
    localrule: True
    shell:
        "{PY:q} -m pixmim table --spec {input.spec:q} --out {params.stem:q} > {log:q} 2>&1"
