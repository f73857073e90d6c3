rule finetune:
    """End-to-end fine-tuning of one pretraining run; finetune_1pct / finetune_10pct train on
    class-balanced subsets (Table 19)."""
    input:
        cfg=f"{R}/runs/{{exp}}/{{stage}}/config.yaml",
        tags=tags_input(),
        ckpt=f"{R}/runs/{{exp}}/pretrain/checkpoint.pth",
        pretrain=f"{R}/runs/{{exp}}/pretrain/metrics.json",
        data=data_input,
        store=STORE,
    output:
        model=f"{R}/runs/{{exp}}/{{stage}}/model.pth",
        metrics=f"{R}/runs/{{exp}}/{{stage}}/metrics.json",
    params:
        out=f"{R}/runs/{{exp}}/{{stage}}",
    log:
        f"{R}/logs/{{exp}}/{{stage}}.log",
    benchmark:
        f"{R}/benchmarks/{{exp}}/{{stage}}.tsv"
    wildcard_constraints:
        stage="finetune|finetune_1pct|finetune_10pct",
    threads: config["threads"]["finetune"]
    shell:
        "OMP_NUM_THREADS={threads} {PY:q} -m pixmim finetune "
        "--config {input.cfg:q} --tags {input.tags:q} --out {params.out:q} > {log:q} 2>&1"
