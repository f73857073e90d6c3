rule linear_probe:
    """Linear probe on the frozen encoder of one pretraining run (Table 2's lin)."""
    input:
        cfg=f"{R}/runs/{{exp}}/linear_probe/config.yaml",
        tags=tags_input("linear_probe"),
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
        "--config {input.cfg:q} --tags {input.tags:q} --out {params.out:q} > {log:q} 2>&1"


rule evaluate_finetuned:
    """Robustness (ImageNet-C/A/R/Sketch, Table 4) or shape bias (cue-conflict, Figure 8) of
    a fine-tuned model."""
    input:
        cfg=f"{R}/runs/{{exp}}/{{stage}}/config.yaml",
        tags=tags_input(),
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
        "OMP_NUM_THREADS={threads} {PY:q} -m pixmim {wildcards.stage:q} "
        "--config {input.cfg:q} --tags {input.tags:q} --out {params.out:q} > {log:q} 2>&1"


rule frequency:
    """PSNR of a pretrained model's reconstruction per frequency band (Figures 1 and 5)."""
    input:
        cfg=f"{R}/runs/{{exp}}/frequency/config.yaml",
        tags=tags_input("frequency"),
        ckpt=f"{R}/runs/{{exp}}/pretrain/checkpoint.pth",
        pretrain=f"{R}/runs/{{exp}}/pretrain/metrics.json",
        data=data_input,
        store=STORE,
    output:
        metrics=f"{R}/runs/{{exp}}/frequency/metrics.json",
    params:
        out=f"{R}/runs/{{exp}}/frequency",
    log:
        f"{R}/logs/{{exp}}/frequency.log",
    benchmark:
        f"{R}/benchmarks/{{exp}}/frequency.tsv"
    threads: config["threads"]["evaluate"]
    shell:
        "OMP_NUM_THREADS={threads} {PY:q} -m pixmim frequency "
        "--config {input.cfg:q} --tags {input.tags:q} --out {params.out:q} > {log:q} 2>&1"


rule coverage:
    """Object coverage J(F) of the crops, with and without masking, from the foreground
    masks of the pretraining data (Figure 6)."""
    input:
        data=data_input,
    output:
        csv=f"{R}/analysis/coverage/coverage.csv",
        metrics=f"{R}/analysis/coverage/metrics.json",
    params:
        out=f"{R}/analysis/coverage",
        root=W.data_root(config),
        masks=W.masks_root(config) or "",
        size=config["data"]["img_size"],
        patch=W.coverage_patch_size(config),
        mask_ratio=config["mask_ratio"],
        cov=config["analysis"]["coverage"],
    log:
        f"{R}/logs/coverage.log",
    benchmark:
        f"{R}/benchmarks/coverage.tsv"
    shell:
        "{PY:q} -m pixmim coverage --root {params.root:q} --masks {params.masks:q} "
        "--img-size {params.size:q} --patch-size {params.patch:q} "
        "--mask-ratio {params.mask_ratio:q} --repeats {params.cov[repeats]:q} "
        "--seed {params.cov[seed]:q} --split {params.cov[split]:q} "
        "--limit {params.cov[limit]:q} --out {params.out:q} > {log:q} 2>&1"
