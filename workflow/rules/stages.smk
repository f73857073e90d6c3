# One rule per family of the stage registry (pixmim.registry: each stage's declaration,
# pixmim/pipeline.py or a plugin's, declares its rule, what it consumes, what it writes): linear_probe, finetune (and the
# few-shot subsets), evaluate (robustness, shape bias, frequency), dense (segmentation,
# detection), and any family a plugin stage declares. A new stage needs no new rule.
for _name, _family in W.rule_families(config).items():
    if _name == "pretrain":  # its own rule: the torchrun launch (pretrain.smk)
        continue

    rule:
        name:
            _name
        input:
            unpack(stage_input),
        output:
            **{
                o.split(".")[0]: weights(f"{R}/runs/{{exp}}/{{stage}}/{o}")
                for o in _family["outputs"]
            },
        log:
            f"{R}/logs/{{exp}}/{{stage}}.log",
        benchmark:
            f"{R}/benchmarks/{{exp}}/{{stage}}.tsv"
        wildcard_constraints:
            stage="|".join(_family["stages"]),
        conda:
            family_env(_name)
        threads: config["threads"].get(_name, 1)
        resources:
            # the job's layout from its config (one process for the evaluations)
            **{k: layout_resource(k) for k in LAYOUT_RESOURCES},
        params:
            out=out_dir,
            launch=launch(),
        shell:
            # max(gpus, 1) x nodes processes (pixmim.workflow.launch)
            "{params.launch} -m pixmim run "
            "--config {input.cfg:q} --tags {input.tags:q} --out {params.out:q} > {log:q} 2>&1"


rule coverage:
    """Object coverage J(F) of the crops, with and without masking, from the foreground
    masks of the pretraining data (Figure 6)."""
    input:
        data=W.generated_input(config, "images"),
    output:
        csv=f"{R}/analysis/coverage/coverage.csv",
        metrics=f"{R}/analysis/coverage/metrics.json",
    log:
        f"{R}/logs/coverage.log",
    benchmark:
        f"{R}/benchmarks/coverage.tsv"
    conda:
        ENVS["train"]
    params:
        out=out_dir,
        root=data_root,
        masks=W.masks_root(config) or "",
        size=config["data"]["img_size"],
        patch=W.coverage_patch_size(config),
        mask_ratio=config["mask_ratio"],
        cov=config["analysis"]["coverage"],
    shell:
        "python -m pixmim coverage --root {params.root:q} --masks {params.masks:q} "
        "--img-size {params.size:q} --patch-size {params.patch:q} "
        "--mask-ratio {params.mask_ratio:q} --repeats {params.cov[repeats]:q} "
        "--seed {params.cov[seed]:q} --split {params.cov[split]:q} "
        "--limit {params.cov[limit]:q} --out {params.out:q} > {log:q} 2>&1"
