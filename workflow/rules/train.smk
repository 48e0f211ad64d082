# Stage 4: the student (DepthSegNet24), one per dataset. One process, or torchrun DDP with train.gpus > 1.

TRAIN_ROLES = {  # role -> (stage folder, split); pipeline.data.ROLES
    "day_frames": ("frames", "train_day"), "day_synth": ("synth", "train_day"),
    "day_seg": ("seg_teacher", "train_day"), "day_depth": ("depth_teacher", "train_day"),
    "night_frames": ("frames", "train_night"), "night_synth": ("synth", "train_night"),
    "night_seg": ("seg_teacher", "train_night"),
}


def train_shards(wildcards):
    """role -> shard of the dataset: the rule's inputs AND the verb's --shards (one list, two uses)."""
    return {role: f"{R}/{wildcards.ds}/{stage}/{split}.zarr" for role, (stage, split) in TRAIN_ROLES.items()}


def train_settings(wildcards):
    """Everything the training verb needs from the config, as one JSON value (a params trigger)."""
    variant = wildcards.variant
    ablations = config["train"]["ablations"]
    if variant not in ablations:
        raise ValueError(f"variant {variant!r} is not in config key train.ablations ({sorted(ablations)})")
    train = {k: v for k, v in config["train"].items() if k not in ("variants", "ablations", "datasets", "gpus")}
    return json.dumps({"model": config["model"], "train": train, "variant": variant,
                       "switches": ablations[variant], "seed": config["seed"]}, sort_keys=True)


def launcher():
    n = int(config["train"]["gpus"])
    return "python" if n <= 1 else f"torchrun --standalone --nproc_per_node {n}"


rule train_student:
    input:
        unpack(train_shards),
        pretrained=imagenet_weights(),
    output:
        f"{R}/train/{{ds}}/{{variant}}/checkpoints/last.pt",
    params:
        shards=lambda w: json.dumps({w.ds: train_shards(w)}),
        settings=train_settings,
        log_dir=lambda w: f"{R}/train/{w.ds}/{w.variant}/tensorboard",
        state_dir=lambda w: state_dir("train_student", w.ds, w.variant),
        launcher=launcher(),
        device=config["device"],
        code=code_digest("train"),
    log:
        f"{R}/logs/train/{{ds}}_{{variant}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{ds}}_{{variant}}.tsv"
    threads: 2
    resources:
        gpu=int(config["train"]["gpus"]),
        mem_mb=24000,
        runtime=72 * 60,
    conda:
        ENV
    shell:
        "OMP_NUM_THREADS={threads} {params.launcher} -m pipeline train --shards '{params.shards}'"
        " --out {output} --log-dir {params.log_dir} --state-dir {params.state_dir}"
        " --settings '{params.settings}' --device {params.device} > {log} 2>&1"
