"""`assemble`: join the parts of a stage split over several jobs (config key jobs_per_split) into one group."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

HELP = "join the parts of a stage written by several jobs into one shard group (hard links, no copy)"
log = logging.getLogger("pipeline")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--parts", type=Path, nargs="+", required=True, metavar="PART.zarr",
                   help="every part of the group (--part 0/N .. N-1/N of the stage's verb), in any order")
    p.add_argument("--out", type=Path, required=True, metavar="OUT.zarr", help="the group to write")


def run(args) -> int:
    from pipeline.parts import assemble

    assemble(args.parts, args.out)
    log.info("%s: assembled from %d parts", args.out, len(args.parts))
    return 0
