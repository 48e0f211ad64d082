# Stage 2: CycleGAN day <-> night synthesis (reference CycleGAN networks and losses).


def generator_for(wildcards):
    """Day splits are translated day->night, night splits night->day."""
    name = "G_day2night.pth" if wildcards.split.endswith("_day") else "G_night2day.pth"
    return f"{R}/{wildcards.ds}/cyclegan/{name}"


def pretrained_generators():
    g = config["cyclegan"]["generators"]
    return [] if g == "train" else [g["day2night"], g["night2day"]]


def pretrained_generator_args(wildcards, input):
    if not input.pretrained:
        return ""
    return f"--pretrained-day2night {input.pretrained[0]} --pretrained-night2day {input.pretrained[1]}"


rule train_cyclegan:
    input:
        day=f"{R}/{{ds}}/frames/train_day.zarr",
        night=f"{R}/{{ds}}/frames/train_night.zarr",
        pretrained=pretrained_generators(),
    output:
        day2night=f"{R}/{{ds}}/cyclegan/G_day2night.pth",
        night2day=f"{R}/{{ds}}/cyclegan/G_night2day.pth",
    params:
        c=config["cyclegan"],
        pretrained=pretrained_generator_args,
        state_dir=lambda w: state_dir("train_cyclegan", w.ds),
        device=config["device"],
        seed=config["seed"],
        code=code_digest("train-cyclegan"),
    log:
        f"{R}/logs/train_cyclegan/{{ds}}.log",
    benchmark:
        f"{R}/benchmarks/train_cyclegan/{{ds}}.tsv"
    threads: 1
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=24 * 60,
    conda:
        ENV
    shell:
        "OMP_NUM_THREADS={threads} {PY} train-cyclegan --day {input.day} --night {input.night}"
        " --out-day2night {output.day2night} --out-night2day {output.night2day} --state-dir {params.state_dir}"
        " --ngf {params.c[ngf]} --n-blocks {params.c[n_blocks]} --epochs {params.c[epochs]}"
        " --epochs-decay {params.c[epochs_decay]} --crop {params.c[crop]} --batch-size {params.c[batch_size]}"
        " --lr {params.c[lr]} --device {params.device} --seed {params.seed} {params.pretrained} > {log} 2>&1"


rule translate:
    input:
        frames=f"{R}/{{ds}}/frames/{{split}}.zarr",
        generator=generator_for,
    output:
        directory(f"{R}/{{ds}}/synth/{{split}}.zarr"),
    params:
        batch_size=config["cyclegan"]["batch_size_translate"],
        device=config["device"],
        code=code_digest("translate"),
    log:
        f"{R}/logs/translate/{{ds}}_{{split}}.log",
    benchmark:
        f"{R}/benchmarks/translate/{{ds}}_{{split}}.tsv"
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=120,
    conda:
        ENV
    shell:
        "OMP_NUM_THREADS={threads} {PY} translate --frames {input.frames} --generator {input.generator} --out {output}"
        " --batch-size {params.batch_size} --device {params.device} > {log} 2>&1"
