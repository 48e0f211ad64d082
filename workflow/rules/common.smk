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
# the Snakefile's onsuccess/onerror: no 1 s wait for the scheduler's timer at exit
drop_rescheduling_timers = _load("snakemake_exit").drop_rescheduling_timers
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


def per_dataset(value, ds):
    """A config value given once or per dataset ({nuscenes: x, robotcar: y}): the one for `ds`."""
    return value[ds] if isinstance(value, dict) else value


def local_cores():
    """--cores of this run, or None (a remote executor, or a dry run without it). Read from the
    settings: `workflow.cores` raises when it is not set."""
    cores = workflow.resource_settings.cores
    return cores if isinstance(cores, int) and cores > 0 else None


def local_threads(n):
    """`n` threads, but at most half the local cores, so two jobs always run side by side (a job
    asking for every core waits for the whole machine and holds the queue: measured on 2 cores, where
    2-thread extraction jobs left the other core idle behind a 1-thread render)."""
    cores = local_cores() or n
    return max(1, min(int(n), cores // 2))


def student_threads():
    """Threads of one student job: the local cores shared among the students that run side by side (one
    per dataset). On 2 cores the two demo students train at once on one thread each: two 1-thread jobs
    do more work per second than one 2-thread job after the other (torch's intra-op scaling is below 2x
    at these sizes). Remote executors (no local --cores): 2, at most 8."""
    cores = local_cores() or 2
    return max(1, min(8, cores // max(1, len(train_datasets()))))


def chain_priority(base):
    """`priority:` of a stage on the way to the students (local runs start the ready job of highest
    priority first): `base` for a training split, +1 for RobotCar, whose student trains longest (on the
    demo 225 s against nuScenes' 168 s), and 0 for a test split, which only the evaluation reads. The
    order: data 40, Monodepth2 teachers 30 (the longest jobs before the students), CycleGAN and seg-teacher
    fits 20, the students' pseudo-label inputs and the students 15; everything the students do not need
    (test-split pseudo-labels, teacher evaluation, curves, efficiency) runs at 0 on the cores they leave.
    """

    def priority(wildcards):
        if wildcards.get("split", "train_day") not in TRAIN_SPLITS:
            return 0
        return base + (1 if wildcards.get("ds") == "robotcar" else 0)

    return priority


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


def student_resources():
    """train_student: train.gpus GPUs for one task (torchrun) on one node. With train.nodes = K > 1 (SLURM
    only), K nodes with train.gpus GPUs EACH (`gres` gpu:G is per node; `gpu` is per job and SLURM may
    spread it unevenly), one task per node, and `mpi`, which tells the SLURM jobstep plugin not to wrap
    the job in `srun -n1`: the rule's own srun starts one torchrun per node (launcher()).
    """
    gpus, nodes = config["train"]["gpus"], config["train"]["nodes"]
    if nodes == 1:
        return {**gpu_resources(gpus), "tasks_per_gpu": 0, "nodes": 1}
    return {
        "gres": f"gpu:{gpus}",
        "nodes": nodes,
        "tasks": nodes,
        "tasks_per_gpu": 0,
        "mpi": "srun",
    }


def check_multinode():
    """The LSF plugin has no per-host launcher (its `mpi` resource only spreads cores with span[ptile]), so
    train.nodes > 1 is refused at parse time under the lsf profile (which sets lsf_gpu_queue).
    """
    if config["train"]["nodes"] > 1 and config["lsf_gpu_queue"]:
        raise WorkflowError(
            f"config key train.nodes is {config['train']['nodes']}: multi-node training runs on SLURM only "
            "(srun + torchrun rendezvous); the LSF executor plugin starts one process per job and "
            "has no per-host launcher (lsf_gpu_queue is set: the lsf profile). Use train.nodes: 1 "
            "with up to one host's GPUs (train.gpus)"
        )


check_multinode()


def retry_mem(mb):
    """mem_mb that grows with each attempt (the cluster profiles set --retries): mb, 2 mb, 3 mb, ..."""
    return lambda wildcards, attempt: mb * attempt


# ---- jobs_per_split: one split of a stage written by several jobs (data.smk, synth.smk, teachers.smk, parts.smk)
PART_STAGES = {  # store folder -> the rule that writes it
    "frames": "extract_frames",
    "synth": "translate",
    "seg_teacher": "seg_pseudolabels",
    "depth_teacher": "depth_pseudolabels",
}


def n_parts(rule_name):
    return config["jobs_per_split"][rule_name]


def part_output(rule_name, store):
    """The rule's output: the zarr folder `store` when jobs_per_split.<rule> is 1 (the DAG as without parts);
    else part {part} of it, a temp folder that rule assemble_parts (parts.smk) hard-links into `store`.
    """
    if n_parts(rule_name) == 1:
        return directory(store)
    return temp(directory(store.removesuffix(".zarr") + ".parts/{part}.zarr"))


def part_tag(rule_name):
    """The suffix of the rule's log and benchmark: one file per part."""
    return "" if n_parts(rule_name) == 1 else ".{part}"


def part_arg(rule_name):
    """--part of the rule's verb: 0/1 (the whole store) or {part}/N."""
    n = n_parts(rule_name)
    return "0/1" if n == 1 else lambda w: f"{w.part}/{n}"


def parted_stages():
    """Store folders whose stage has jobs_per_split > 1 (assembled by rule assemble_parts)."""
    return [stage for stage, rule_name in PART_STAGES.items() if n_parts(rule_name) > 1]


def parts_of(wildcards):
    n = n_parts(PART_STAGES[wildcards.stage])
    store = f"{R}/{wildcards.ds}/{wildcards.stage}/{wildcards.split}"
    return [f"{store}.parts/{i}.zarr" for i in range(n)]


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
        if k not in ("variants", "ablations", "datasets", "gpus", "nodes")
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


def launcher(wildcards, threads):
    """python (1 GPU), torchrun --standalone (N GPUs, one node), or on K > 1 nodes (SLURM): srun with one
    task per node, each running torchrun with a c10d rendezvous at the job's first node (where this
    shell runs). The SLURM jobstep plugin passes only SLURM_JOB_ID of the job's environment, so node
    count and head node come from the config and `hostname`, and srun gets its CPUs and GPUs explicitly.
    """
    gpus, nodes = int(config["train"]["gpus"]), int(config["train"]["nodes"])
    if nodes > 1:
        return (
            f"srun --nodes={nodes} --ntasks={nodes} --ntasks-per-node=1 --cpus-per-task={threads}"
            f" --gres=gpu:{gpus} --kill-on-bad-exit=1 torchrun --nnodes {nodes} --nproc_per_node {gpus}"
            " --rdzv_id ${SLURM_JOB_ID:?train.nodes above 1 needs a SLURM job: --profile workflow/profiles/slurm}"
            " --rdzv_backend c10d --rdzv_endpoint $(hostname):29500"
        )
    return "python" if gpus <= 1 else f"torchrun --standalone --nproc_per_node {gpus}"


# ---- used by eval.smk
def main_variant():
    return "full" if "full" in variants() else sorted(variants())[0]


def figure_outputs():
    """The figures eval-tables makes: a qualitative grid per test split of the main variant, and abs_rel."""
    v = main_variant()
    return [
        f"{R}/figures/qualitative_{v}_{ds}_{split}.png" for ds, split in eval_cases(v)
    ] + [f"{R}/figures/abs_rel.png"]


# ---- used by report.smk and the report(...) flags of eval.smk (snakemake --report)
# shard kind -> (split, report category) of the preview panels: the day training frame, its synthetic
# night, its seg and depth pseudo-labels (train_day: synth and teacher depth exist for train splits
# only), and the LiDAR ground truth of a test frame
PREVIEW_KINDS = {
    "frames": ("train_day", "data"),
    "synth": ("train_day", "teachers"),
    "seg_teacher": ("train_day", "teachers"),
    "depth_teacher": ("train_day", "teachers"),
    "gt_depth": (TEST_SPLITS[0], "data"),
}


def report_item(path, made=None, **kwargs):
    """`report(path, **kwargs)` once every file of `made` (default: `path`; for a rule with wildcards,
    every expansion of `path` the workflow asks for) exists, else plain `path`. Snakemake's report stops
    at an output marked for it that does not exist, and after a partial run some do not; a flag cannot
    differ between the jobs of a rule, so a rule's figures join the report once all its jobs ran.
    """
    made = [path] if made is None else made
    return report(path, **kwargs) if all(Path(p).exists() for p in made) else path


def preview_path(ds, kind):
    return f"{R}/report/previews/{ds}/{kind}.png"


def preview_shards(wildcards):
    """kind -> the shard previewed, and `test_frames`: the frames shard the ground truth's rows follow."""
    shards = {
        kind: f"{R}/{wildcards.ds}/{kind}/{split}.zarr"
        for kind, (split, _) in PREVIEW_KINDS.items()
    }
    shards["test_frames"] = (
        f"{R}/{wildcards.ds}/frames/{PREVIEW_KINDS['gt_depth'][0]}.zarr"
    )
    return shards


def trained_teachers():
    """The teachers this workflow trains (so has training curves of): none of a pretrained one."""
    return (["cyclegan"] if config["cyclegan"]["generators"] == "train" else []) + (
        ["depth_teacher"] if config["depth_teacher"]["weights"] == "train" else []
    )


def student_curves_path(ds, variant):
    return f"{R}/report/curves/student_{ds}_{variant}.png"


def teacher_curves_path(teacher, ds):
    return f"{R}/report/curves/{teacher}_{ds}.png"


def report_outputs():
    """The report's own figures: preview panels per dataset and shard kind, the training curves of
    every student and trained teacher."""
    return (
        [preview_path(ds, k) for ds in enabled_datasets() for k in PREVIEW_KINDS]
        + [student_curves_path(ds, v) for ds in train_datasets() for v in variants()]
        + [
            teacher_curves_path(t, ds)
            for t in trained_teachers()
            for ds in enabled_datasets()
        ]
    )


def tables_report_item(path, caption):
    return report_item(
        path,
        caption=caption,
        category="evaluation",
        subcategory="tables",
        labels={"table": Path(path).name},
    )


def figure_report_items():
    """figure_outputs(), in its order, marked for the report and labelled by what each shows."""
    v = main_variant()
    items = [
        report_item(
            f"{R}/figures/qualitative_{v}_{ds}_{split}.png",
            caption="../report/qualitative.rst",
            category="evaluation",
            subcategory="figures",
            labels={"figure": f"qualitative, {v}", "dataset": ds, "split": split},
        )
        for ds, split in eval_cases(v)
    ]
    items.append(
        report_item(
            f"{R}/figures/abs_rel.png",
            caption="../report/abs_rel.rst",
            category="evaluation",
            subcategory="figures",
            labels={
                "figure": "Abs Rel, every variant",
                "dataset": "all",
                "split": "all",
            },
        )
    )
    assert items == figure_outputs(), "figure_report_items() must list figure_outputs()"
    return items
