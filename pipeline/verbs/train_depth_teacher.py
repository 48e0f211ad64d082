"""`train-depth-teacher`: train the Monodepth2 day-depth teacher; write its official weights folder."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.verbs.args import bool_arg, device_arg

HELP = "train the Monodepth2 day-depth teacher; write its official weights folder"
log = logging.getLogger("pipeline")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", type=Path, required=True, metavar="TRAIN_DAY.zarr", help="day frames shard")
    p.add_argument("--out-dir", type=Path, required=True, metavar="WEIGHTS_DIR",
                   help="writes encoder.pth, depth.pth, pose_encoder.pth, pose.pth (Monodepth2 layout)")
    p.add_argument("--state-dir", type=Path, required=True, help="resumable training state (removed when done)")
    p.add_argument("--log-dir", type=Path, required=True, metavar="TENSORBOARD_DIR",
                   help="TensorBoard event files: per-epoch mean loss and lr (tags epoch/*)")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--scheduler-step", type=int, required=True, help="StepLR step in epochs (x0.1)")
    p.add_argument("--min-depth", type=float, required=True)
    p.add_argument("--max-depth", type=float, required=True)
    p.add_argument("--color-aug", type=bool_arg, required=True, help="colour jitter (true/false)")
    p.add_argument("--automask", type=bool_arg, required=True,
                   help="Monodepth2's auto-masking (true/false; false = its --disable_automasking)")
    p.add_argument("--pretrained", type=Path, metavar="RESNET18.pth",
                   help="local torchvision ResNet-18 weights for both encoders (default: random init)")
    device_arg(p)
    p.add_argument("--seed", type=int, required=True)


def run(args) -> int:
    from pipeline import checkpoints, epoch_log
    from pipeline.devices import resolve_device
    from pipeline.shards import digest, file_sha256, open_shard
    from pipeline.teachers import monodepth2

    frames = open_shard(args.frames)
    h, w = frames["image"].shape[1:3]
    record = {"batch_size": args.batch_size, "lr": args.lr, "scheduler_step": args.scheduler_step,
              "min_depth": args.min_depth, "max_depth": args.max_depth, "color_aug": args.color_aug,
              "automask": args.automask,
              "seed": args.seed, "inputs": [digest(args.frames)],
              "pretrained": file_sha256(args.pretrained) if args.pretrained else None}
    # `epochs` may grow: StepLR does not depend on it
    state = checkpoints.TrainingState(args.state_dir, record, every_s=checkpoints.STATE_EVERY_S)
    with epoch_log.epoch_logger(args.log_dir) as on_epoch:
        monodepth2.train_depth_teacher(
            frames, height=h, width=w, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
            scheduler_step=args.scheduler_step, min_depth=args.min_depth, max_depth=args.max_depth,
            device=resolve_device(args.device), seed=args.seed, out_dir=args.out_dir, state=state,
            color_aug=args.color_aug, pretrained_path=args.pretrained, on_epoch=on_epoch, automask=args.automask)
    state.clear()
    log.info("wrote Monodepth2 weights to %s", args.out_dir)
    return 0
