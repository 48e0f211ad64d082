"""`evaluate`: depth and segmentation metrics of a student on a test split; predictions h5."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.verbs.args import device_arg

HELP = "depth (the dataset's protocol: md4all, adds, monodepth2) and segmentation metrics of a student on a test split; predictions h5"
log = logging.getLogger("pipeline")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, required=True, metavar="LAST.pt", help="student checkpoint of `train`")
    p.add_argument("--frames", type=Path, required=True, metavar="F.zarr", help="frames shard (target rows evaluated)")
    p.add_argument("--gt", type=Path, required=True, metavar="GT.zarr",
                   help="gt_depth shard (`depth`, optional `labels`)")
    p.add_argument("--seg-teacher", type=Path, metavar="S.zarr",
                   help="seg_teacher shard: the seg reference when the gt has no labels; scored itself otherwise")
    p.add_argument("--dataset", required=True, choices=["nuscenes", "robotcar"])
    p.add_argument("--split", required=True, help="e.g. test_day, test_night")
    p.add_argument("--max-depth", type=float, required=True, help="evaluation cap in m (RobotCar 40, nuScenes 80)")
    p.add_argument("--protocol", required=True,
                   help="depth evaluation protocol (config eval.protocol.<dataset>): monodepth2, md4all or adds")
    p.add_argument("--batch-size", type=int, required=True)
    device_arg(p)
    p.add_argument("--out", type=Path, required=True, metavar="METRICS.json")
    p.add_argument("--predictions", type=Path, required=True, metavar="PRED.h5",
                   help="h5: depth float16 at the gt size, seg uint8 at the reference size, frame_id, row")


def run(args) -> int:
    from pipeline.devices import resolve_device
    from pipeline.evaluate.depth import constant_depth_warning
    from pipeline.evaluate.records import run_evaluate

    if args.max_depth <= 0:
        raise ValueError(f"--max-depth must be > 0, got {args.max_depth}")
    r = run_evaluate(args.checkpoint, args.frames, args.gt, args.seg_teacher, dataset=args.dataset, split=args.split,
                     max_depth=args.max_depth, batch_size=args.batch_size, device=resolve_device(args.device),
                     out=args.out, predictions=args.predictions, protocol=args.protocol)
    log.info("%s %s (%s protocol): %d frames, abs_rel %.4f (constant depth %.4f, untrained network %.4f), mIoU %s "
             "(untrained %s) vs %s -> %s", args.dataset, args.split, r["protocol"], r["n_frames"], r["depth"]["abs_rel"],
             r["baseline_constant"]["abs_rel"], r["baseline_untrained"]["depth"]["abs_rel"], r["seg"]["miou"],
             r["baseline_untrained"]["seg_miou"], r["seg_reference"], args.out)
    warning = constant_depth_warning("the student", r["depth"], r["baseline_constant"], f"{args.dataset} {args.split}")
    if warning:
        log.warning(warning)
    return 0
