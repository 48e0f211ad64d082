"""Cost per frame and memory as the data grows, and projections to the real datasets (issue 14).

    python -m benchmarks.scale [--sizes 1 4 16] [--work DIR] [--cores 2] [--threads 2]

1. Renders the demo datasets at 1x, 4x (and 16x) their default size: nuScenes `scene_copies` x the six
   scenes and 8 x k/c key frames per scene (1x: 6 x 8, 4x: 12 x 16, 16x: 24 x 32), RobotCar 40 x k
   stereo frames per run. Rendered at `render_scale` 0.25 with 2 sweeps between key frames (3 rows per
   target as with nuScenes' 5) to save rendering time; the files are the real formats and sizes
   (1600x900 JPEG, 1280x960 Bayer PNG).
2. Runs the per-frame stages through Snakemake in a work folder per size (this checkout's Snakefile, a
   config.yaml there): extract_frames, gt_depth, translate, seg_pseudolabels, depth_pseudolabels and one
   training epoch (capped at TRAIN_STEPS steps), at the paper's frame and ground-truth resolutions
   (workflow/configs/paper.yaml: nuScenes 576x320, GT 1600x900; RobotCar 1280x640 crop -> 512x256, GT
   1280x640) with the small demo networks (CycleGAN ngf 16 / 3 blocks, the demo segmentation teacher,
   Monodepth2 ResNet-18, the light student). The teachers are made once, at 1x, outside the measurement:
   the segmentation teacher is fitted for 20 steps (its labels then have a fitted model's regions, whose
   compressed size enters the projection); CycleGAN's generators and Monodepth2 are written with their
   initial weights, in the files their training rules write (their per-frame cost does not depend on the
   weights; an untrained Monodepth2's depth maps compress better than a trained one's, so the teacher
   depth bytes per frame are a low estimate). The larger sizes reuse them (`--allowed-rules`: only the
   per-frame rules run).
3. Prints per stage and dataset, from the jobs' `benchmark:` files and the stores: frames, seconds per
   frame (wall), CPU seconds per frame, peak RSS (of the stage's largest job: the larger of the sampler's
   max_rss and the high-water mark, VmHWM, that the job's log line reports) and bytes per frame on disk,
   with the ratios k x / 1x; then extraction frames/s beside the bare OpenCV decode + resize of the same
   files at 1 and 2 threads, and gt_depth at 1 and 2 threads; extract_frames' peak RSS per size by
   the kernel's high-water mark of a fresh process (a 2-second job's peak can fall between the sampler's reads, so this
   figure, not the sampled one, enters the RSS goal); then the projection table.

Wall times depend on what else runs on the machine (the load average is printed); CPU seconds do not.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SIZES = {1: (1, 8, 40), 4: (2, 16, 160), 16: (4, 32, 640)}  # scene copies, key frames per scene, RobotCar frames/run
SWEEPS_BETWEEN = 2
RENDER_SCALE = 0.25
TRAIN_STEPS = 2          # steps of the measured training epoch (batch 2): the same work at every size
DATASETS = ("nuscenes", "robotcar")
SPLITS = ("train_day", "train_night", "test_day", "test_night")
STAGES = {  # stage -> (benchmark folder, shard kind, splits it computes, what a frame is)
    "extract_frames": ("extract_frames", "frames", SPLITS, "row"),
    "gt_depth": ("gt_depth", "gt_depth", ("train_day", "test_day", "test_night"), "target"),
    "translate": ("translate", "synth", ("train_day", "train_night"), "target"),
    "seg_pseudolabels": ("seg_pseudolabels", "seg_teacher", SPLITS, "target"),
    "depth_pseudolabels": ("depth_pseudolabels", "depth_teacher", ("train_day",), "target"),
    "train": ("train", None, ("train_day",), "item"),
}
PER_FRAME_RULES = ["splits", "extract_frames", "gt_depth", "translate", "seg_pseudolabels", "depth_pseudolabels",
                   "train_student", "frames", "teachers", "train"]  # the last three: the target rules
TEACHER_OUTPUTS = ["cyclegan/G_day2night.pth", "cyclegan/G_night2day.pth", "seg_teacher/demo_checkpoint",
                   "depth_teacher/weights"]

# ---------------------------------------------------------------------------------------------- the real datasets
# Target frames per split (what the stages compute per frame) and where the counts come from.
REAL = {
    "nuscenes": {
        "train_day": (15129, "md4all: day-clear samples of the v1.0-trainval train scenes"),
        "train_night": (13001, "upper bound: 28,130 train samples - 15,129 day-clear (rain + night)"),
        "test": (6019, "upper bound: all 6,019 val samples (day-clear + night are a part of them)"),
    },
    "robotcar": {
        "train_day": (21932, "ADDS-DepthNet splits/oxford_day/train_files.txt (2014-12-09-13-21-02)"),
        "train_night": (22811, "ADDS-DepthNet splits/oxford_night/train_files.txt (2014-12-16-18-44-24)"),
        "test": (451 + 411, "ADDS-DepthNet splits: 451 day + 411 night test frames"),
    },
}
# GPU latency per frame (s) on an RTX 4090 at 576x320, paper Table 4; CycleGAN is not in Table 4 (see below).
TABLE4_S = {"student": 0.0020, "monodepth2": 0.0016, "mask2former": 0.0267}
STUDENT_GMACS = 38.884   # Table 4, the student's total at 576x320
PAPER_EPOCHS = 40        # paper 4.2


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 4], choices=sorted(SIZES))
    ap.add_argument("--work", type=Path, default=None,
                    help="work folder (default: a new temporary folder); renders there are reused")
    ap.add_argument("--cores", type=int, default=2, help="snakemake --cores")
    ap.add_argument("--threads", type=int, default=2, help="extract.threads (extract_frames and gt_depth)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    args = ap.parse_args(argv)
    sizes = sorted(set(args.sizes) | {1})
    work = args.work or Path(tempfile.mkdtemp(prefix="scale_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    t0, load0 = time.perf_counter(), os.getloadavg()
    phases = {}
    try:
        t = time.perf_counter()
        render_all(work, sizes)
        phases["render"] = time.perf_counter() - t
        measured = {}
        for k in sizes:
            t = time.perf_counter()
            measured[k] = run_size(work, k, args.cores, args.threads, phases)
            phases[f"{k}x per-frame stages"] = time.perf_counter() - t
        t = time.perf_counter()
        limits = decode_limits(work, sizes[-1])
        phases["decode limit"] = time.perf_counter() - t
        t = time.perf_counter()
        exact_rss = {(ds, k): extract_peak_rss_mb(work, k, ds, args.threads) for ds in DATASETS for k in sizes}
        phases["extraction peak RSS"] = time.perf_counter() - t
        report(measured, sizes, limits, exact_rss, args.threads)
        projection(measured, sizes)
    finally:
        if args.work is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    load1 = os.getloadavg()
    print(f"\nwall {time.perf_counter() - t0:.0f} s (" + ", ".join(f"{k} {v:.0f} s" for k, v in phases.items())
          + f"); load average (1, 5, 15 min) at start {load0[0]:.1f} {load0[1]:.1f} {load0[2]:.1f}, "
            f"at end {load1[0]:.1f} {load1[1]:.1f} {load1[2]:.1f} on {os.cpu_count()} CPUs")
    return 0


# ---------------------------------------------------------------------------------------------- rendering
def data_root(work: Path, ds: str, k: int) -> Path:
    return work / "data" / f"{ds}_{k}x"


def _render(ds: str, root: str, k: int) -> dict:
    copies, keyframes, frames_per_run = SIZES[k]
    params = {"ds": ds, "k": k, "copies": copies, "keyframes": keyframes, "frames_per_run": frames_per_run,
              "sweeps": SWEEPS_BETWEEN, "render_scale": RENDER_SCALE, "seed": 0}
    stamp = Path(root) / ".scale_params.json"
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        return {"ds": ds, "k": k, "seconds": 0.0, "reused": True}
    shutil.rmtree(root, ignore_errors=True)
    t = time.perf_counter()
    if ds == "nuscenes":
        from pipeline.datasets.nuscenes_demo import write_nuscenes_demo

        write_nuscenes_demo(root, seed=0, keyframes_per_scene=keyframes, sweeps_between=SWEEPS_BETWEEN,
                            render_scale=RENDER_SCALE, progress=False, scene_copies=copies)
    else:
        from pipeline.datasets.robotcar_demo import write_robotcar_demo

        write_robotcar_demo(root, seed=0, frames_per_run=frames_per_run, render_scale=RENDER_SCALE, progress=False)
    stamp.write_text(json.dumps(params))
    return {"ds": ds, "k": k, "seconds": time.perf_counter() - t, "reused": False}


def render_all(work: Path, sizes) -> None:
    """Both datasets of every size, two renders at a time (the renderer is single-threaded)."""
    jobs = [(ds, str(data_root(work, ds, k)), k) for k in sizes for ds in DATASETS]
    with ProcessPoolExecutor(2) as pool:
        for r in pool.map(_render, *zip(*jobs)):
            print(f"render {r['ds']} {r['k']}x: " + ("reused" if r["reused"] else f"{r['seconds']:.0f} s"),
                  flush=True)


# ---------------------------------------------------------------------------------------------- the workflow
def write_config(workdir: Path, work: Path, k: int, threads: int) -> Path:
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    paper = yaml.safe_load((REPO / "workflow" / "configs" / "paper.yaml").read_text())
    for ds in DATASETS:
        for key in ("crop", "width", "height", "eval_width", "eval_height"):
            cfg["datasets"][ds][key] = paper["datasets"][ds][key]
        cfg["datasets"][ds]["root"] = str(data_root(work, ds, k))
        cfg["datasets"][ds]["enabled"] = True
    cfg["results_dir"] = "results"
    cfg["extract"]["threads"] = threads
    cfg["seg_teacher"]["demo_max_steps"] = 20                # fitted once at 1x, not measured
    cfg["train"].update(epochs=1, max_steps_per_epoch=TRAIN_STEPS, variants=["full"], datasets=list(DATASETS))
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def snakemake_command(workdir: Path, targets, cores: int, allowed=None, configfile: Path | None = None,
                      forcerun=()) -> tuple[list[str], dict]:
    """(argv, environment) of `snakemake` with this checkout's Snakefile in `workdir` (config:
    `configfile`, default workdir/config.yaml); `allowed`: --allowed-rules, `forcerun`: --forcerun."""
    cmd = [shutil.which("snakemake") or "snakemake", *targets, "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--configfile", str(configfile or workdir / "config.yaml"), "--cores", str(cores), "--rerun-incomplete"]
    if allowed:  # the targets come first: these options take lists
        cmd += ["--allowed-rules", *allowed]
    if forcerun:
        cmd += ["--forcerun", *forcerun]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return cmd, env


def snakemake(workdir: Path, targets, cores: int, allowed=None, log: Path | None = None,
              configfile: Path | None = None, forcerun=()) -> None:
    """Run `snakemake_command(...)`; raises with the end of `log` on a failure."""
    cmd, env = snakemake_command(workdir, targets, cores, allowed, configfile, forcerun)
    with open(log or os.devnull, "a") as out:
        proc = subprocess.run(cmd, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
    check_snakemake(proc.returncode, workdir, log)


def check_snakemake(returncode: int, workdir: Path, log: Path | None) -> None:
    if returncode:
        tail = "\n".join(log.read_text().splitlines()[-30:]) if log else ""
        raise RuntimeError(f"snakemake failed ({returncode}) in {workdir}; the end of {log}:\n{tail}")


def run_size(work: Path, k: int, cores: int, threads: int, phases: dict) -> dict:
    """Run the per-frame stages at size k; returns the measurements per (stage, dataset)."""
    workdir = work / f"run_{k}x"
    workdir.mkdir(parents=True, exist_ok=True)
    write_config(workdir, work, k, threads)
    log = workdir / "snakemake.log"
    R = workdir / "results"
    if k == 1:  # the small teachers, made here once (their jobs are not part of any stage below)
        t = time.perf_counter()
        write_untrained_teachers(R, yaml.safe_load((workdir / "config.yaml").read_text()))
        snakemake(workdir, [f"results/{ds}/seg_teacher/demo_checkpoint" for ds in DATASETS], cores,
                  allowed=[*PER_FRAME_RULES, "demo_seg_teacher"], log=log)
        phases["1x teachers (not measured)"] = time.perf_counter() - t
    else:
        for ds in DATASETS:
            for o in TEACHER_OUTPUTS:
                src, dst = work / "run_1x" / "results" / ds / o, R / ds / o
                if not dst.exists():
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
    snakemake(workdir, ["frames", "teachers", "train"], cores, allowed=PER_FRAME_RULES, log=log)
    return measure(R)


def write_untrained_teachers(R: Path, cfg: dict) -> None:
    """CycleGAN's two generators and the Monodepth2 teacher (depth + pose) of each dataset with their
    initial weights (seed 0), written where and how `train_cyclegan` and `train_depth_teacher` write them;
    `depth_teacher/weights` records the dataset's frame size, as a trained one does."""
    import torch

    from pipeline.synth.cyclegan import build_cyclegan, save_generator
    from pipeline.teachers.monodepth2 import Monodepth2, save_weights

    for ds in DATASETS:
        nets = build_cyclegan(cfg["cyclegan"]["ngf"], cfg["cyclegan"]["n_blocks"], 0, torch.device("cpu"))
        (R / ds / "cyclegan").mkdir(parents=True, exist_ok=True)
        for name in ("G_day2night", "G_night2day"):
            save_generator(nets[name], R / ds / "cyclegan" / f"{name}.pth")
        torch.manual_seed(0)
        size = cfg["datasets"][ds]
        save_weights(Monodepth2(18, pose=True), R / ds / "depth_teacher" / "weights", size["height"], size["width"])


def _tsv(path: Path) -> dict:
    with open(path) as f:
        row = next(csv.DictReader(f, delimiter="\t"))
    return {"s": float(row["s"]), "cpu": float(row["cpu_time"]), "rss": float(row["max_rss"])}


PEAK_LINE = re.compile(r"INFO pipeline: [a-z-]+: .* peak RSS (\d+) MB")


def _logged_peak_mb(log: Path) -> float:
    """The peak RSS (MB) a job's closing cost line reports (`pipeline.cli.usage`: the kernel's VmHWM of the
    job's process), 0 when there is none. Snakemake's sampler reads RSS every 0.5-30 s and missed, e.g.,
    the 1x RobotCar training job's peak (5,743 MB sampled, 8,131 MB by VmHWM; 2026-12-02)."""
    if not log.exists():
        return 0.0
    peaks = PEAK_LINE.findall(log.read_text(errors="replace"))
    return float(peaks[-1]) if peaks else 0.0


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) if Path(path).exists() else 0


def measure(R: Path) -> dict:
    from pipeline.shards import open_shard

    counts = {}
    for ds in DATASETS:
        for split in SPLITS:
            frames = open_shard(R / ds / "frames" / f"{split}.zarr")
            counts[ds, split] = (frames["image"].shape[0], int(frames["target"][:].sum()))
    settings = yaml.safe_load((R.parent / "config.yaml").read_text())["train"]
    out = {"counts": counts}
    for stage, (folder, kind, splits, unit) in STAGES.items():
        for ds in DATASETS:
            m = {"frames": 0, "s": 0.0, "cpu": 0.0, "rss": 0.0, "bytes": 0, "jobs": 0}
            for split in splits:
                tsv = R / "benchmarks" / folder / (f"{ds}_full.tsv" if stage == "train" else f"{ds}_{split}.tsv")
                if not tsv.exists():
                    continue
                b = _tsv(tsv)
                b["rss"] = max(b["rss"], _logged_peak_mb(R / "logs" / folder / f"{tsv.stem}.log"))
                rows, targets = counts[ds, split]
                if stage == "train":
                    n = min(targets, settings["max_steps_per_epoch"] * settings["batch_size"])
                else:
                    n = rows if unit == "row" else targets
                m["frames"] += n
                m["s"] += b["s"]
                m["cpu"] += b["cpu"]
                m["rss"] = max(m["rss"], b["rss"])
                m["jobs"] += 1
                if kind:
                    m["bytes"] += _du(R / ds / kind / f"{split}.zarr")
            out[stage, ds] = m
    return out


# ---------------------------------------------------------------------------------------------- decode limit
def _bare(ds: str, crop, size, maps=None):
    """OpenCV imread (+ demosaic for RobotCar) + crop + INTER_AREA resize of one file; with `maps` (RobotCar's
    fixed-point undistortion maps of the crop box) also the remap: the work extraction cannot avoid."""
    import cv2

    cv2.setNumThreads(1)
    left, top, right, bottom = crop

    def decode(path: str):
        if ds == "robotcar":
            img = cv2.cvtColor(cv2.imread(path, cv2.IMREAD_UNCHANGED), cv2.COLOR_BayerGR2RGB)
        else:
            img = cv2.imread(path, cv2.IMREAD_COLOR)
        h, w = img.shape[:2]
        if maps is not None:
            img = cv2.remap(img, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        else:
            img = img[top:h - bottom, left:w - right]
        return cv2.resize(img, size, interpolation=cv2.INTER_AREA)

    return decode


def _timed(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def _extract(cfg: dict, c: dict, dataset, table, out: Path, threads: int) -> None:
    """`extract_frames` of `table`'s rows into `out` as the rule runs it (the dataset and its table already open)."""
    from pipeline.datasets import frames as fr

    fr.extract_frames(table, dataset.load_frame, out, crop=c["crop"], size=(c["width"], c["height"]), attrs={},
                      threads=threads, rows_per_shard=cfg["extract"]["rows_per_shard"], progress=False)


def _peak_rss_child(work: str, k: str, ds: str, threads: str) -> None:
    """In a fresh process: extract every row of the four splits of the size-k run into a temporary folder,
    then print `VmHWM` (KB)."""
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        _extract(*_all_rows(Path(work), int(k), ds), Path(tmp) / "x.zarr", int(threads))
    print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))


def _all_rows(work: Path, k: int, ds: str):
    """(config, dataset section, dataset, frame table of every row of the four splits) of the size-k run."""
    from pipeline.datasets import frames as fr
    from pipeline.datasets.adapter import open_dataset

    cfg = yaml.safe_load((work / f"run_{k}x" / "config.yaml").read_text())
    c = cfg["datasets"][ds]
    options = ({"version": c["version"], "neighbours": c["neighbours"]} if ds == "nuscenes"
               else {"lidar_window_us": c["lidar_window_us"]})
    dataset = open_dataset(ds, c["root"], options)
    split_dir = work / f"run_{k}x" / "results" / ds / "splits"
    ids = [i for split in SPLITS for i in fr.read_split_file(split_dir / f"{split}.txt")]
    return cfg, c, dataset, dataset.frame_table(ids)


def extract_peak_rss_mb(work: Path, k: int, ds: str, threads: int) -> float:
    """Peak RSS (MB) of a fresh process extracting every row of the four splits of the size-k run, by the
    kernel's high-water mark of the process's memory (`VmHWM` in /proc/self/status): Snakemake's
    `benchmark:` sampler reads RSS twice a second and can miss the peak of a 2-second extraction job.
    Not `ru_maxrss`: Linux folds the parent's peak into a child's at exec (this script's, ~1 GB)."""
    code = "import sys\nfrom benchmarks import scale\nscale._peak_rss_child(*sys.argv[1:])"
    out = subprocess.run([sys.executable, "-c", code, str(work), str(k), ds, str(threads)], check=True,
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1]).stdout
    return int(out.split()[-1]) / 1024  # Linux: KB


def decode_limits(work: Path, k: int, reps: int = 2) -> dict:
    """extract_frames vs bare imread (+ demosaic) + resize of the same files, and gt_depth, at 1 and 2 threads."""
    from pipeline.datasets import ground_truth
    from pipeline.shards import open_shard

    R = work / f"run_{k}x" / "results"
    out = {}
    for ds in DATASETS:
        cfg, c, dataset, table = _all_rows(work, k, ds)  # every row of the four splits: fixed costs amortised
        paths = [str(dataset.root / s) for s in table.source]
        size = (c["width"], c["height"])
        variants = {"bare": _bare(ds, c["crop"], size)}
        if ds == "robotcar":
            from pipeline.datasets import robotcar as rc
            from pipeline.datasets.images import CropResize

            box = CropResize(c["crop"], table.image_size, size).box
            model = rc._cached_camera_model(dataset.models_dir, rc.model_name_for(paths[0]), table.image_size[1],
                                            table.image_size[0])
            xy, frac, _ = model.remap_maps()
            variants["bare+remap"] = _bare(ds, c["crop"], size, (xy[box[1]:box[3], box[0]:box[2]],
                                                                frac[box[1]:box[3], box[0]:box[2]]))
        res = {}
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            for rep in range(reps):
                for threads in (1, 2):
                    def run_bare(decode):
                        with ThreadPoolExecutor(threads) as pool:
                            list(pool.map(decode, paths))

                    def run_ours():
                        _extract(cfg, c, dataset, table, Path(tmp) / f"x{threads}.zarr", threads)

                    runs = [(name, lambda d=decode: run_bare(d)) for name, decode in variants.items()]
                    for name, fn in (*runs, ("extract", run_ours)):
                        wall, cpu = _timed(fn)
                        best = res.get((name, threads))
                        if best is None or wall < best[0]:
                            res[name, threads] = (wall, cpu)
            frames = open_shard(R / ds / "frames" / "test_day.zarr")
            for threads in (1, 2):
                res["gt_depth", threads] = _timed(lambda: ground_truth.write(
                    dataset, frames, Path(tmp) / f"gt{threads}.zarr", crop=c["crop"],
                    size=(c["eval_width"], c["eval_height"]), attrs={}, threads=threads, progress=False))
        n_gt = int(frames["target"][:].sum())
        out[ds] = {"rows": len(paths), "gt_targets": n_gt, "res": res}
    return out


# ---------------------------------------------------------------------------------------------- report
def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def report(measured: dict, sizes, limits: dict, exact_rss: dict | None = None, threads: int = 2) -> None:
    print("\nPer-frame stages (paper resolutions, demo networks); frame = stored row (extract) or computed target;"
          " train: one epoch of", TRAIN_STEPS, "steps x batch 2")
    head = f"{'stage':<19}{'dataset':<9}"
    for k in sizes:
        head += f"| {k}x: {'frames':>6} {'s/fr':>6} {'cpu/fr':>6} {'RSS MB':>6} {'B/frame':>9} "
    for k in sizes[1:]:
        head += f"| {k}x/1x: {'s/fr':>5} {'cpu':>5} {'RSS':>5} {'B/fr':>5} "
    print(head)
    worst = {}
    for stage in STAGES:
        for ds in DATASETS:
            line = f"{stage:<19}{ds:<9}"
            vals = {}
            for k in sizes:
                m = measured[k][stage, ds]
                n = max(1, m["frames"])
                vals[k] = (m["s"] / n, m["cpu"] / n, m["rss"], m["bytes"] / n)
                line += (f"| {'':>3} {m['frames']:>6} {vals[k][0]:>6.2f} {vals[k][1]:>6.2f} {m['rss']:>6.0f} "
                         f"{(_fmt_bytes(vals[k][3]) if m['bytes'] else '-'):>9} ")
            for k in sizes[1:]:
                r = [a / b if b else float("nan") for a, b in zip(vals[k], vals[1])]
                worst[stage, ds, k] = r[2]
                line += f"| {'':>6} {r[0]:>5.2f} {r[1]:>5.2f} {r[2]:>5.2f} " + (
                    f"{r[3]:>5.2f} " if vals[1][3] else f"{'-':>5} ")
            print(line)
    if exact_rss:
        # extraction jobs last about 2 s at 1x: the sampler's max_rss can miss their peak, VmHWM cannot
        print(f"extract_frames peak RSS by the process itself (VmHWM, a fresh process per size, {threads} threads; "
              "replaces the sampled figure in the goal below): " + "; ".join(
                  f"{ds} " + " / ".join(f"{exact_rss[ds, k]:.0f}" for k in sizes) + " MB ("
                  + ", ".join(f"{k}x/1x {exact_rss[ds, k] / exact_rss[ds, 1]:.2f}" for k in sizes[1:]) + ")"
                  for ds in DATASETS))
        for ds in DATASETS:
            for k in sizes[1:]:
                worst["extract_frames", ds, k] = exact_rss[ds, k] / exact_rss[ds, 1]
    for k in sizes[1:]:
        stage_ds = max((key for key in worst if key[2] == k), key=lambda key: worst[key])
        print(f"peak RSS {k}x/1x: max {worst[stage_ds]:.2f} ({stage_ds[0]} {stage_ds[1]}); goal <= 1.25")

    print("\nExtraction at the decode limit: every row of the four splits of the largest size, the same files "
          "decoded bare (OpenCV, one thread per decode like extraction); best of 2 runs, process CPU per frame beside:")
    for ds, d in limits.items():
        res = d["res"]
        for threads in (1, 2):
            (we, ce), n = res["extract", threads], d["rows"]
            line = f"  {ds:<9} {threads} thread(s): extract_frames {n / we:6.1f} frames/s ({1e3 * ce / n:5.1f} ms CPU)"
            for name in ("bare", "bare+remap"):
                if (name, threads) not in res:
                    continue
                wb, cb = res[name, threads]
                what = ("imread + demosaic" + (" + undistort" if name == "bare+remap" else "") if ds == "robotcar"
                        else "imread")
                line += (f" | {what} + resize {n / wb:6.1f} frames/s ({1e3 * cb / n:5.1f} ms CPU): extract = "
                         f"{100 * wb / we:5.1f} % by wall, {100 * cb / ce:5.1f} % by CPU")
            print(line)
        g1, g2 = res["gt_depth", 1][0], res["gt_depth", 2][0]
        print(f"  {ds:<9} gt_depth: {d['gt_targets'] / g1:5.2f} frames/s at 1 thread, "
              f"{d['gt_targets'] / g2:5.2f} at 2 ({g1 / g2:.2f}x)")


def _cyclegan_latency() -> tuple[float, float]:
    """The paper's CycleGAN generator (ngf 64, 9 blocks) at 576x320: thop GMACs, and a latency assumed at the
    student's Table 4 throughput (38.884 GMACs in 2.0 ms: both are plain convolutional networks)."""
    import torch

    from pipeline.model.complexity import count_macs
    from pipeline.synth.cyclegan import ResnetGenerator

    gmacs = count_macs(ResnetGenerator(ngf=64, n_blocks=9), (torch.zeros(1, 3, 320, 576),)) / 1e9
    return gmacs, TABLE4_S["student"] * gmacs / STUDENT_GMACS


def projection(measured: dict, sizes) -> None:
    """Disk, CPU-hours and GPU-hours for the real datasets at paper settings."""
    lo, hi = sizes[0], sizes[-1]
    gan_gmacs, gan_s = _cyclegan_latency()
    print(f"\nProjection to the real datasets at paper settings (frames: targets per split; rows = targets x the "
          f"rows/target of the {hi}x run).")
    print("  Sources: " + "; ".join(f"{ds} {split} {n:,}: {src}" for ds, v in REAL.items()
                                     for split, (n, src) in v.items()))
    print(f"  CPU stages: the CPU seconds per frame of the {hi}x run above the {lo}x run ((cpu_{hi} - cpu_{lo}) / "
          f"(frames_{hi} - frames_{lo}): start-up excluded), on this machine's CPU." if hi > lo else
          "  CPU stages: CPU seconds per frame of the 1x run, start-up included (run 4x for the marginal cost).")
    print(f"  GPU stages at Table 4's RTX 4090 latencies: Mask2Former {TABLE4_S['mask2former'] * 1e3:.1f} ms, "
          f"Monodepth2 {TABLE4_S['monodepth2'] * 1e3:.1f} ms, student {TABLE4_S['student'] * 1e3:.1f} ms per "
          f"576x320 image; CycleGAN (not in Table 4): {gan_gmacs:.0f} GMACs at 576x320, at the student's "
          f"GMACs/s = {gan_s * 1e3:.1f} ms. Training: {PAPER_EPOCHS} epochs x train_day items, each 4 student "
          f"images (real/synthetic day and night) x 3 (forward + backward); pose network and data loading "
          f"left out. Pure inference time: no loading, batching or I/O.")
    totals = {}
    print(f"{'dataset':<9}{'split':<12}{'targets':>8}{'rows':>8} | {'frames':>9}{'gt_depth':>9}{'synth':>9}"
          f"{'seg':>9}{'depth':>9} | {'CPU h: extract':>14}{'gt':>7} | {'GPU h: translate':>16}{'seg':>7}{'depth':>7}")
    for ds in DATASETS:
        m_hi, m_lo = measured[hi], measured[lo]

        def rate(stage):
            a, b = m_hi[stage, ds], m_lo[stage, ds]
            if a["frames"] > b["frames"]:
                return max(0.0, (a["cpu"] - b["cpu"]) / (a["frames"] - b["frames"]))
            return a["cpu"] / max(1, a["frames"])

        def per_frame_bytes(stage):
            a = m_hi[stage, ds]
            return a["bytes"] / max(1, a["frames"])

        counts = m_hi["counts"]
        ratio = {}
        for group, splits in (("train_day", ["train_day"]), ("train_night", ["train_night"]),
                              ("test", ["test_day", "test_night"])):
            rows = sum(counts[ds, s][0] for s in splits)
            targets = sum(counts[ds, s][1] for s in splits)
            ratio[group] = rows / max(1, targets)
        for group, (n, _) in REAL[ds].items():
            rows = n * ratio[group]
            disk = {"frames": rows * per_frame_bytes("extract_frames"),
                    "gt_depth": n * per_frame_bytes("gt_depth") if group == "test" else 0.0,
                    "synth": n * per_frame_bytes("translate") if group.startswith("train") else 0.0,
                    "seg": n * per_frame_bytes("seg_pseudolabels"),
                    "depth": n * per_frame_bytes("depth_pseudolabels") if group == "train_day" else 0.0}
            cpu = {"extract": rows * rate("extract_frames") / 3600,
                   "gt": n * rate("gt_depth") / 3600 if group == "test" else 0.0}
            gpu = {"translate": n * gan_s / 3600 if group.startswith("train") else 0.0,
                   "seg": n * TABLE4_S["mask2former"] / 3600,
                   "depth": n * TABLE4_S["monodepth2"] / 3600 if group == "train_day" else 0.0}
            for key, v in (*disk.items(), *(("cpu " + a, b) for a, b in cpu.items()),
                           *(("gpu " + a, b) for a, b in gpu.items())):
                totals[ds, key] = totals.get((ds, key), 0.0) + v
            print(f"{ds:<9}{group:<12}{n:>8,}{rows:>8,.0f} | " + "".join(f"{_fmt_bytes(v):>9}" for v in disk.values())
                  + f" | {cpu['extract']:>14.2f}{cpu['gt']:>7.2f} | {gpu['translate']:>16.2f}{gpu['seg']:>7.2f}"
                  f"{gpu['depth']:>7.2f}")
        train_items = REAL[ds]["train_day"][0]
        train_h = PAPER_EPOCHS * train_items * 4 * 3 * TABLE4_S["student"] / 3600
        disk_total = sum(totals[ds, key] for key in ("frames", "gt_depth", "synth", "seg", "depth"))
        print(f"{ds:<9}{'total':<12}{'':>8}{'':>8} | disk {_fmt_bytes(disk_total)}; CPU "
              f"{totals[ds, 'cpu extract'] + totals[ds, 'cpu gt']:.1f} h; GPU pseudo-labels + translation "
              f"{totals[ds, 'gpu translate'] + totals[ds, 'gpu seg'] + totals[ds, 'gpu depth']:.1f} h; student "
              f"training {train_h:.1f} h per variant ({PAPER_EPOCHS} epochs x {train_items:,} items)")


if __name__ == "__main__":
    sys.exit(main())
