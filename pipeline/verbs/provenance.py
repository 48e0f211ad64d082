"""`provenance PATH...`: the chain of rules, inputs, config values and code that made a result."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "print how a result was made: its inputs back to the roots, config values, code digests, times"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                   help="a result the pipeline made (metrics JSON, checkpoint, shard, table, ...)")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="machine-readable output")
    form.add_argument("--markdown", action="store_true", help="a Markdown document (the report's provenance.md)")
    p.add_argument("--out", type=Path, help="write to this file (atomically) instead of stdout")
    p.add_argument("--directory", type=Path,
                   help="Snakemake's working directory (default: the nearest folder above PATH with .snakemake)")


def run(args) -> int:
    from pipeline import atomic
    from pipeline import provenance as prov

    graph = prov.trace(args.paths, args.directory)
    if args.json:
        text = json.dumps(graph, indent=2) + "\n"
    elif args.markdown:
        text = prov.render_markdown(graph)
    else:
        text = prov.render_text(graph)
    if args.out:
        atomic.write_text(args.out, text)
    else:
        print(text, end="")
    return 0
