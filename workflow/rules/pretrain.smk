rule pretrain:
    """Masked-image-modeling pretraining of one experiment (method x variant x arch)."""
    input:
        cfg=f"{R}/runs/{{exp}}/pretrain/config.yaml",
        data=data_input,
        store=STORE,
    output:
        ckpt=f"{R}/runs/{{exp}}/pretrain/checkpoint.pth",
        metrics=f"{R}/runs/{{exp}}/pretrain/metrics.json",
    params:
        out=f"{R}/runs/{{exp}}/pretrain",
    log:
        f"{R}/logs/{{exp}}/pretrain.log",
    benchmark:
        f"{R}/benchmarks/{{exp}}/pretrain.tsv"
    threads: config["threads"]["pretrain"]
    shell:
        "OMP_NUM_THREADS={threads} {PY:q} -m pixmim pretrain "
        "--config {input.cfg:q} --out {params.out:q} > {log:q} 2>&1"
