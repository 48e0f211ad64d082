"""`preview-panels`: `inspect --preview` of one target frame in each of several shards (report panels)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

HELP = "render one target frame of each shard to a PNG (inspect --preview), for the report"
log = logging.getLogger("pipeline")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shards", type=Path, nargs="+", required=True, metavar="S.zarr", help="shards to preview")
    p.add_argument("--frames", type=Path, nargs="+", required=True, metavar="F.zarr",
                   help="for each --shards entry, the frames shard its rows follow (a frames shard: itself); "
                        "the row shown is the middle target row of that frames shard")
    p.add_argument("--outs", type=Path, nargs="+", required=True, metavar="OUT.png", help="one PNG per --shards entry")


def middle_target_row(frames: Path) -> int:
    """The middle one of the rows a frames shard marks as targets (the rows every later stage fills)."""
    import numpy as np

    from pipeline.shards import open_shard

    targets = np.flatnonzero(np.asarray(open_shard(frames)["target"][:], bool))
    if len(targets) == 0:
        raise ValueError(f"{frames} has no target rows to preview")
    return int(targets[len(targets) // 2])


def run(args) -> int:
    from pipeline import inspect as inspect_mod

    if not len(args.shards) == len(args.frames) == len(args.outs):
        raise ValueError(f"--shards, --frames and --outs give {len(args.shards)}, {len(args.frames)} and "
                         f"{len(args.outs)} paths: expected one of each per shard")
    for shard, frames, out in zip(args.shards, args.frames, args.outs):
        row = middle_target_row(frames)
        inspect_mod.preview(shard, row, out)
        log.info("preview of %s row %d (a target frame of %s) written to %s", shard, row, frames, out)
    return 0
