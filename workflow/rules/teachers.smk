# Stage 3: the segmentation teacher (Mask2Former) and the day-depth teacher (Monodepth2).


rule demo_seg_teacher:
    input:
        frames=f"{R}/{{ds}}/frames/train_day.zarr",
        gt=f"{R}/{{ds}}/gt_depth/train_day.zarr",
    output:
        directory(f"{R}/{{ds}}/seg_teacher/demo_checkpoint"),
    log:
        f"{R}/logs/demo_seg_teacher/{{ds}}.log",
    benchmark:
        f"{R}/benchmarks/demo_seg_teacher/{{ds}}.tsv"
    priority: chain_priority(20)  # then the other fits
    conda:
        ENV
    threads: 1
    resources:
        **gpu_resources(1),
        mem_mb=retry_mem(8000),
        runtime=60,
    params:
        max_steps=config["seg_teacher"]["demo_max_steps"],
        batch_size=config["seg_teacher"]["batch_size"],
        device=config["device"],
        seed=config["seed"],
        code=code_digest("fit-demo-seg-teacher"),
    shell:
        "OMP_NUM_THREADS={threads} python -m pipeline fit-demo-seg-teacher --frames {input.frames} --gt {input.gt} --out-dir {output}"
        " --max-steps {params.max_steps} --batch-size {params.batch_size} --device {params.device}"
        " --seed {params.seed} > {log} 2>&1"


rule seg_pseudolabels:
    input:
        frames=f"{R}/{{ds}}/frames/{{split}}.zarr",
        checkpoint=seg_checkpoint,
    output:
        part_output("seg_pseudolabels", f"{R}/{{ds}}/seg_teacher/{{split}}.zarr"),
    log:
        f"{R}/logs/seg_pseudolabels/{{ds}}_{{split}}{part_tag('seg_pseudolabels')}.log",
    benchmark:
        f"{R}/benchmarks/seg_pseudolabels/{{ds}}_{{split}}{part_tag('seg_pseudolabels')}.tsv"
    priority: chain_priority(15)  # the students' inputs (train splits)
    conda:
        ENV
    threads: 1
    resources:
        **gpu_resources(1),
        mem_mb=retry_mem(16000),
        runtime=240,
    params:
        topk=config["seg_teacher"]["topk"],
        tau=config["seg_teacher"]["tau"],
        batch_size=config["seg_teacher"]["batch_size"],
        rows_per_shard=config["extract"]["rows_per_shard"],
        part=part_arg("seg_pseudolabels"),
        device=config["device"],
        code=code_digest("seg-pseudolabels"),
    shell:
        "HF_HUB_OFFLINE=1 OMP_NUM_THREADS={threads} python -m pipeline seg-pseudolabels --frames {input.frames}"
        " --checkpoint {input.checkpoint} --out {output} --topk {params.topk} --tau {params.tau}"
        " --batch-size {params.batch_size} --rows-per-shard {params.rows_per_shard} --part {params.part}"
        " --device {params.device} > {log} 2>&1"


rule train_depth_teacher:
    input:
        frames=f"{R}/{{ds}}/frames/train_day.zarr",
        pretrained=imagenet_weights(),
    output:
        weights=directory(f"{R}/{{ds}}/depth_teacher/weights"),
        # per-epoch loss and lr (TensorBoard; the report's curves)
        tensorboard=directory(f"{R}/{{ds}}/depth_teacher/tensorboard"),
    log:
        f"{R}/logs/train_depth_teacher/{{ds}}.log",
    benchmark:
        f"{R}/benchmarks/train_depth_teacher/{{ds}}.tsv"
    priority: chain_priority(30)  # the longest jobs before the students: first
    conda:
        ENV
    threads: 1
    resources:
        **gpu_resources(1),
        mem_mb=retry_mem(16000),
        runtime=24 * 60,
    params:
        c={k: v for k, v in config["depth_teacher"].items() if k != "lr"},
        lr=lambda w: per_dataset(config["depth_teacher"]["lr"], w.ds),
        pretrained=lambda w, input: (
            f"--pretrained {input.pretrained}" if input.pretrained else ""
        ),
        state_dir=lambda w: state_dir("train_depth_teacher", w.ds),
        device=config["device"],
        seed=config["seed"],
        code=code_digest("train-depth-teacher"),
    shell:
        "OMP_NUM_THREADS={threads} python -m pipeline train-depth-teacher --frames {input.frames} --out-dir {output.weights}"
        " --log-dir {output.tensorboard} --state-dir {params.state_dir} --epochs {params.c[epochs]} --batch-size {params.c[batch_size]}"
        " --lr {params.lr} --scheduler-step {params.c[scheduler_step]} --min-depth {params.c[min_depth]}"
        " --max-depth {params.c[max_depth]} --color-aug {params.c[color_aug]} --automask {params.c[automask]}"
        " {params.pretrained}"
        " --device {params.device} --seed {params.seed} > {log} 2>&1"


rule depth_pseudolabels:
    input:
        frames=f"{R}/{{ds}}/frames/{{split}}.zarr",
        weights=depth_weights,
    output:
        part_output("depth_pseudolabels", f"{R}/{{ds}}/depth_teacher/{{split}}.zarr"),
    log:
        f"{R}/logs/depth_pseudolabels/{{ds}}_{{split}}{part_tag('depth_pseudolabels')}.log",
    benchmark:
        f"{R}/benchmarks/depth_pseudolabels/{{ds}}_{{split}}{part_tag('depth_pseudolabels')}.tsv"
    priority: chain_priority(15)  # the students' input
    conda:
        ENV
    threads: 1
    resources:
        **gpu_resources(1),
        mem_mb=retry_mem(8000),
        runtime=120,
    params:
        c=config["depth_teacher"],
        rows_per_shard=config["extract"]["rows_per_shard"],
        part=part_arg("depth_pseudolabels"),
        device=config["device"],
        code=code_digest("depth-pseudolabels"),
    shell:
        "OMP_NUM_THREADS={threads} python -m pipeline depth-pseudolabels --frames {input.frames} --weights {input.weights}"
        " --out {output} --batch-size {params.c[batch_size]} --min-depth {params.c[min_depth]}"
        " --max-depth {params.c[max_depth]} --rows-per-shard {params.rows_per_shard} --part {params.part}"
        " --device {params.device} > {log} 2>&1"
