rule dense:
    """ADE20K segmentation (UperNet) or COCO detection (Mask R-CNN, ViTDet style; 2x: Table
    18) of one pretraining run, through mmengine's Runner; resumes from its last checkpoint."""
    input:
        cfg=f"{R}/runs/{{exp}}/{{stage}}/config.yaml",
        tags=tags_input(),
        ckpt=f"{R}/runs/{{exp}}/pretrain/checkpoint.pth",
        pretrain=f"{R}/runs/{{exp}}/pretrain/metrics.json",
        data=scenes_input,
        store=STORE,
    output:
        metrics=f"{R}/runs/{{exp}}/{{stage}}/metrics.json",
    params:
        out=f"{R}/runs/{{exp}}/{{stage}}",
        cli=lambda wc: "segment_ade20k" if wc.stage == "segment_ade20k" else "detect_coco",
    log:
        f"{R}/logs/{{exp}}/{{stage}}.log",
    benchmark:
        f"{R}/benchmarks/{{exp}}/{{stage}}.tsv"
    wildcard_constraints:
        stage="segment_ade20k|detect_coco|detect_coco_2x",
    threads: config["threads"]["dense"]
    shell:
        "OMP_NUM_THREADS={threads} {PY:q} -m pixmim {params.cli:q} "
        "--config {input.cfg:q} --tags {input.tags:q} --out {params.out:q} > {log:q} 2>&1"
