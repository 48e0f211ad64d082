"""`splits`: write {out-dir}/{split}.txt, derived by the dataset's rule or taken from the user's split files."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.verbs.args import dataset_arguments, json_arg

HELP = "write results/{ds}/splits/{split}.txt (derived or from user split files)"
log = logging.getLogger("pipeline")


def add_arguments(p: argparse.ArgumentParser) -> None:
    dataset_arguments(p, "nuScenes version, day_clear_only; RobotCar runs, test_every, test_fraction, lidar_window_us")
    p.add_argument("--split-files", required=True, type=json_arg, help='JSON {"split": "file"}; others are derived')
    p.add_argument("--out-dir", required=True, type=Path)


def run(args) -> int:
    from pipeline.datasets import frames as fr
    from pipeline.datasets.adapter import open_dataset

    unknown = set(args.split_files) - set(fr.SPLITS)
    if unknown:
        raise ValueError(f"split_files names unknown splits {sorted(unknown)}; expected {list(fr.SPLITS)}")
    derived, header = open_dataset(args.dataset, args.root, args.options).derive_splits()
    for split in fr.SPLITS:
        if split in args.split_files:
            ids = fr.read_split_file(args.split_files[split])
            note = f"{split}: from the user's split file {args.split_files[split]}"
        else:
            ids = derived[split]
            note = f"{split}: derived ({header})"
        fr.write_split_file(args.out_dir / f"{split}.txt", ids, header=note)
        log.info("%s: %d frames -> %s", split, len(ids), args.out_dir / f"{split}.txt")
    return 0
