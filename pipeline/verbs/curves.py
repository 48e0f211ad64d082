"""`curves`: plot the per-epoch scalars of a TensorBoard log folder (training curves for the report)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

HELP = "plot every per-epoch scalar (loss terms, learning rate) of a TensorBoard log folder to a PNG"
log = logging.getLogger("pipeline")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-dir", type=Path, required=True, metavar="TENSORBOARD_DIR",
                   help="a trainer's TensorBoard folder (tags epoch/*, step = epoch)")
    p.add_argument("--title", required=True, help="the figure's title")
    p.add_argument("--out", type=Path, required=True, metavar="CURVES.png")


def run(args) -> int:
    from pipeline import curves

    scalars = curves.read_epoch_scalars(args.log_dir)
    curves.plot_curves(scalars, args.out, args.title)
    for tag in curves.ordered_tags(scalars):
        log.info("%s: %s", tag, " ".join(f"{e}:{v:.4g}" for e, v in scalars[tag]))
    log.info("wrote %s (%d curves)", args.out, len(scalars))
    return 0
