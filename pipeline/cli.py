"""`python -m pipeline VERB ...`: the one entry point every Snakemake rule calls.

The verbs live one per module in `pipeline/verbs/` (`HELP`, `add_arguments`, `run`); this file only
dispatches. It imports the chosen verb's module by name, so each rule's code digest
(`pipeline.codedigest`) covers the code of its own verb and not the others'.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import resource
import sys
import time

STARTED = time.monotonic()  # this module is imported at interpreter start-up (`python -m pipeline`)

log = logging.getLogger("pipeline")

VERBS = ("demo-data", "splits", "extract-frames", "gt-depth", "inspect", "provenance",
         "train-cyclegan", "translate", "fit-demo-seg-teacher", "seg-pseudolabels",
         "train-depth-teacher", "depth-pseudolabels", "train",
         "evaluate", "evaluate-depth-teacher", "efficiency", "eval-tables", "assemble",
         "preview-panels", "curves")


def verb_module(verb: str):
    return importlib.import_module("pipeline.verbs." + verb.replace("-", "_"))


def build_parser(verbs=VERBS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb in verbs:
        module = verb_module(verb)
        module.add_arguments(sub.add_parser(verb, help=module.HELP, description=module.HELP))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = [a for a in argv if a in VERBS][:1]  # build only the chosen verb's parser (all for --help)
    args = build_parser(chosen or VERBS).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(verb_module(args.verb).run(args) or 0)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as exc:
        # Expected failures (bad input, missing files, bad config, corrupt shards): one clear line, no traceback.
        log.debug("traceback", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        log.info("%s: %s", args.verb, usage())


def usage() -> str:
    """This process's wall time, CPU time (with its reaped children: data-loader workers) and peak
    resident memory, for the job's log. The peak is the kernel's high-water mark (VmHWM) of this
    process since it started; Snakemake's `benchmark:` files sample every 0.5-30 s and can miss it."""
    cpu = sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))
    text = f"{time.monotonic() - STARTED:.1f} s wall, {cpu:.1f} CPU-s"
    try:
        with open("/proc/self/status") as status:
            hwm_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
        text += f", peak RSS {hwm_kb / 1024:.0f} MB"
    except (OSError, StopIteration, ValueError):
        pass  # not Linux: no VmHWM (ru_maxrss would include the parent's peak before exec)
    return text
