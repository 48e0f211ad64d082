# Stage 4: the student (DepthSegNet24). One process, or torchrun DDP with train.gpus > 1.
import json


def train_settings(wildcards):
    """Everything the training verb needs from the config, as one JSON value (a params trigger)."""
    variant = wildcards.variant
    ablations = config["train"]["ablations"]
    if variant not in ablations:
        raise ValueError(f"variant {variant!r} is not in config key train.ablations ({sorted(ablations)})")
    train = {k: v for k, v in config["train"].items() if k not in ("variants", "ablations", "datasets")}
    return json.dumps({"model": config["model"], "train": train, "variant": variant,
                       "switches": ablations[variant], "seed": config["seed"],
                       "datasets": {ds: {"max_depth": ds_cfg(ds)["max_depth"]} for ds in train_datasets()}},
                      sort_keys=True)


def launcher():
    n = int(config["train"].get("gpus", 1))
    return "python" if n <= 1 else f"torchrun --standalone --nproc_per_node {n}"


rule train_student:
    input:
        train_inputs,
    output:
        f"{R}/train/{{variant}}/checkpoints/last.pt",
    params:
        settings=train_settings,
        out_dir=lambda w: f"{R}/train/{w.variant}",
        datasets=" ".join(train_datasets()),
        launcher=launcher(),
        device=config["device"],
        code=code_digest("model", "losses.py", "geometry.py", "train.py", "data.py", "distributed.py", "devices.py"),
    log:
        f"{R}/logs/train/{{variant}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{variant}}.tsv"
    threads: 2
    resources:
        gpu=int(config["train"].get("gpus", 1)),
        mem_mb=24000,
        runtime=72 * 60,
    conda:
        ENV
    shell:
        "OMP_NUM_THREADS={threads} {params.launcher} -m pipeline train --results-dir {R} --datasets {params.datasets}"
        " --out-dir {params.out_dir} --settings '{params.settings}' --device {params.device} > {log} 2>&1"
