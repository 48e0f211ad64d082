# Stage 2: CycleGAN day <-> night synthesis (reference CycleGAN networks and losses).


rule train_cyclegan:
    input:
        day=f"{R}/{{ds}}/frames/train_day.zarr",
        night=f"{R}/{{ds}}/frames/train_night.zarr",
        pretrained=pretrained_generators(),
    output:
        day2night=f"{R}/{{ds}}/cyclegan/G_day2night.pth",
        night2day=f"{R}/{{ds}}/cyclegan/G_night2day.pth",
        # per-epoch loss terms (TensorBoard; the report's curves), empty with pretrained generators
        tensorboard=directory(f"{R}/{{ds}}/cyclegan/tensorboard"),
    log:
        f"{R}/logs/train_cyclegan/{{ds}}.log",
    benchmark:
        f"{R}/benchmarks/train_cyclegan/{{ds}}.tsv"
    priority: chain_priority(20)  # as demo_seg_teacher
    conda:
        ENV
    threads: 1
    resources:
        **gpu_resources(1),
        mem_mb=retry_mem(16000),
        runtime=24 * 60,
    params:
        c=config["cyclegan"],
        pretrained=pretrained_generator_args,
        state_dir=lambda w: state_dir("train_cyclegan", w.ds),
        device=config["device"],
        seed=config["seed"],
        code=code_digest("train-cyclegan"),
    shell:
        "OMP_NUM_THREADS={threads} python -m pipeline train-cyclegan --day {input.day} --night {input.night}"
        " --out-day2night {output.day2night} --out-night2day {output.night2day} --state-dir {params.state_dir}"
        " --log-dir {output.tensorboard}"
        " --ngf {params.c[ngf]} --n-blocks {params.c[n_blocks]} --epochs {params.c[epochs]}"
        " --epochs-decay {params.c[epochs_decay]} --crop {params.c[crop]} --batch-size {params.c[batch_size]}"
        " --lr {params.c[lr]} --device {params.device} --seed {params.seed} {params.pretrained} > {log} 2>&1"


rule translate:
    input:
        frames=f"{R}/{{ds}}/frames/{{split}}.zarr",
        generator=generator_for,
    output:
        part_output("translate", f"{R}/{{ds}}/synth/{{split}}.zarr"),
    log:
        f"{R}/logs/translate/{{ds}}_{{split}}{part_tag('translate')}.log",
    benchmark:
        f"{R}/benchmarks/translate/{{ds}}_{{split}}{part_tag('translate')}.tsv"
    priority: chain_priority(15)  # the students' inputs
    conda:
        ENV
    threads: 1
    resources:
        **gpu_resources(1),
        mem_mb=retry_mem(8000),
        runtime=120,
    params:
        batch_size=config["cyclegan"]["batch_size_translate"],
        rows_per_shard=config["extract"]["rows_per_shard"],
        part=part_arg("translate"),
        device=config["device"],
        code=code_digest("translate"),
    shell:
        "OMP_NUM_THREADS={threads} python -m pipeline translate --frames {input.frames} --generator {input.generator} --out {output}"
        " --batch-size {params.batch_size} --rows-per-shard {params.rows_per_shard} --part {params.part}"
        " --device {params.device} > {log} 2>&1"
