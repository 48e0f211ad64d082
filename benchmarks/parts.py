"""Wall time of a split's seg pseudo-labels in 1 job against N jobs (`jobs_per_split`), through Snakemake.

    python -m benchmarks.parts [--workdir .] [--configfile config.yaml] [--dataset robotcar]
                               [--split train_day] [--jobs 1 2] [--reps 3] [--cores 2]
                               [--rows-per-shard R]   (from the repo root)

Needs a finished run in --workdir (the demo's, or a `benchmarks.scale` size folder such as
/tmp/scale/run_4x with its config.yaml): the split's frames store and the segmentation teacher. Those
are copied into a temp folder, so the run's own results are left as they were. There, --reps times
and for each N of --jobs (in turn forward and backward, so that a drift of the host's speed favours
neither), it runs (`benchmarks.scale.snakemake_command`: this checkout's Snakefile)

    snakemake results/<dataset>/seg_teacher/<split>.zarr --cores C
              --configfile <the config with jobs_per_split.seg_pseudolabels: N>
              --rerun-incomplete --allowed-rules seg_pseudolabels assemble_parts --forcerun seg_pseudolabels

and prints two wall times from the command's start: until the split's store is complete (its
zarr.json appears: the N part jobs and, for N > 1, the assembly; what a downstream job waits for) and
until the command exits. Then the jobs' CPU seconds (their logs' closing cost lines), whether the
store's arrays equal N = 1's, and per N the medians and in how many runs N beat 1 (paired by rep).
A part job pays the process start-up (imports, model load) again; N jobs win when the labelling
itself outweighs that: at the paper's frame size and more than a few dozen frames a split.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

from benchmarks.scale import check_snakemake, snakemake_command

COST = re.compile(r"INFO pipeline: [a-z-]+: ([\d.]+) s wall, ([\d.]+) CPU-s")


def copy_inputs(workdir: Path, cfg: dict, dataset: str, split: str, tmp: Path) -> None:
    """The split's frames store and the dataset's segmentation teacher, copied to where the config
    `tmp_config(cfg)` expects them under `tmp` (a teacher given by absolute path is read in place)."""
    results = workdir / cfg.get("results_dir", "results")  # an absolute results_dir stays absolute
    checkpoint = cfg["seg_teacher"]["checkpoint"]
    copies = {results / dataset / "frames" / f"{split}.zarr": tmp / "results" / dataset / "frames" / f"{split}.zarr"}
    if checkpoint == "demo":
        copies[results / dataset / "seg_teacher" / "demo_checkpoint"] = (
            tmp / "results" / dataset / "seg_teacher" / "demo_checkpoint")
    elif not Path(checkpoint).is_absolute():
        copies[workdir / checkpoint] = tmp / checkpoint
    for src, dst in copies.items():
        if not src.exists():
            raise FileNotFoundError(f"{src}: run the pipeline in {workdir} first (this benchmark needs its "
                                    f"frames store and segmentation teacher)")
        shutil.copytree(src, dst)


def tmp_config(cfg: dict, jobs: int) -> dict:
    """The run's config with its results under the temp folder (never the run's own) and `jobs` parts."""
    return {**cfg, "results_dir": "results",
            "jobs_per_split": {**cfg.get("jobs_per_split", {}), "seg_pseudolabels": jobs}}


def run_once(tmp: Path, cfg: dict, jobs: int, cores: int, target: str, log: Path) -> tuple[float, float, float, int]:
    """(s until the store is complete, s until the snakemake command exits, CPU s of its jobs, number of
    jobs) with `jobs` parts."""
    config = tmp / f"config_{jobs}.yaml"
    config.write_text(yaml.safe_dump(tmp_config(cfg, jobs), sort_keys=False))
    logs = tmp / "results" / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    shutil.rmtree(tmp / target, ignore_errors=True)  # so that its zarr.json appears when this run commits it
    cmd, env = snakemake_command(tmp, [target], cores, allowed=["seg_pseudolabels", "assemble_parts"],
                                 configfile=config, forcerun=["seg_pseudolabels"])
    ready: list[float] = []
    with open(log, "a") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT)

        def watch() -> None:  # the store is renamed into place whole (atomic commit): poll for it
            while proc.poll() is None:
                if (tmp / target / "zarr.json").exists():
                    ready.append(time.perf_counter() - t0)
                    return
                time.sleep(0.005)

        watcher = threading.Thread(target=watch)
        watcher.start()
        returncode = proc.wait()
        wall = time.perf_counter() - t0
        watcher.join()
    check_snakemake(returncode, tmp, log)
    costs = [COST.search(p.read_text()) for p in logs.rglob("*.log")]
    return (ready[0] if ready else wall), wall, sum(float(m.group(2)) for m in costs if m), sum(1 for m in costs if m)


def arrays(store: Path) -> dict[str, np.ndarray]:
    from pipeline.shards import open_shard

    group = open_shard(store)
    return {name: np.asarray(group[name][...]) for name in sorted(group.array_keys())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("."), help="folder of a finished run (default: .)")
    ap.add_argument("--configfile", type=Path, help="its config (default: WORKDIR/config.yaml)")
    ap.add_argument("--dataset", default="robotcar")
    ap.add_argument("--split", default="train_day")
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="jobs_per_split values (default 1 2)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--rows-per-shard", type=int,
                    help="extract.rows_per_shard of the run (default: the config's); a part is whole shard files, "
                         "so a split of fewer rows than this is one part however many jobs")
    args = ap.parse_args()
    workdir = args.workdir.resolve()
    cfg = yaml.safe_load((args.configfile or workdir / "config.yaml").read_text())
    if args.rows_per_shard:
        cfg["extract"] = {**cfg["extract"], "rows_per_shard": args.rows_per_shard}
    target = f"results/{args.dataset}/seg_teacher/{args.split}.zarr"
    with tempfile.TemporaryDirectory(prefix="bench_parts_") as tmp_name:
        tmp = Path(tmp_name)
        copy_inputs(workdir, cfg, args.dataset, args.split, tmp)
        from pipeline.shards import open_shard
        frames = open_shard(tmp / "results" / args.dataset / "frames" / f"{args.split}.zarr")
        n, targets = frames["image"].shape, int(np.asarray(frames["target"][...]).sum())
        print(f"seg pseudo-labels of {args.dataset} {args.split}: {targets} target frames of {n[0]} rows at "
              f"{n[2]}x{n[1]}, rows_per_shard {cfg['extract']['rows_per_shard']}, snakemake --cores {args.cores}, "
              f"{args.reps} reps; load average {os.getloadavg()[0]:.1f} at start; from {workdir}")
        print(f"{'rep':>4}{'jobs':>5}{'store complete s':>18}{'command exits s':>17}{'jobs CPU-s':>12}{'jobs':>6}"
              f"   arrays equal to 1 job's")
        reference = None
        times: dict[int, list[tuple[float, float]]] = {n: [] for n in args.jobs}
        for rep in range(args.reps):
            for jobs in (args.jobs if rep % 2 == 0 else args.jobs[::-1]):
                ready, wall, cpu, count = run_once(tmp, cfg, jobs, args.cores, target, tmp / "snakemake.log")
                times[jobs].append((ready, wall))
                got = arrays(tmp / target)
                if reference is None and jobs == 1:
                    reference = got
                same = ("-" if reference is None or jobs == 1 else
                        got.keys() == reference.keys() and all(np.array_equal(reference[k], got[k]) for k in got))
                print(f"{rep:>4}{jobs:>5}{ready:>18.2f}{wall:>17.2f}{cpu:>12.2f}{count:>6}   {same}", flush=True)
        print(f"\n{'jobs':>5}{'store complete: median s':>26}{'command exits: median s':>25}   runs faster than 1 job "
              f"(store / exit)")
        for jobs, runs in times.items():
            ready, wall = (statistics.median(r[i] for r in runs) for i in (0, 1))
            if jobs == 1 or 1 not in times:
                wins = "-"
            else:
                pairs = list(zip(runs, times[1]))
                wins = (f"{sum(a[0] < b[0] for a, b in pairs)} / {sum(a[1] < b[1] for a, b in pairs)} of {len(pairs)}")
            print(f"{jobs:>5}{ready:>26.2f}{wall:>25.2f}   {wins}")


if __name__ == "__main__":
    main()
