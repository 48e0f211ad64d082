"""Paper Table 4 for the student: parameters and GMACs per module beside the paper's, and CPU latency.

    python -m benchmarks.model [--width 576] [--height 320] [--runs 5] [--threads 2] [--m2f-runs 2] [--no-m2f]
    (from the repo root)

MACs are counted on the "meta" device (shapes only) in two conventions: "thop" (the paper's counter,
which charges a transposed conv per output pixel) and "FlopCounterMode" (torch's true cost, FLOPs / 2).

Latency per image (batch 1, random weights, --threads torch threads), in one process:
- "before": the student as trained (`build_model`, eval mode, light net + encoder + both decoders, all
  four scales; no PoseNet) and Monodepth2's depth network (ResNet-18 encoder + depth decoder, eval), each
  under `torch.inference_mode` with glibc's default allocator behaviour;
- "after": their fast paths (`pipeline.model.inference.inference_model` / `inference_depth_model`:
  folded batch norm, fused oneDNN convs, channels-last, scale 0 only, the allocator setting of
  `tune_allocator`), and the student's fast path with the default allocator (the allocator's share);
- the Mask2Former Swin-L Cityscapes architecture (random weights, built offline from its config:
  Swin-L embed_dim 192, depths 2-2-18-2, heads 6-12-24-48, window 12; 100 queries, 10 decoder layers,
  19 labels), `model(pixel_values=...)` without post-processing, under both allocator settings.
The student and Monodepth2 runs are interleaved round-robin (the machine may be shared: every model sees
the same load), --runs rounds after one warm-up each; Mask2Former (~10x the student's work) runs after
them, --m2f-runs times per allocator setting after one warm-up, each run between two runs of the student
it is compared with. Medians and minima are reported, and ratios of the medians, of the minima (load
from other processes only ever adds time) and paired (the median of the ratios of back-to-back runs).
"""
from __future__ import annotations

import argparse
import os
import platform
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
PAPER_RATIOS = {"student / Monodepth2": 1.25, "Mask2Former / student": 13.0}  # on the GPU


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


def student_and_monodepth2(width: int, height: int, device: str = "cpu", seed: int = 0) -> tuple:
    """(student eval, Monodepth2 depth eval): random weights, no pose networks."""
    from pipeline.teachers.monodepth2 import Monodepth2

    torch.manual_seed(seed)
    student = build_model({"model": {"width": width, "height": height}})
    student.pose = None
    md2 = Monodepth2(num_layers=18, pose=False)
    md2.height, md2.width = height, width
    return student.to(device).eval(), md2.to(device).eval()


def executed_gmacs(width: int, height: int) -> dict[str, float]:
    """FlopCounterMode GMACs of the eval networks and of their fast paths (what they actually execute;
    the fast student's fused heads and light-net row sum count in full)."""
    from pipeline.model.inference import inference_depth_model, inference_model

    student, md2 = student_and_monodepth2(width, height, device="meta")
    x = torch.empty(1, 3, height, width, device="meta")
    return {"student": count_macs(student, (x,), "flop_counter") / 1e9,
            "student fast": count_macs(inference_model(student, tune_malloc=False), (x,), "flop_counter") / 1e9,
            "Monodepth2": count_macs(md2, (x,), "flop_counter") / 1e9,
            "Monodepth2 fast": count_macs(inference_depth_model(md2, tune_malloc=False), (x,), "flop_counter") / 1e9}


def mask2former_swin_large_cityscapes():
    """Mask2Former with the Swin-L Cityscapes semantic architecture, random weights, no download."""
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

    from pipeline import cityscapes

    backbone = SwinConfig(embed_dim=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48], window_size=12,
                          pretrain_img_size=384, drop_path_rate=0.0,
                          out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(backbone_config=backbone, num_queries=100, decoder_layers=10,
                               id2label=dict(enumerate(cityscapes.NAMES)),
                               label2id={name: i for i, name in enumerate(cityscapes.NAMES)})
    return Mask2FormerForUniversalSegmentation(config).eval()


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def latency_cases(width: int, height: int) -> dict:
    """{name: callable running one image} for the student and Monodepth2, before and after."""
    from pipeline.model.inference import inference_depth_model, inference_model, tune_allocator

    student, md2 = student_and_monodepth2(width, height)
    fast = inference_model(student)
    fast_default_alloc = inference_model(student, tune_malloc=False)
    md2_fast = inference_depth_model(md2)
    image = torch.rand(1, 3, height, width)

    def default_alloc(model):
        def run():
            tune_allocator(False)
            with torch.inference_mode():
                model(image)
        return run

    return {
        "student eval (before)": default_alloc(student),
        "student fast (after)": lambda: fast(image),
        "student fast, default allocator": default_alloc(fast_default_alloc),
        "Monodepth2 eval (before)": default_alloc(md2),
        "Monodepth2 fast (after)": lambda: md2_fast(image),
    }


def latencies(cases: dict, runs: int) -> dict[str, list[float]]:
    """Seconds per image, interleaved round-robin after one warm-up each: {name: [seconds per round]}."""
    for fn in cases.values():
        fn()  # warm-up: oneDNN primitives, packed weights, first allocations
    times = {name: [] for name in cases}
    for _ in range(runs):
        for name, fn in cases.items():
            times[name].append(_timed(fn))
    return times


def mask2former_latencies(width: int, height: int, runs: int, cases: dict) -> tuple[dict, dict]:
    """Mask2Former seconds per image under glibc's default allocator ("before") and the tuned one
    ("after"), each run bracketed by runs of the student network it is compared with (eval / fast), so
    that each ratio compares runs under the same load: ({name: [s]}, {"before"/"after": [ratios]})."""
    from pipeline.model.inference import tune_allocator

    model = mask2former_swin_large_cityscapes()
    pixels = torch.rand(1, 3, height, width)

    def run(tuned: bool):
        tune_allocator(tuned)
        with torch.inference_mode():
            model(pixel_values=pixels)

    run(False)  # warm-up
    names = {"before": ("Mask2Former Swin-L, default allocator", False, "student eval (before)"),
             "after": ("Mask2Former Swin-L, tuned allocator", True, "student fast (after)")}
    times = {name: [] for name, _, _ in names.values()}
    ratios = {"before": [], "after": []}
    for _ in range(runs):
        for key, (name, tuned, student) in names.items():
            s0 = _timed(cases[student])
            t = _timed(lambda: run(tuned))
            s1 = _timed(cases[student])
            times[name].append(t)
            ratios[key].append(t / ((s0 + s1) / 2))
    tune_allocator(False)
    return times, ratios


def _load() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=576)
    ap.add_argument("--height", type=int, default=320)
    ap.add_argument("--runs", type=int, default=5, help="timed rounds of the student / Monodepth2 models")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--m2f-runs", type=int, default=2, help="timed Mask2Former runs per allocator setting")
    ap.add_argument("--no-m2f", action="store_true", help="skip Mask2Former (its build and runs take minutes)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    at_paper_size = (args.width, args.height) == (576, 320)
    print(f"DepthSegNet24 student at {args.width}x{args.height} (W x H); paper Table 4 is at 576x320"
          + ("" if at_paper_size else ": paper GMACs NOT comparable at this size"))
    print(f"{'module':14s} {'params M':>9s} {'paper':>7s}  {'GMACs thop':>10s} {'paper':>7s}  "
          f"{'GMACs FlopCounterMode':>21s}")
    for name, p, g_thop, g_fc in complexity_rows(args.width, args.height):
        pp, pg = PAPER[name]
        print(f"{name:14s} {p:9.3f} {pp:7.3f}  {g_thop:10.3f} {pg:7.3f}  {g_fc:21.3f}")
    g = executed_gmacs(args.width, args.height)
    print("Executed GMACs (FlopCounterMode), eval network -> fast path: "
          f"student {g['student']:.2f} -> {g['student fast']:.2f}, "
          f"Monodepth2 {g['Monodepth2']:.2f} -> {g['Monodepth2 fast']:.2f} "
          f"(student / Monodepth2: {g['student'] / g['Monodepth2']:.2f} -> "
          f"{g['student fast'] / g['Monodepth2 fast']:.2f})")

    print(f"\nCPU latency per image, batch 1, {torch.get_num_threads()} torch threads "
          f"({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; "
          f"load average at start {_load()})")
    cases = latency_cases(args.width, args.height)
    times = latencies(cases, args.runs)
    m2f_ratios = None
    if not args.no_m2f:
        m2f_times, m2f_ratios = mask2former_latencies(args.width, args.height, args.m2f_runs, cases)
        times.update(m2f_times)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{'model':38s} {'median ms':>10s} {'min ms':>9s} {'runs':>5s}")
    for name, v in times.items():
        print(f"{name:38s} {med[name] * 1e3:10.1f} {min(v) * 1e3:9.1f} {len(v):5d}")
    print(f"(paper: student {PAPER_LATENCY_S * 1e3:.1f} ms on an RTX 4090)")

    def paired(a: str, b: str) -> float:  # median over rounds of the ratio within a round
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    rows = [
        ("student speed-up, eval network / fast path", "student eval (before)", "student fast (after)"),
        ("  (fast path with the default allocator)", "student eval (before)", "student fast, default allocator"),
        ("student / Monodepth2  before: eval / eval", "student eval (before)", "Monodepth2 eval (before)"),
        ("student / Monodepth2  after: fast / Monodepth2 eval", "student fast (after)", "Monodepth2 eval (before)"),
        ("student / Monodepth2  after: fast / Monodepth2 fast", "student fast (after)", "Monodepth2 fast (after)"),
    ]
    mins = {k: min(v) for k, v in times.items()}
    print("\nRatios (paper, GPU: student / Monodepth2 = 1.25, Mask2Former / student = 13)")
    print(f"{'':52s} {'of medians':>10s} {'of minima':>9s} {'paired':>7s}")
    for label, a, b in rows:
        print(f"{label:52s} {med[a] / med[b]:10.2f} {mins[a] / mins[b]:9.2f} {paired(a, b):7.2f}")
    if m2f_ratios is not None:
        for key, label, m2f, student in (
                ("before", "Mask2Former / student  before: default allocators",
                 "Mask2Former Swin-L, default allocator", "student eval (before)"),
                ("after", "Mask2Former / student  after: both tuned allocator",
                 "Mask2Former Swin-L, tuned allocator", "student fast (after)")):
            print(f"{label:52s} {med[m2f] / med[student]:10.2f} {mins[m2f] / mins[student]:9.2f} "
                  f"{statistics.median(m2f_ratios[key]):7.2f}")
    print("(paired: median over rounds of the ratio of the two runs of one round; for Mask2Former, of each "
          "run to the mean of the student runs just before and after it)")
    print(f"\nload average at end {_load()}; wall time {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
