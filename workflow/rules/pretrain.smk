rule pretrain:
    """Masked-image-modeling pretraining of one experiment (method x variant x arch)."""
    input:
        unpack(lambda wc: stage_input(wc, "pretrain")),
    output:
        checkpoint=weights(f"{R}/runs/{{exp}}/pretrain/checkpoint.pth"),
        metrics=f"{R}/runs/{{exp}}/pretrain/metrics.json",
    log:
        f"{R}/logs/{{exp}}/pretrain.log",
    benchmark:
        f"{R}/benchmarks/{{exp}}/pretrain.tsv"
    conda:
        family_env("pretrain")
    threads: config["threads"]["pretrain"]
    resources:
        # the job's layout (its config's pretrain.nodes / pretrain.gpus): GPUs, nodes and
        # the multi-node keys of the SLURM executor (pixmim.workflow.launch.slurm_resources)
        **{k: layout_resource(k, "pretrain") for k in LAYOUT_RESOURCES},
    params:
        out=out_dir,
        launch=launch("pretrain"),
    shell:
        # max(gpus, 1) x nodes processes: python, torchrun on one node, or srun + torchrun
        # on several (pixmim.workflow.launch)
        "{params.launch} -m pixmim run "
        "--config {input.cfg:q} --tags {input.tags:q} --out {params.out:q} > {log:q} 2>&1"


rule fetch_checkpoint:
    """Fetch a released checkpoint (config key checkpoints): a local path or a URL, resumed,
    retried, its checksum verified, renamed into place whole (pixmim.fetch). The run that
    stands on it imports it in the job of its kind (pretrain, finetune or linear_probe; job
    key released)."""
    output:
        f"{R}/checkpoints/{{ckpt}}/{{file}}",
    log:
        f"{R}/logs/checkpoints/{{ckpt}}/{{file}}.log",
    conda:
        ENVS["data"]
    params:
        source=released("source"),
        checksum=released("checksum"),
    shell:
        "python -m pixmim fetch --name {wildcards.ckpt:q} --source {params.source:q} "
        "--checksum {params.checksum:q} --out {output:q} > {log:q} 2>&1"
