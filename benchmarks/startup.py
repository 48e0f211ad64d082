"""Cost of a job's process around its work: `python -m pipeline` against the same verb run with
Python's default garbage-collector settings.

    python -m benchmarks.startup [--reps 3] [--frames 24]          (from the repo root)

Every Snakemake job is one `python -m pipeline VERB` process; most demo jobs spend more time importing
torch / transformers and shutting down than working. `pipeline/__main__.py` sets the collector's
thresholds to (50000, 20, 20) and freezes the heap before exiting. This script runs three verbs as the
rules run them (`OMP_NUM_THREADS=1`, `HF_HUB_OFFLINE=1`) on data it makes in a temp dir:

- `seg-pseudolabels`: a random small Mask2Former (`demo_config`, saved with `save_pretrained`) over
  --frames 160x96 frames (torch + transformers + zarr);
- `translate`: a random demo-size CycleGAN generator (ngf 16, 3 blocks) over the same frames
  (torch + torchvision + zarr);
- `inspect` of the frames shard (zarr, no torch),

each --reps times with the entry point `python -m pipeline` and with the baseline
`python -c "from pipeline.cli import main; raise SystemExit(main())"` (Python's defaults), alternating.
It prints the median wall time and CPU time (user + system of the process and its children, from
`wait4`) of each, and the ratio. Other processes on the machine inflate both; run it on a quiet one.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.teachers import random_frames, write_frames_shard

ENTRY = [sys.executable, "-m", "pipeline"]
BASELINE = [sys.executable, "-c", "from pipeline.cli import main; raise SystemExit(main())"]


def timed_run(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall s, CPU s) of one process, children included; raises if it fails."""
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: nobody reads a pipe while we wait
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n"
                               f"{err.read().decode(errors='replace')[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime


def make_inputs(tmp: Path, n: int) -> dict[str, list[str]]:
    from transformers import Mask2FormerForUniversalSegmentation

    from pipeline.synth import cyclegan
    from pipeline.teachers import mask2former

    frames = write_frames_shard(tmp / "frames.zarr", random_frames(n, 96, 160))
    torch.manual_seed(0)
    model = Mask2FormerForUniversalSegmentation(mask2former.demo_config()).eval()
    model.save_pretrained(tmp / "m2f")
    mask2former.demo_processor(96, 160).save_pretrained(tmp / "m2f")
    generator = cyclegan.save_generator(cyclegan.init_weights(cyclegan.ResnetGenerator(ngf=16, n_blocks=3)),
                                        tmp / "G.pth")
    common = ["--rows-per-shard", "64", "--part", "0/1", "--device", "cpu"]
    return {
        "seg-pseudolabels": ["seg-pseudolabels", "--frames", str(frames), "--checkpoint", str(tmp / "m2f"),
                             "--out", str(tmp / "seg.zarr"), "--topk", "3", "--tau", "0.1", "--batch-size", "4",
                             *common],
        "translate": ["translate", "--frames", str(frames), "--generator", str(generator),
                      "--out", str(tmp / "synth.zarr"), "--batch-size", "4", *common],
        "inspect": ["inspect", str(frames)],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3, help="runs of each verb per entry point (default 3)")
    ap.add_argument("--frames", type=int, default=24, help="frames labelled / translated (default 24)")
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    print(f"Process cost per job: `python -m pipeline` vs Python's default collector, {args.reps} runs each, "
          f"{args.frames} frames at 160x96, OMP_NUM_THREADS=1; load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as tmp:
        verbs = make_inputs(Path(tmp), args.frames)
        print(f"\n{'verb':<18}{'entry':<22}{'wall s (median)':>16}{'CPU s (median)':>16}   runs (wall / CPU)")
        for verb, argv in verbs.items():
            runs = {"default collector": [], "python -m pipeline": []}
            for _ in range(args.reps):
                for name, entry in (("default collector", BASELINE), ("python -m pipeline", ENTRY)):
                    runs[name].append(timed_run(entry + argv, env))
            medians = {}
            for name, got in runs.items():
                wall, cpu = statistics.median(w for w, _ in got), statistics.median(c for _, c in got)
                medians[name] = wall, cpu
                listed = ", ".join(f"{w:.2f}/{c:.2f}" for w, c in got)
                print(f"{verb:<18}{name:<22}{wall:>16.2f}{cpu:>16.2f}   {listed}")
            (bw, bc), (fw, fc) = medians["default collector"], medians["python -m pipeline"]
            print(f"{'':<18}{'ratio entry/default':<22}{fw / bw:>16.2f}{fc / bc:>16.2f}   "
                  f"saved {bw - fw:.2f} s wall, {bc - fc:.2f} CPU-s per job")


if __name__ == "__main__":
    main()
