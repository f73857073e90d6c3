rule generate_data:
    """The embedded synthetic-shapes dataset (ImageFolder layout + foreground masks), its
    texture bound to the class (texture_class_bound 1, the generator's default)."""
    output:
        directory(f"{R}/data/synth"),
    log:
        f"{R}/logs/generate_data.log",
    benchmark:
        f"{R}/benchmarks/generate_data.tsv"
    conda:
        ENVS["data"]
    params:
        synth=W.synth_settings(config),
    shell:
        "python -m pixmim data synth --out {output:q} --seed {params.synth[seed]:q} "
        "--train-per-class {params.synth[train_per_class]:q} "
        "--val-per-class {params.synth[val_per_class]:q} "
        "--short-side {params.synth[short_side]:q} > {log:q} 2>&1"


rule generate_texture_data:
    """The synthetic-shapes dataset whose texture is its class's with probability {bound}
    (data.synth.texture_class_bound; the datasets of the texture sweep). Same seed, so the
    shapes, layouts and backgrounds are those of data/synth."""
    output:
        directory(f"{R}/data/synth_tex{{bound}}"),
    log:
        f"{R}/logs/generate_texture_data_{{bound}}.log",
    benchmark:
        f"{R}/benchmarks/generate_texture_data_{{bound}}.tsv"
    wildcard_constraints:
        bound="[0-9][0-9.e+-]*",
    conda:
        ENVS["data"]
    params:
        synth=W.synth_settings(config),
    shell:
        "python -m pixmim data synth --out {output:q} --seed {params.synth[seed]:q} "
        "--train-per-class {params.synth[train_per_class]:q} "
        "--val-per-class {params.synth[val_per_class]:q} "
        "--short-side {params.synth[short_side]:q} "
        "--texture-class-bound {wildcards.bound:q} > {log:q} 2>&1"


rule generate_views:
    """Generated stand-ins of ImageNet-C/A/R/Sketch and the cue-conflict set, in the real
    datasets' layouts, from the embedded dataset."""
    input:
        W.data_root(config),
    output:
        directory(W.views_root(config)),
    log:
        f"{R}/logs/generate_views.log",
    benchmark:
        f"{R}/benchmarks/generate_views.tsv"
    conda:
        ENVS["data"]
    threads: 2
    params:
        views=config["evaluation"]["views"],
        size=config["data"]["img_size"],
    shell:
        "python -m pixmim data views --src {input:q} --out {output:q} "
        "--seed {params.views[seed]:q} --c-per-class {params.views[c_per_class]:q} "
        "--a-per-class {params.views[a_per_class]:q} --r-per-class {params.views[r_per_class]:q} "
        "--sketch-per-class {params.views[sketch_per_class]:q} "
        "--cue-per-shape {params.views[cue_per_shape]:q} --size {params.size:q} "
        "--workers {threads} > {log:q} 2>&1"


rule generate_scenes:
    """Multi-object scenes from the same shapes, in ADE20K's and COCO's layouts (label PNGs;
    instances json with boxes and RLE masks), for the dense stages on the embedded default.
    """
    output:
        directory(W.scenes_root(config)),
    log:
        f"{R}/logs/generate_scenes.log",
    benchmark:
        f"{R}/benchmarks/generate_scenes.tsv"
    conda:
        ENVS["data"]
    params:
        scenes=config["data"]["scenes"],
    shell:
        "python -m pixmim data scenes --out {output:q} --seed {params.scenes[seed]:q} "
        "--train {params.scenes[train]:q} --val {params.scenes[val]:q} "
        "--height {params.scenes[height]:q} --width {params.scenes[width]:q} "
        "--min-objects {params.scenes[min_objects]:q} --max-objects {params.scenes[max_objects]:q} "
        "--object-scale {params.scenes[object_scale][0]:q} {params.scenes[object_scale][1]:q} "
        "> {log:q} 2>&1"
