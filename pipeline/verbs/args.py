"""Argument types shared by the verbs."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def bool_arg(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def json_arg(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {text!r} ({exc})") from exc


def device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", required=True, help="auto (cuda if available), cpu or cuda[:N]")


def part_arguments(p: argparse.ArgumentParser) -> None:
    """--part and --rows-per-shard of the verbs a stage can split over several jobs (jobs_per_split)."""
    p.add_argument("--part", required=True, metavar="I/N",
                   help="write part I of N of the output (whole shard files; `assemble` joins them); 0/1 = all")
    p.add_argument("--rows-per-shard", type=int, required=True,
                   help="rows per shard file of the per-frame arrays (config key extract.rows_per_shard)")


def dataset_arguments(p: argparse.ArgumentParser, options_help: str) -> None:
    """--dataset, --root and --options (JSON of the dataset's config keys the stage reads), for the data verbs."""
    p.add_argument("--dataset", required=True, choices=["nuscenes", "robotcar"])
    p.add_argument("--root", required=True, type=Path, help="dataset root (config key datasets.<ds>.root)")
    p.add_argument("--options", required=True, type=json_arg,
                   help=f"JSON of the config keys datasets.<ds>.* this stage reads ({options_help})")
