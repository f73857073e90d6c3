rule linear_probe:
    """Linear probe on the frozen encoder of one pretraining run (Table 2's lin)."""
    input:
        cfg=f"{R}/runs/{{exp}}/linear_probe/config.yaml",
        ckpt=f"{R}/runs/{{exp}}/pretrain/checkpoint.pth",
        pretrain=f"{R}/runs/{{exp}}/pretrain/metrics.json",
        data=data_input,
        store=STORE,
    output:
        metrics=f"{R}/runs/{{exp}}/linear_probe/metrics.json",
    params:
        out=f"{R}/runs/{{exp}}/linear_probe",
    log:
        f"{R}/logs/{{exp}}/linear_probe.log",
    benchmark:
        f"{R}/benchmarks/{{exp}}/linear_probe.tsv"
    threads: config["threads"]["linear_probe"]
    shell:
        "OMP_NUM_THREADS={threads} {PY:q} -m pixmim linear_probe "
        "--config {input.cfg:q} --out {params.out:q} > {log:q} 2>&1"
