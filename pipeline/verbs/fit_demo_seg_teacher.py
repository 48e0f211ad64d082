"""`fit-demo-seg-teacher`: fit the demo's small Mask2Former on the rendered label maps (save_pretrained)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.verbs.args import device_arg

HELP = "fit the demo's small Mask2Former on label maps; save_pretrained folder"
log = logging.getLogger("pipeline")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=Path, required=True, metavar="TRAIN_DAY.zarr", help="frames shard (target rows used)")
    p.add_argument("--gt", type=Path, required=True, metavar="GT_TRAIN_DAY.zarr", help="ground-truth shard with `labels`")
    p.add_argument("--out-dir", type=Path, required=True, help="checkpoint folder (save_pretrained format)")
    p.add_argument("--max-steps", type=int, required=True, help="training steps")
    p.add_argument("--batch-size", type=int, required=True)
    device_arg(p)
    p.add_argument("--seed", type=int, required=True)


def run(args) -> int:
    import numpy as np

    from pipeline.shards import open_shard
    from pipeline.teachers import mask2former

    frames, gt = open_shard(args.frames), open_shard(args.gt)
    if "labels" not in gt:
        raise KeyError(f"{args.gt}: ground-truth shard has no `labels` array (needed to fit the demo teacher)")
    if gt["labels"].shape[0] != frames["image"].shape[0]:
        raise ValueError(f"{args.gt} has {gt['labels'].shape[0]} rows, {args.frames} has {frames['image'].shape[0]}")
    rows = np.flatnonzero(np.asarray(frames["target"][:], bool))
    if not len(rows):
        raise ValueError(f"{args.frames}: no target rows to fit the demo teacher on")
    images = frames["image"].oindex[rows]
    labels = mask2former.resize_labels(gt["labels"].oindex[rows], *images.shape[1:3])
    report = mask2former.fit_demo_teacher(images, labels, args.out_dir, device=args.device, seed=args.seed,
                                          max_steps=args.max_steps, batch_size=args.batch_size)
    log.info("demo seg teacher: %d steps, loss %.3f -> %.3f, saved to %s",
             report["steps"], report["first_loss"], report["last_loss"], args.out_dir)
    return 0
