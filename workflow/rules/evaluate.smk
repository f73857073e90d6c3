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


rule evaluate_finetuned:
    """Robustness (ImageNet-C/A/R/Sketch, Table 4) or shape bias (cue-conflict, Figure 8) of
    a fine-tuned model."""
    input:
        cfg=f"{R}/runs/{{exp}}/{{stage}}/config.yaml",
        model=f"{R}/runs/{{exp}}/finetune/model.pth",
        finetune=f"{R}/runs/{{exp}}/finetune/metrics.json",
        views=views_input,
        store=STORE,
    output:
        metrics=f"{R}/runs/{{exp}}/{{stage}}/metrics.json",
    params:
        out=f"{R}/runs/{{exp}}/{{stage}}",
    log:
        f"{R}/logs/{{exp}}/{{stage}}.log",
    benchmark:
        f"{R}/benchmarks/{{exp}}/{{stage}}.tsv"
    wildcard_constraints:
        stage="robustness|shape_bias",
    threads: config["threads"]["evaluate"]
    shell:
        "OMP_NUM_THREADS={threads} {PY:q} -m pixmim {wildcards.stage} "
        "--config {input.cfg:q} --out {params.out:q} > {log:q} 2>&1"
