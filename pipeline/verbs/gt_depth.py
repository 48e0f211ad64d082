"""`gt-depth`: LiDAR ground-truth depth (and label maps where the root has them) for a frames shard."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.verbs.args import dataset_arguments

HELP = "LiDAR ground-truth depth (and label maps if present) per frame"
log = logging.getLogger("pipeline")


def add_arguments(p: argparse.ArgumentParser) -> None:
    dataset_arguments(p, "nuScenes version; RobotCar lidar_window_us")
    p.add_argument("--frames", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--eval-width", type=int, required=True)
    p.add_argument("--eval-height", type=int, required=True)
    p.add_argument("--threads", type=int, required=True, help="frames computed in parallel")


def run(args) -> int:
    from pipeline import shards
    from pipeline.datasets import ground_truth
    from pipeline.datasets.adapter import open_dataset

    frames = shards.open_shard(args.frames)
    crop = frames.attrs["config"]["crop"]  # the frames' own crop: GT covers exactly what the network sees
    dataset = open_dataset(args.dataset, args.root, args.options)
    attrs = shards.provenance("gt_depth", {
        "dataset": args.dataset, "root": str(args.root), **args.options, "crop": crop,
        "eval_width": args.eval_width, "eval_height": args.eval_height}, {"frames": shards.digest(args.frames)})
    stats = ground_truth.write(dataset, frames, args.out, crop=crop, size=(args.eval_width, args.eval_height),
                               attrs=attrs, threads=args.threads)
    log.info("%s: %d target frames, %.2f%% of pixels with depth%s", args.out, stats["targets"],
             100.0 * stats["depth_pixels"] / max(1, stats["pixels"]), ", with label maps" if stats["labels"] else "")
    return 0
