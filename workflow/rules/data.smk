rule generate_data:
    """The embedded synthetic-shapes dataset (ImageFolder layout + foreground masks)."""
    output:
        directory(f"{R}/data/synth"),
    params:
        synth=config["data"]["synth"],
    log:
        f"{R}/logs/generate_data.log",
    benchmark:
        f"{R}/benchmarks/generate_data.tsv"
    shell:
        "{PY:q} -m pixmim data synth --out {output:q} --seed {params.synth[seed]:q} "
        "--train-per-class {params.synth[train_per_class]:q} "
        "--val-per-class {params.synth[val_per_class]:q} "
        "--short-side {params.synth[short_side]:q} > {log:q} 2>&1"
