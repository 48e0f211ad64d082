"""`train-cyclegan`: train (or adopt reference-format) CycleGAN day<->night generators."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.verbs.args import device_arg

HELP = "train (or adopt pretrained) CycleGAN day<->night generators"
log = logging.getLogger("pipeline")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--day", type=Path, required=True, metavar="DAY.zarr", help="frames shard of day images")
    p.add_argument("--night", type=Path, required=True, metavar="NIGHT.zarr", help="frames shard of night images")
    p.add_argument("--out-day2night", type=Path, required=True, metavar="G_day2night.pth")
    p.add_argument("--out-night2day", type=Path, required=True, metavar="G_night2day.pth")
    p.add_argument("--state-dir", type=Path, required=True, help="resumable training state (removed when done)")
    p.add_argument("--log-dir", type=Path, required=True, metavar="TENSORBOARD_DIR",
                   help="TensorBoard event files: per-epoch loss terms and lr (tags epoch/*); empty when pretrained")
    p.add_argument("--ngf", type=int, required=True, help="generator base channels (reference: 64)")
    p.add_argument("--n-blocks", type=int, required=True, help="residual blocks (reference: 9)")
    p.add_argument("--epochs", type=int, required=True, help="epochs at constant learning rate (reference: 100)")
    p.add_argument("--epochs-decay", type=int, required=True, help="epochs of linear decay to 0 (reference: 100)")
    p.add_argument("--crop", type=int, required=True, help="random crop size (reference: 256)")
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--lr", type=float, required=True)
    device_arg(p)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--pretrained-day2night", type=Path, metavar="PATH",
                   help="use this generator (reference format) instead of training; needs --pretrained-night2day")
    p.add_argument("--pretrained-night2day", type=Path, metavar="PATH")


def run(args) -> int:
    import shutil

    from pipeline import checkpoints, epoch_log
    from pipeline.atomic import atomic_path
    from pipeline.devices import resolve_device
    from pipeline.shards import digest, open_shard
    from pipeline.synth import cyclegan

    outs = {"day2night": args.out_day2night, "night2day": args.out_night2day}
    pretrained = {"day2night": args.pretrained_day2night, "night2day": args.pretrained_night2day}
    args.log_dir.mkdir(parents=True, exist_ok=True)
    if any(pretrained.values()):
        if not all(pretrained.values()):
            raise ValueError("--pretrained-day2night and --pretrained-night2day must be given together")
        for key, src in pretrained.items():
            G = cyclegan.load_generator(src)  # validates the file
            log.info("using pretrained %s generator %s (ngf %d, %d blocks)", key, src, G.ngf, G.n_blocks)
            with atomic_path(outs[key]) as tmp:
                shutil.copyfile(src, tmp)
        return 0
    record = {"ngf": args.ngf, "n_blocks": args.n_blocks, "epochs": args.epochs, "epochs_decay": args.epochs_decay,
              "crop": args.crop, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
              "inputs": [digest(args.day), digest(args.night)]}
    state = checkpoints.TrainingState(args.state_dir, record, every_s=checkpoints.STATE_EVERY_S)
    day, night = open_shard(args.day), open_shard(args.night)
    with epoch_log.epoch_logger(args.log_dir) as on_epoch:
        g_d2n, g_n2d = cyclegan.train_cyclegan(
            day["image"], night["image"], ngf=args.ngf, n_blocks=args.n_blocks, n_epochs=args.epochs,
            n_epochs_decay=args.epochs_decay, crop=args.crop, batch_size=args.batch_size, lr=args.lr,
            device=resolve_device(args.device), seed=args.seed, state=state, on_epoch=on_epoch)
    cyclegan.save_generator(g_d2n, outs["day2night"])
    cyclegan.save_generator(g_n2d, outs["night2day"])
    state.clear()
    log.info("wrote %s and %s", outs["day2night"], outs["night2day"])
    return 0
