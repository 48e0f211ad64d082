"""`seg-pseudolabels`: Mask2Former top-k soft pseudo-labels for the target rows of a frames shard."""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.verbs.args import device_arg, part_arguments

HELP = "Mask2Former top-k soft pseudo-labels for the target rows of a frames shard"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=Path, required=True, metavar="F.zarr", help="frames shard (target rows labelled)")
    p.add_argument("--checkpoint", type=Path, required=True, metavar="DIR", help="local Mask2Former save_pretrained folder")
    p.add_argument("--out", type=Path, required=True, metavar="OUT.zarr", help="seg_teacher shard, aligned with --frames")
    p.add_argument("--topk", type=int, required=True, help="classes kept per pixel")
    p.add_argument("--tau", type=float, required=True, help="threshold of eq. 16, for the dropped-mass report")
    p.add_argument("--batch-size", type=int, required=True)
    part_arguments(p)
    device_arg(p)


def run(args) -> int:
    from pipeline.devices import resolve_device
    from pipeline.shards import Part, digest, provenance
    from pipeline.teachers import mask2former

    device = resolve_device(args.device)
    model, processor = mask2former.load_teacher(args.checkpoint, device)
    teacher = mask2former.teacher_id(args.checkpoint)
    attrs = provenance("seg_pseudolabels", {"topk": args.topk, "tau": args.tau},
                       {"frames": digest(args.frames), "teacher": teacher["sha256"]})
    mask2former.write_pseudolabels(args.frames, args.out, model, processor, teacher=teacher, k=args.topk,
                                   tau=args.tau, batch_size=args.batch_size, device=device, attrs=attrs,
                                   part=Part.parse(args.part, args.rows_per_shard))
    return 0
