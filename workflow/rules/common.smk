# Config validation, paths and input functions: the only Python of the workflow.
import hashlib
from pathlib import Path

from snakemake.utils import validate

validate(config, "../schemas/config.schema.yaml")

R = config["results_dir"]
SPLITS = ["train_day", "train_night", "test_day", "test_night"]
TRAIN_SPLITS = ["train_day", "train_night"]
TEST_SPLITS = list(config["eval"]["splits"])
PY = "python -m pipeline"
ENV = "../../envs/pipeline.yaml"
PKG = Path(workflow.basedir) / "pipeline"
DEMO_ROOTS = {"nuscenes": "data/demo/nuscenes", "robotcar": "data/demo/robotcar"}


wildcard_constraints:
    ds="nuscenes|robotcar",
    split="|".join(SPLITS),
    variant="[A-Za-z0-9_]+",


def code_digest(*parts):
    """Digest of the package modules a rule runs: editing them re-runs the rule (a params trigger)."""
    h = hashlib.sha256()
    for part in ("__init__.py", "shards.py") + parts:
        path = PKG / part
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.exists() else []
        for f in files:
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def enabled_datasets():
    return [ds for ds, c in config["datasets"].items() if c.get("enabled", True)]


def ds_cfg(ds):
    return config["datasets"][ds]


def dataset_root(wildcards):
    return ds_cfg(wildcards.ds)["root"]


def dataset_root_input(wildcards):
    """The demo root is an output of `demo_data`; a user's dataset root is not tracked by Snakemake."""
    root = ds_cfg(wildcards.ds)["root"]
    return [root] if root == DEMO_ROOTS[wildcards.ds] else []


def split_files_json(ds):
    import json

    return json.dumps(ds_cfg(ds).get("split_files") or {})


def crop_args(ds):
    return " ".join(str(int(c)) for c in ds_cfg(ds)["crop"])


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


def checkpoint_path(variant):
    return f"{R}/train/{variant}/checkpoints/last.pt"


def train_datasets():
    return [ds for ds in config["train"]["datasets"] if ds in enabled_datasets()]


def train_inputs(wildcards):
    out = []
    for ds in train_datasets():
        out += expand(f"{R}/{ds}/frames/{{split}}.zarr", split=TRAIN_SPLITS)
        out += expand(f"{R}/{ds}/synth/{{split}}.zarr", split=TRAIN_SPLITS)
        out += expand(f"{R}/{ds}/seg_teacher/{{split}}.zarr", split=TRAIN_SPLITS)
        out.append(f"{R}/{ds}/depth_teacher/train_day.zarr")
    return out


def eval_outputs(variant):
    return [f"{R}/eval/{variant}/{ds}_{split}.json" for ds in train_datasets() for split in TEST_SPLITS]


def tables_outputs():
    return [f"{R}/tables/tables.md", f"{R}/tables/tables.csv", f"{R}/tables/tables.tex"]
