"""`extract-frames`: decode, crop and resize the frames of a split into frames/{split}.zarr."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.verbs.args import dataset_arguments, part_arguments

HELP = "decode, crop, resize a split into frames/{split}.zarr"
log = logging.getLogger("pipeline")


def add_arguments(p: argparse.ArgumentParser) -> None:
    dataset_arguments(p, "nuScenes version, neighbours; RobotCar none")
    p.add_argument("--split-file", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--crop", nargs=4, type=int, required=True, metavar=("LEFT", "TOP", "RIGHT", "BOTTOM"))
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--height", type=int, required=True)
    p.add_argument("--threads", type=int, required=True, help="decoding threads")
    part_arguments(p)


def run(args) -> int:
    from pipeline import shards
    from pipeline.datasets import frames as fr
    from pipeline.datasets.adapter import open_dataset

    ids = fr.read_split_file(args.split_file)
    dataset = open_dataset(args.dataset, args.root, args.options)
    table = dataset.frame_table(ids)
    attrs = shards.provenance("extract_frames", {
        "dataset": args.dataset, "root": str(args.root), **args.options, "crop": args.crop,
        "width": args.width, "height": args.height}, {"split_file": shards.file_sha256(args.split_file)})
    attrs["image_size_original"] = list(table.image_size)
    part = shards.Part.parse(args.part, args.rows_per_shard)
    fr.extract_frames(table, dataset.load_frame, args.out, crop=args.crop, size=(args.width, args.height), attrs=attrs,
                      threads=args.threads, rows_per_shard=args.rows_per_shard, part=part)
    log.info("%s: rows %s of %d (%d targets in the split)", args.out, part.rows(len(table)), len(table),
             int(table.target.sum()))
    return 0
