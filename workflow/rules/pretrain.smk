rule pretrain:
    """Masked-image-modeling pretraining of one experiment (method x variant x arch)."""
    input:
        unpack(lambda wc: stage_input(wc, "pretrain")),
    output:
        checkpoint=f"{R}/runs/{{exp}}/pretrain/checkpoint.pth",
        metrics=f"{R}/runs/{{exp}}/pretrain/metrics.json",
    log:
        f"{R}/logs/{{exp}}/pretrain.log",
    benchmark:
        f"{R}/benchmarks/{{exp}}/pretrain.tsv"
    conda:
        family_env("pretrain")
    threads: config["threads"]["pretrain"]
    resources:
        # GPUs of one node for this job (profiles/slurm sets 8); 0: CPU or one GPU
        gpu=0,
    params:
        out=out_dir,
    shell:
        # gpu > 1: torchrun starts one DDP process per GPU inside this one job, each with
        # threads / gpu OpenMP threads; otherwise a single process.
        "gpus={resources.gpu:q}; omp={threads}; launch=(); "
        "if [ $gpus -gt 1 ]; then "
        "launch=(-m torch.distributed.run --standalone --nproc_per_node=$gpus); "
        "omp=$(( omp / gpus > 0 ? omp / gpus : 1 )); fi; "
        'OMP_NUM_THREADS=$omp python "${{launch[@]}}" -m pixmim run '
        "--config {input.cfg:q} --tags {input.tags:q} --out {params.out:q} > {log:q} 2>&1"
