"""`evaluate-depth-teacher`: the Monodepth2 day teacher on a test split (Monodepth2 rows of Tables 1-2)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.verbs.args import device_arg

HELP = "the Monodepth2 day teacher on a test split (Tables 1-2 Monodepth2 rows)"
log = logging.getLogger("pipeline")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, type=Path, help="Monodepth2 weights folder")
    p.add_argument("--frames", required=True, type=Path)
    p.add_argument("--gt", required=True, type=Path)
    p.add_argument("--dataset", required=True, choices=["nuscenes", "robotcar"])
    p.add_argument("--split", required=True)
    p.add_argument("--max-depth", required=True, type=float, help="evaluation cap (m)")
    p.add_argument("--teacher-min-depth", required=True, type=float, help="the teacher's disp_to_depth range")
    p.add_argument("--teacher-max-depth", required=True, type=float)
    p.add_argument("--protocol", required=True,
                   help="depth evaluation protocol (config eval.protocol.<dataset>): monodepth2, md4all or adds")
    p.add_argument("--batch-size", type=int, required=True)
    device_arg(p)
    p.add_argument("--out", required=True, type=Path)


def run(args) -> int:
    from pipeline.devices import resolve_device
    from pipeline.evaluate.depth import constant_depth_warning
    from pipeline.evaluate.records import evaluate_depth_teacher

    r = evaluate_depth_teacher(args.weights, args.frames, args.gt, dataset=args.dataset, split=args.split,
                               max_depth=args.max_depth, batch_size=args.batch_size,
                               device=resolve_device(args.device), out=args.out,
                               min_depth=args.teacher_min_depth, teacher_max_depth=args.teacher_max_depth,
                               protocol=args.protocol)
    log.info("depth teacher on %s %s: abs_rel %.4f, constant-depth baseline %.4f (%d frames) -> %s", args.dataset,
             args.split, r["depth"]["abs_rel"], r["baseline_constant"]["abs_rel"], r["n_frames"], args.out)
    warning = constant_depth_warning("the depth teacher", r["depth"], r["baseline_constant"],
                                     f"{args.dataset} {args.split}")
    if warning:
        log.warning(warning)
    return 0
