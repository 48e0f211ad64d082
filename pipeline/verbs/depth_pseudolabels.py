"""`depth-pseudolabels`: Monodepth2 depth (float16) for the target rows of a frames shard."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.verbs.args import device_arg, part_arguments

HELP = "Monodepth2 depth (float16) for the target rows of a frames shard"
log = logging.getLogger("pipeline")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=Path, required=True, metavar="F.zarr", help="frames shard")
    p.add_argument("--weights", type=Path, required=True, metavar="WEIGHTS_DIR", help="Monodepth2 weights folder")
    p.add_argument("--out", type=Path, required=True, metavar="OUT.zarr",
                   help="depth_teacher shard, aligned with --frames")
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--min-depth", type=float, required=True)
    p.add_argument("--max-depth", type=float, required=True)
    part_arguments(p)
    device_arg(p)


def run(args) -> int:
    import numpy as np

    from pipeline.devices import resolve_device
    from pipeline.model.inference import inference_depth_model
    from pipeline.shards import Part, ShardWriter, digest, file_sha256, open_shard, provenance
    from pipeline.teachers import monodepth2

    frames = open_shard(args.frames)
    device = resolve_device(args.device)
    model = inference_depth_model(monodepth2.load_weights(args.weights, device))  # the fast path: same outputs
    teacher = {name: file_sha256(args.weights / name) for name in ("encoder.pth", "depth.pth")}
    attrs = provenance("depth_pseudolabels", {"min_depth": args.min_depth, "max_depth": args.max_depth,
                                              "teacher_height": model.height, "teacher_width": model.width},
                       {"frames": digest(args.frames), **teacher})
    attrs["teacher_sha256"] = teacher
    images, target = frames["image"], np.asarray(frames["target"][:], bool)
    part = Part.parse(args.part, args.rows_per_shard)
    with ShardWriter(args.out, images.shape[0], attrs, part=part) as w:  # non-target rows stay 0
        w.fill_rows("depth", tuple(images.shape[1:3]), np.float16, target, compress=True, desc="depth pseudo-labels",
                    compute=lambda rows: monodepth2.predict_depth(model, images.oindex[rows], args.batch_size, device,
                                                                  args.min_depth, args.max_depth),
                    rows_per_call=4 * args.batch_size)  # a few batches of frames at a time, not a shard
    lo, hi = part.rows(len(target))
    log.info("depth pseudo-labels for %d target rows of %s written to %s", int(target[lo:hi].sum()), args.frames,
             args.out)
    return 0
