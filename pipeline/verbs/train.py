"""`train`: train the student (DepthSegNet24) on one dataset's shards; resumes; DDP under torchrun."""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.verbs.args import device_arg, json_arg

HELP = "train the student (DepthSegNet24); resumes; DDP under torchrun"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shards", type=json_arg, required=True,
                   help='JSON {dataset: {role: shard path}}, roles as pipeline.data.ROLES (the rule\'s inputs)')
    p.add_argument("--out", type=Path, required=True, metavar="LAST.pt", help="the final checkpoint")
    p.add_argument("--log-dir", type=Path, required=True, help="TensorBoard event files")
    p.add_argument("--state-dir", type=Path, required=True, help="resumable epoch states (removed when done)")
    p.add_argument("--settings", type=json_arg, required=True,
                   help='JSON {"model": {...}, "train": {...}, "variant", "switches": {...}, "seed"} (validated config)')
    device_arg(p)


def run(args) -> int:
    from pipeline import distributed
    from pipeline import train as tr
    from pipeline.checkpoints import STATE_EVERY_S, seed_everything
    from pipeline.config import TrainSettings
    from pipeline.data import TrainingSet
    from pipeline.devices import resolve_device
    from pipeline.model import build_model
    from pipeline.shards import digest

    settings = args.settings
    s = TrainSettings.from_config(settings["train"], settings["seed"], settings["switches"])
    info, device = distributed.init(resolve_device(args.device))
    try:
        seed_everything(s.seed)
        model = build_model({"model": settings["model"]})
        sw = s.switches
        sets = {ds: TrainingSet(paths, ds, real_night=sw["real_night"], synthetic=sw["synthetic_night"],
                                teacher_depth=sw["distillation"], flip=s.flip, seed=s.seed,
                                color_aug=s.color_aug)
                for ds, paths in args.shards.items()}
        # the input shards' digests are part of the resume key: new teacher outputs never resume stale epochs
        inputs = {f"{ds}/{role}": digest(path) for ds, paths in args.shards.items() for role, path in paths.items()}
        record = {**settings, "datasets_trained": list(args.shards), "inputs": inputs}
        tr.train(model, sets, args.out, args.log_dir, args.state_dir, s, device, info, record=record,
                 state_every_s=STATE_EVERY_S)
    finally:
        distributed.cleanup()
    return 0
