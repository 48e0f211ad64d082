# Stage 1: the demo dataset, splits, frames and ground truth.


rule demo_data:
    output:
        directory("data/demo/{ds}"),
    log:
        f"{R}/logs/demo_data/{{ds}}.log",
    benchmark:
        f"{R}/benchmarks/demo_data/{{ds}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=retry_mem(4000),
        runtime=30,
    params:
        seed=config["demo"]["seed"],
        keyframes=config["demo"]["keyframes_per_scene"],
        sweeps=config["demo"]["sweeps_between"],
        frames_per_run=config["demo"]["robotcar_frames_per_run"],
        render_scale=config["demo"]["render_scale"],
        code=code_digest("demo-data"),
    shell:
        "OMP_NUM_THREADS={threads} python -m pipeline demo-data --dataset {wildcards.ds} --out {output} --seed {params.seed}"
        " --keyframes-per-scene {params.keyframes} --sweeps-between {params.sweeps}"
        " --frames-per-run {params.frames_per_run} --render-scale {params.render_scale} > {log} 2>&1"


rule splits:
    input:
        root=dataset_root_input,
    output:
        expand(f"{R}/{{{{ds}}}}/splits/{{split}}.txt", split=SPLITS),
    log:
        f"{R}/logs/splits/{{ds}}.log",
    benchmark:
        f"{R}/benchmarks/splits/{{ds}}.tsv"
    priority: chain_priority(40)  # common.smk: the data stages first
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=retry_mem(4000),
        runtime=30,
    params:
        root=dataset_root,
        options=dataset_options("splits"),
        split_files=lambda w: json.dumps(ds_cfg(w.ds)["split_files"]),
        out_dir=lambda w: f"{R}/{w.ds}/splits",
        code=code_digest("splits"),
    shell:
        "OMP_NUM_THREADS={threads} python -m pipeline splits --dataset {wildcards.ds} --root {params.root}"
        " --options '{params.options}' --split-files '{params.split_files}' --out-dir {params.out_dir} > {log} 2>&1"


rule extract_frames:
    input:
        split=f"{R}/{{ds}}/splits/{{split}}.txt",
        root=dataset_root_input,
    output:
        part_output("extract_frames", f"{R}/{{ds}}/frames/{{split}}.zarr"),
    log:
        f"{R}/logs/extract_frames/{{ds}}_{{split}}{part_tag('extract_frames')}.log",
    benchmark:
        f"{R}/benchmarks/extract_frames/{{ds}}_{{split}}{part_tag('extract_frames')}.tsv"
    priority: chain_priority(40)  # as splits
    conda:
        ENV
    threads: local_threads(config["extract"]["threads"])
    resources:
        mem_mb=retry_mem(4000),
        runtime=120,
    params:
        root=dataset_root,
        options=dataset_options("extract_frames"),
        crop=lambda w: " ".join(str(int(c)) for c in ds_cfg(w.ds)["crop"]),
        width=lambda w: ds_cfg(w.ds)["width"],
        height=lambda w: ds_cfg(w.ds)["height"],
        rows_per_shard=config["extract"]["rows_per_shard"],
        part=part_arg("extract_frames"),
        code=code_digest("extract-frames"),
    shell:
        "OMP_NUM_THREADS={threads} python -m pipeline extract-frames --dataset {wildcards.ds} --root {params.root}"
        " --options '{params.options}' --split-file {input.split} --out {output} --crop {params.crop}"
        " --width {params.width} --height {params.height} --threads {threads}"
        " --rows-per-shard {params.rows_per_shard} --part {params.part} > {log} 2>&1"


rule gt_depth:
    input:
        frames=f"{R}/{{ds}}/frames/{{split}}.zarr",
        root=dataset_root_input,
    output:
        directory(f"{R}/{{ds}}/gt_depth/{{split}}.zarr"),
    log:
        f"{R}/logs/gt_depth/{{ds}}_{{split}}.log",
    benchmark:
        f"{R}/benchmarks/gt_depth/{{ds}}_{{split}}.tsv"
    priority: chain_priority(40)  # as splits (the demo seg teacher reads train_day's labels)
    conda:
        ENV
    threads: local_threads(config["extract"]["threads"])
    resources:
        mem_mb=retry_mem(8000),
        runtime=120,
    params:
        root=dataset_root,
        options=dataset_options("gt_depth"),
        eval_width=lambda w: ds_cfg(w.ds)["eval_width"],
        eval_height=lambda w: ds_cfg(w.ds)["eval_height"],
        code=code_digest("gt-depth"),
    shell:
        "OMP_NUM_THREADS={threads} python -m pipeline gt-depth --dataset {wildcards.ds} --root {params.root}"
        " --options '{params.options}' --frames {input.frames} --out {output} --eval-width {params.eval_width}"
        " --eval-height {params.eval_height} --threads {threads} > {log} 2>&1"
