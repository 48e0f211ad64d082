"""`inspect PATH`: arrays, attrs and statistics of a shard; --verify; --preview. On a folder of shards (e.g.
`results/`): one line per shard, each verified; exit 1 if any fails."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "print arrays, attrs and statistics of a shard; verify; preview; or list and verify every shard of a folder"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", type=Path,
                   help="a .zarr group written by the pipeline, or a folder (e.g. results/): list and verify its shards")
    p.add_argument("--verify", action="store_true", help="recompute the per-array checksums; exit 1 on a mismatch")
    p.add_argument("--preview", type=Path, metavar="OUT.png", help="render one row to a PNG")
    p.add_argument("--index", type=int, default=0, help="row to preview (default 0)")


def run(args) -> int:
    from pipeline import inspect as inspect_mod

    if args.path.is_dir() and not inspect_mod.is_shard_dir(args.path):
        if args.preview:
            raise ValueError(f"--preview needs a shard, and {args.path} is a folder of shards")
        report = inspect_mod.tree_report(args.path)
        print(report["text"])
        return 0 if report["ok"] else 1
    print(inspect_mod.describe(args.path))
    status = 0
    if args.verify:
        bad = inspect_mod.verify_report(args.path)
        print(bad["text"])
        status = 0 if bad["ok"] else 1
    if args.preview:
        out = inspect_mod.preview(args.path, args.index, args.preview)
        print(f"preview of row {args.index} written to {out}")
    return status
