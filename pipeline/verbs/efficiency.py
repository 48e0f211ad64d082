"""`efficiency`: parameters, GMACs and latency per module, beside Monodepth2 (Table 4)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.verbs.args import device_arg

HELP = "parameters, GMACs (thop and FlopCounterMode) and latency per module, with Monodepth2 (Table 4)"
log = logging.getLogger("pipeline")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, required=True, metavar="LAST.pt", help="student checkpoint of `train`")
    p.add_argument("--width", type=int, required=True, help="input width (paper Table 4: 576)")
    p.add_argument("--height", type=int, required=True, help="input height (paper Table 4: 320)")
    device_arg(p)
    p.add_argument("--runs", type=int, default=20, help="timed forward passes per latency")
    p.add_argument("--warmup", type=int, default=3, help="untimed forward passes first")
    p.add_argument("--out", type=Path, required=True, metavar="EFF.json")


def run(args) -> int:
    from pipeline.atomic import write_json
    from pipeline.devices import resolve_device
    from pipeline.evaluate.efficiency import run_efficiency

    r = run_efficiency(args.checkpoint, args.width, args.height, resolve_device(args.device), args.runs, args.warmup)
    write_json(args.out, r)
    for name, entry in r["models"].items():
        t = entry["modules"]["total"]
        log.info("%s: %.3f M params, %.3f GMACs (thop), %.3f GMACs (FlopCounterMode), CPU %.4f s/image", name,
                 t["params_m"], t["gmacs_thop"], t["gmacs_flop_counter"], entry["latency_s"]["cpu"])
    return 0
