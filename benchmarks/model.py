"""Paper Table 4 for the student: parameters and GMACs per module beside the paper's, and CPU latency.

    python -m benchmarks.model [--width 576] [--height 320] [--runs 5] [--threads N]   (from the repo root)

MACs are counted on the "meta" device (shapes only) in two conventions: "thop" (the paper's counter,
which charges a transposed conv per output pixel) and "FlopCounterMode" (torch's true cost, FLOPs / 2).
Latency: the inference model (light net, encoder, both decoders; no PoseNet) on one image, mean of
--runs timed runs after one warm-up, in eval mode under torch.inference_mode."""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from pipeline.model import build_model, count_macs, count_parameters

PAPER = {  # Table 4: (params M, GMACs)
    "light": (0.167, 20.573),
    "encoder": (11.177, 6.699),
    "depth_decoder": (3.153, 5.358),
    "seg_decoder": (3.192, 6.254),
    "total": (17.688, 38.884),
}
PAPER_LATENCY_S = 0.0020  # RTX 4090


def complexity_rows(width: int, height: int) -> list[tuple[str, float, float, float]]:
    """[(module, params M, GMACs thop, GMACs FlopCounterMode)] for the inference modules and their total."""
    model = build_model({"model": {"width": width, "height": height}}).to("meta")
    x = torch.empty(1, 3, height, width, device="meta")
    feats = model.encoder(x)
    inputs = {"light": (x,), "encoder": (x,), "depth_decoder": (feats,), "seg_decoder": (feats,)}
    rows = []
    for name, args in inputs.items():
        module = getattr(model, name)
        rows.append((name, count_parameters(module) / 1e6, count_macs(module, args, "thop") / 1e9,
                     count_macs(module, args, "flop_counter") / 1e9))
    rows.append(("total", *(sum(r[i] for r in rows) for i in (1, 2, 3))))
    return rows


def latency_s(width: int, height: int, runs: int) -> list[float]:
    """Seconds per forward pass of one image through the inference model on CPU."""
    model = build_model({"model": {"width": width, "height": height}}).eval()
    model.pose = None
    image = torch.rand(1, 3, height, width)
    times = []
    with torch.inference_mode():
        model(image)  # warm-up
        for _ in range(runs):
            t0 = time.perf_counter()
            model(image)
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=576)
    ap.add_argument("--height", type=int, default=320)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    at_paper_size = (args.width, args.height) == (576, 320)
    print(f"DepthSegNet24 student at {args.width}x{args.height} (W x H); paper Table 4 is at 576x320"
          + ("" if at_paper_size else ": paper GMACs NOT comparable at this size"))
    print(f"{'module':14s} {'params M':>9s} {'paper':>7s}  {'GMACs thop':>10s} {'paper':>7s}  "
          f"{'GMACs FlopCounterMode':>21s}")
    for name, p, g_thop, g_fc in complexity_rows(args.width, args.height):
        pp, pg = PAPER[name]
        print(f"{name:14s} {p:9.3f} {pp:7.3f}  {g_thop:10.3f} {pg:7.3f}  {g_fc:21.3f}")
    times = latency_s(args.width, args.height, args.runs)
    print(f"CPU latency per image ({torch.get_num_threads()} threads, {args.runs} runs): "
          f"mean {statistics.mean(times) * 1e3:.1f} ms, min {min(times) * 1e3:.1f} ms "
          f"(paper: {PAPER_LATENCY_S * 1e3:.1f} ms on an RTX 4090)")


if __name__ == "__main__":
    main()
