"""`inspect PATH`: arrays, attrs and statistics of a shard; --verify; --preview."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "print arrays, attrs and statistics of a shard; verify; preview"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", type=Path, help="a .zarr group written by the pipeline")
    p.add_argument("--verify", action="store_true", help="recompute the per-array checksums; exit 1 on a mismatch")
    p.add_argument("--preview", type=Path, metavar="OUT.png", help="render one row to a PNG")
    p.add_argument("--index", type=int, default=0, help="row to preview (default 0)")


def run(args) -> int:
    from pipeline import inspect as inspect_mod

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
