# Config validation, paths, code digests and input functions: the only Python of the workflow.
import importlib.util
import json
import sys
from pathlib import Path

from snakemake.utils import validate

# The schema holds every default: after this line every key exists (no fallbacks below).
validate(config, "../schemas/config.schema.yaml", set_default=True)

R = config["results_dir"]
SPLITS = ["train_day", "train_night", "test_day", "test_night"]
TRAIN_SPLITS = ["train_day", "train_night"]
TEST_SPLITS = list(config["eval"]["splits"])
ENV = "../../envs/pipeline.yaml"
PKG_ROOT = Path(workflow.basedir)
DEMO_ROOTS = {"nuscenes": "data/demo/nuscenes", "robotcar": "data/demo/robotcar"}
# The config keys of each dataset that shape each data stage (and nothing else: exact re-runs).
DATASET_OPTIONS = {
    "splits": {
        "nuscenes": ["version", "day_clear_only"],
        "robotcar": ["runs", "test_every", "test_fraction", "lidar_window_us"],
    },
    "extract_frames": {"nuscenes": ["version", "neighbours"], "robotcar": []},
    "gt_depth": {"nuscenes": ["version"], "robotcar": ["lidar_window_us"]},
}


def _load(name):
    """A standard-library-only module of the package, loaded by path (no package import at parse time)."""
    spec = importlib.util.spec_from_file_location(
        f"_pipeline_{name}", PKG_ROOT / "pipeline" / f"{name}.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


_codedigest = _load("codedigest")
try:
    _load("config").check_relations(config)
except ValueError as e:
    raise WorkflowError(str(e))


def code_digest(verb):
    """Digest of the import closure of the verb's module (pipeline.codedigest): a params rerun trigger."""
    return _codedigest.code_digest(PKG_ROOT, verb)


def enabled_datasets():
    return [ds for ds, c in config["datasets"].items() if c["enabled"]]


def ds_cfg(ds):
    return config["datasets"][ds]


def dataset_root(wildcards):
    return ds_cfg(wildcards.ds)["root"]


def dataset_root_input(wildcards):
    """The demo root is an output of `demo_data`; a user's dataset root is not tracked by Snakemake."""
    root = ds_cfg(wildcards.ds)["root"]
    return [root] if root == DEMO_ROOTS[wildcards.ds] else []


def dataset_options(stage):
    """JSON of the dataset config keys that shape `stage` (a params value: changing one re-runs the stage)."""

    def options(wildcards):
        keys = DATASET_OPTIONS[stage][wildcards.ds]
        return json.dumps({k: ds_cfg(wildcards.ds)[k] for k in keys}, sort_keys=True)

    return options


def gt_splits():
    """Ground truth for the test splits; also train_day when the demo seg teacher is fit on its labels."""
    splits = list(TEST_SPLITS)
    if config["seg_teacher"]["checkpoint"] == "demo":
        splits.append("train_day")
    return splits


def frames_outputs():
    out = []
    for ds in enabled_datasets():
        out += expand(f"{R}/{ds}/frames/{{split}}.zarr", split=SPLITS)
        out += expand(f"{R}/{ds}/gt_depth/{{split}}.zarr", split=gt_splits())
    return out


def teacher_outputs():
    out = []
    for ds in enabled_datasets():
        out += expand(f"{R}/{ds}/synth/{{split}}.zarr", split=TRAIN_SPLITS)
        out += expand(f"{R}/{ds}/seg_teacher/{{split}}.zarr", split=SPLITS)
        out.append(f"{R}/{ds}/depth_teacher/train_day.zarr")
    return out


def variants():
    return list(config["train"]["variants"])


def train_datasets():
    """One student per dataset (the paper's Tables 1, 2 and 5 are per dataset)."""
    return [ds for ds in config["train"]["datasets"] if ds in enabled_datasets()]


def checkpoint_path(ds, variant):
    return f"{R}/train/{ds}/{variant}/checkpoints/last.pt"


def eval_cases(variant):
    return [(ds, split) for ds in train_datasets() for split in TEST_SPLITS]


def metrics_path(variant, ds, split):
    return f"{R}/eval/{variant}/{ds}_{split}.json"


def tables_outputs():
    return [f"{R}/tables/tables.md", f"{R}/tables/tables.csv", f"{R}/tables/tables.tex"]


def gpu_resources(n=1):
    """What a job on N GPUs asks for, derived from N alone (no list of GPU rules anywhere): `gpu` (a local
    run's --resources gpu=K; the SLURM plugin's --gpus=N, and the slurm profile's partitions.yaml then
    picks the GPU partition) and, since the LSF plugin reads no `gpu`, `lsf_extra` "-gpu num=N" and
    `lsf_queue` = config key lsf_gpu_queue (set by the lsf profile)."""
    n = int(n)
    res = {"gpu": n, "lsf_extra": f"-gpu num={n}"}
    if config["lsf_gpu_queue"]:
        res["lsf_queue"] = config["lsf_gpu_queue"]
    return res


def retry_mem(mb):
    """mem_mb that grows with each attempt (the cluster profiles set --retries): mb, 2 mb, 3 mb, ..."""
    return lambda wildcards, attempt: mb * attempt


def state_dir(rule_name, *parts):
    """The resumable state folder of a training job. Never a declared output (Snakemake would delete it
    before re-running a killed job), removed by the verb when the run finishes."""
    return str(Path(R, "state", rule_name, *parts))


def check_local_files():
    """A user's dataset root or checkpoint that does not exist fails the dry run, naming its config key
    (not a queued job hours later)."""
    needed = {
        f"datasets.{ds}.root": ds_cfg(ds)["root"]
        for ds in enabled_datasets()
        if ds_cfg(ds)["root"] != DEMO_ROOTS[ds]
    }
    needed["model.encoder.pretrained"] = config["model"]["encoder"]["pretrained"]
    if config["seg_teacher"]["checkpoint"] != "demo":
        needed["seg_teacher.checkpoint"] = config["seg_teacher"]["checkpoint"]
    if config["depth_teacher"]["weights"] != "train":
        needed["depth_teacher.weights"] = config["depth_teacher"]["weights"]
    if config["cyclegan"]["generators"] != "train":
        for k, v in config["cyclegan"]["generators"].items():
            needed[f"cyclegan.generators.{k}"] = v
    for key, path in needed.items():
        if path and not Path(path).exists():
            raise WorkflowError(f"not found: {path} (config key {key})")


check_local_files()


# ---- used by synth.smk
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


# ---- used by teachers.smk
def seg_checkpoint(wildcards):
    ckpt = config["seg_teacher"]["checkpoint"]
    return f"{R}/{wildcards.ds}/seg_teacher/demo_checkpoint" if ckpt == "demo" else ckpt


def depth_weights(wildcards):
    w = config["depth_teacher"]["weights"]
    return f"{R}/{wildcards.ds}/depth_teacher/weights" if w == "train" else w


def imagenet_weights():
    """The local torchvision ResNet file of model.encoder.pretrained (student and teacher encoders), if any."""
    path = config["model"]["encoder"]["pretrained"]
    return [path] if path else []


# ---- used by train.smk
TRAIN_ROLES = {  # role -> (stage folder, split); pipeline.data.ROLES
    "day_frames": ("frames", "train_day"),
    "day_synth": ("synth", "train_day"),
    "day_seg": ("seg_teacher", "train_day"),
    "day_depth": ("depth_teacher", "train_day"),
    "night_frames": ("frames", "train_night"),
    "night_synth": ("synth", "train_night"),
    "night_seg": ("seg_teacher", "train_night"),
}


def train_shards(wildcards):
    """role -> shard of the dataset: the rule's inputs AND the verb's --shards (one list, two uses)."""
    return {
        role: f"{R}/{wildcards.ds}/{stage}/{split}.zarr"
        for role, (stage, split) in TRAIN_ROLES.items()
    }


def train_settings(wildcards):
    """Everything the training verb needs from the config, as one JSON value (a params trigger)."""
    variant = wildcards.variant
    ablations = config["train"]["ablations"]
    if variant not in ablations:
        raise ValueError(
            f"variant {variant!r} is not in config key train.ablations ({sorted(ablations)})"
        )
    train = {
        k: v
        for k, v in config["train"].items()
        if k not in ("variants", "ablations", "datasets", "gpus")
    }
    return json.dumps(
        {
            "model": config["model"],
            "train": train,
            "variant": variant,
            "switches": ablations[variant],
            "seed": config["seed"],
        },
        sort_keys=True,
    )


def launcher():
    n = int(config["train"]["gpus"])
    return "python" if n <= 1 else f"torchrun --standalone --nproc_per_node {n}"


# ---- used by eval.smk
def main_variant():
    return "full" if "full" in variants() else sorted(variants())[0]


def figure_outputs():
    """The figures eval-tables makes: a qualitative grid per test split of the main variant, and abs_rel."""
    v = main_variant()
    return [
        f"{R}/figures/qualitative_{v}_{ds}_{split}.png" for ds, split in eval_cases(v)
    ] + [f"{R}/figures/abs_rel.png"]
