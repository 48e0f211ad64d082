# Config validation, paths, code digests and input functions: the only Python of the workflow.
import importlib.util
import json
from pathlib import Path

from snakemake.utils import validate

# The schema holds every default: after this line every key exists (no fallbacks below).
validate(config, "../schemas/config.schema.yaml", set_default=True)

R = config["results_dir"]
SPLITS = ["train_day", "train_night", "test_day", "test_night"]
TRAIN_SPLITS = ["train_day", "train_night"]
TEST_SPLITS = list(config["eval"]["splits"])
PY = "python -m pipeline"
ENV = "../../envs/pipeline.yaml"
PKG_ROOT = Path(workflow.basedir)
DEMO_ROOTS = {"nuscenes": "data/demo/nuscenes", "robotcar": "data/demo/robotcar"}
# The config keys of each dataset that shape each data stage (and nothing else: exact re-runs).
DATASET_OPTIONS = {
    "splits": {"nuscenes": ["version", "day_clear_only"],
               "robotcar": ["runs", "test_every", "test_fraction", "lidar_window_us"]},
    "extract_frames": {"nuscenes": ["version", "neighbours"], "robotcar": []},
    "gt_depth": {"nuscenes": ["version"], "robotcar": ["lidar_window_us"]},
}

_spec = importlib.util.spec_from_file_location("codedigest", PKG_ROOT / "pipeline" / "codedigest.py")
_codedigest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_codedigest)


wildcard_constraints:
    ds="nuscenes|robotcar",
    split="|".join(SPLITS),
    variant="[A-Za-z0-9_]+",


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


def state_dir(rule_name, *parts):
    """Where a training rule keeps its resumable state: never a declared output (Snakemake would delete it
    before re-running a killed job), removed by the verb when the run finishes."""
    return "/".join([R, "state", rule_name, *parts])


def check_dataset_roots():
    """A user's dataset root that does not exist fails the dry run (not a queued job hours later)."""
    for ds in enabled_datasets():
        root = ds_cfg(ds)["root"]
        if root != DEMO_ROOTS[ds] and not Path(root).exists():
            raise WorkflowError(f"dataset root not found: {root} (config key datasets.{ds}.root)")


check_dataset_roots()
