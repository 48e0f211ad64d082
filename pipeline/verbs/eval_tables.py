"""`eval-tables`: the paper's Tables 1-5 with the measured rows beside them (md, csv, tex), and figures.

It reads only the files named on its command line and writes only the files named there.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

HELP = "the paper's Tables 1-5 with measured rows beside them (md, csv, tex) and figures"
log = logging.getLogger("pipeline")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics", type=Path, nargs="*", default=[], metavar="M.json",
                   help="evaluate outputs results/eval/{variant}/{ds}_{split}.json (the variant is the folder name)")
    p.add_argument("--predictions", type=Path, nargs="*", default=[], metavar="PRED.h5",
                   help="the evaluate predictions of each --metrics file, same order (one per --metrics file)")
    p.add_argument("--frames", type=Path, nargs="*", default=[], metavar="F.zarr",
                   help="the frames shard each --metrics file was evaluated on, same order (one per --metrics file)")
    p.add_argument("--efficiency", type=Path, metavar="EFF.json", help="efficiency output (Table 4)")
    p.add_argument("--teacher-metrics", type=Path, nargs="*", default=[], metavar="T.json",
                   help="evaluate-depth-teacher outputs (Monodepth2 rows of Tables 1-2)")
    p.add_argument("--md", type=Path, required=True, metavar="TABLES.md", help="writes the tables as Markdown")
    p.add_argument("--csv", type=Path, required=True, metavar="TABLES.csv", help="writes the tables as CSV (long)")
    p.add_argument("--tex", type=Path, required=True, metavar="TABLES.tex", help="writes the tables as LaTeX")
    p.add_argument("--html", type=Path, metavar="TABLES.html", help="also writes the tables as an HTML page (the report's)")
    p.add_argument("--figures", type=Path, nargs="*", default=[], metavar="FIG.png",
                   help="exactly the figures the metrics imply, by file name: qualitative_{variant}_{ds}_{split}.png "
                        "for each --metrics file of the main variant (`full` if given, else the first variant "
                        "in name order) and abs_rel.png (when any --metrics is given)")


def run(args) -> int:
    from pipeline.evaluate import figures, tables

    for name in ("predictions", "frames"):
        given = getattr(args, name)
        if len(given) != len(args.metrics):
            raise ValueError(f"--{name} gives {len(given)} files for {len(args.metrics)} --metrics files "
                             f"(one per --metrics file, same order)")
    records = [tables.load_metrics(p) for p in args.metrics]
    main_variant = tables.main_variant(tables.index_metrics(records))
    outputs = figures.match_outputs(args.figures, figures.figure_names(records, main_variant))
    eff = tables.load_efficiency(args.efficiency) if args.efficiency else None
    teachers = [tables.load_teacher_metrics(p) for p in args.teacher_metrics]
    built = tables.build_tables(records, eff, teachers)
    figs = figures.write_figures(records, args.predictions, args.frames, outputs, main_variant)
    paths = tables.write_tables(built, args.md, args.csv, args.tex, tables.header_text(records), args.html)
    log.info("tables: %s; figures: %s", ", ".join(map(str, paths.values())), ", ".join(map(str, figs)) or "none")
    return 0
