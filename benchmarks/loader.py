"""Loader and extraction throughput, measured in one run (issue: foundation + RobotCar).

    python -m benchmarks.loader [--root data/demo/nuscenes] [--width 576 --height 320] [--samples 300]

Prints samples/s of reading random training samples (image, prev, next, K):
  1. from the frames shard (uncompressed chunks, and each candidate image codec),
  2. the Monodepth2 way: decode the original 1600x900 camera JPEGs and resize,
  3. from JPEGs already at the stored resolution,
with the ratios of (1) to (2) and (3); then extraction frames/s and bytes per frame on disk, for
nuScenes and (when its root exists) RobotCar (demosaic + undistort + resize + write).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle

from pipeline import shards
from pipeline.datasets import frames as fr
from pipeline.datasets.adapter import open_dataset

CODECS = {
    "none": None,
    "blosc-lz4": BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.noshuffle),
    "blosc-zstd": BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.noshuffle),
}


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _samples(table, n: int, rng) -> np.ndarray:
    ok = np.flatnonzero((table["prev"] >= 0) & (table["next"] >= 0))
    return rng.choice(ok, size=n, replace=True)


def bench_shard(group, rows, prev, nxt, K) -> float:
    img = group["image"]
    t = time.perf_counter()
    for i in rows:
        _ = img[i], img[prev[i]], img[nxt[i]], K[i]
    return len(rows) / (time.perf_counter() - t)


def bench_files(paths, rows, prev, nxt, size=None) -> float:
    t = time.perf_counter()
    for i in rows:
        for j in (i, prev[i], nxt[i]):
            im = cv2.imread(paths[j], cv2.IMREAD_COLOR)
            if size is not None:
                im = cv2.resize(im, size, interpolation=cv2.INTER_AREA)
    return len(rows) / (time.perf_counter() - t)


def recode(src_group, dst: Path, codec) -> Path:
    imgs = src_group["image"][:]
    g = zarr.open_group(store=str(dst), mode="w", zarr_format=3)
    a = g.create_array("image", shape=imgs.shape, chunks=(1, *imgs.shape[1:]), shards=(64, *imgs.shape[1:]),
                       dtype="uint8", compressors=[codec] if codec else None)
    a[:] = imgs
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("data/demo/nuscenes"), help="nuScenes dataroot")
    ap.add_argument("--version", default="v1.0-mini")
    ap.add_argument("--robotcar-root", type=Path, default=Path("data/demo/robotcar"))
    ap.add_argument("--width", type=int, default=576)
    ap.add_argument("--height", type=int, default=320)
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    size = (args.width, args.height)
    work = Path(tempfile.mkdtemp(prefix="bench-loader-"))
    try:
        if not args.root.exists():
            from pipeline.datasets.nuscenes_demo import write_nuscenes_demo

            print(f"{args.root} not found: rendering a demo nuScenes dataroot into {work / 'nuscenes'}")
            args.root = work / "nuscenes"
            write_nuscenes_demo(args.root, seed=0, keyframes_per_scene=4, sweeps_between=2)
        dataset = open_dataset("nuscenes", args.root,
                               {"version": args.version, "day_clear_only": True, "neighbours": "sweeps"})
        ids = [t for split in dataset.derive_splits()[0].values() for t in split]
        table = dataset.frame_table(ids)
        out = work / "frames.zarr"
        t = time.perf_counter()
        fr.extract_frames(table, dataset.load_frame, out, crop=(0, 0, 0, 0), size=size,
                          attrs={}, threads=args.threads, progress=False)
        ext_fps = len(table) / (time.perf_counter() - t)
        group = shards.open_shard(out)
        prev, nxt, K = group["prev"][:], group["next"][:], group["K"][:]
        rows = _samples({"prev": prev, "next": nxt}, args.samples, rng)
        print(f"nuScenes: {len(table)} frames at {args.width}x{args.height}, {args.samples} random samples "
              f"(3 images + K each)\n")
        results = {}
        for name, codec in CODECS.items():
            g = group if codec is None else zarr.open_group(store=str(recode(group, work / f"{name}.zarr", codec)),
                                                           mode="r")
            bench_shard(g, rows[:20], prev, nxt, K)  # warm the page cache
            results[name] = bench_shard(g, rows, prev, nxt, K)
            nbytes = _du(out / "image" if codec is None else work / f"{name}.zarr" / "image")
            print(f"  shard, image codec {name:<11} {results[name]:8.1f} samples/s   "
                  f"{nbytes / len(table) / 1024:7.1f} KiB/frame")
        reader = shards.RowReader(group["image"], out / "image")
        bench_shard({"image": reader}, rows[:20], prev, nxt, K)
        results["none+RowReader"] = bench_shard({"image": reader}, rows, prev, nxt, K)
        print(f"  shard, uncompressed, RowReader {results['none+RowReader']:8.1f} samples/s   (one pread per frame, "
              f"what the training loader uses)")
        # the cost of the crc32c check: a fresh reader checks each row's crc on its first read; one whose rows
        # are all marked checked reads exactly as the reader did before chunks carried a crc (same page cache)
        checked = shards.RowReader(group["image"], out / "image")
        unchecked = shards.RowReader(group["image"], out / "image")
        unchecked._verified = set(range(len(unchecked)))
        every = np.flatnonzero((prev >= 0) & (nxt >= 0))
        first = bench_shard({"image": checked}, every, prev, nxt, K)
        plain = bench_shard({"image": unchecked}, every, prev, nxt, K)
        again = bench_shard({"image": checked}, every, prev, nxt, K)
        print(f"  crc32c check: first pass over all rows {first:8.1f} samples/s (every row checked), "
              f"unchecked {plain:8.1f}, later passes {again:8.1f}: first pass at {first / plain:.0%}, "
              f"later passes at {again / plain:.0%} of the unchecked read")
        originals = [str(args.root / s) for s in table.source]
        bench_files(originals, rows[:5], prev, nxt, size)
        orig = bench_files(originals, rows, prev, nxt, size)
        small_dir = work / "small"
        small_dir.mkdir()
        small = []
        for i in range(len(table)):
            p = small_dir / f"{i}.jpg"
            cv2.imwrite(str(p), cv2.cvtColor(group["image"][i], cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
            small.append(str(p))
        bench_files(small, rows[:20], prev, nxt)
        jpg = bench_files(small, rows, prev, nxt)
        best = max(CODECS, key=results.get)
        print(f"  original 1600x900 JPEG + resize {orig:8.1f} samples/s   (Monodepth2-style loader)")
        print(f"  JPEG at {args.width}x{args.height}           {jpg:8.1f} samples/s   "
              f"{_du(small_dir) / len(table) / 1024:7.1f} KiB/frame")
        fastest = results["none+RowReader"]
        print(f"\n  shard (RowReader) vs original JPEGs: {fastest / orig:7.1f}x   (goal >= 5x)")
        print(f"  shard (RowReader) vs small JPEGs:    {fastest / jpg:7.1f}x   (goal >= 1.5x)")
        print(f"  shard (zarr API)  vs original JPEGs: {results['none'] / orig:7.1f}x;  vs small JPEGs "
              f"{results['none'] / jpg:5.1f}x")
        print(f"  fastest image codec through zarr: {best} (so image chunks stay uncompressed)")
        print(f"\n  extraction (decode + resize + write, {args.threads} threads): {ext_fps:6.1f} frames/s, "
              f"{_du(out) / len(table) / 1024:7.1f} KiB/frame on disk (all arrays)")
        if args.robotcar_root.exists():
            bench_robotcar(args.robotcar_root, work, args.threads)
        else:
            print(f"\n  RobotCar: {args.robotcar_root} not found (run `snakemake -c2 data/demo/robotcar`), skipped")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench_robotcar(root: Path, work: Path, threads: int) -> None:
    dataset = open_dataset("robotcar", root, {})
    runs = sorted(p.name for p in root.iterdir() if (p / "stereo").is_dir())
    ids = [f"{run}/{t}" for run in runs for t in dataset.run_frames(run)[1:-1]]
    table = dataset.frame_table(ids)
    out = work / "robotcar.zarr"
    t = time.perf_counter()
    fr.extract_frames(table, dataset.load_frame, out, crop=(0, 0, 0, 160), size=(512, 256), attrs={}, threads=threads,
                      progress=False)
    fps = len(table) / (time.perf_counter() - t)
    print(f"\n  RobotCar extraction (Bayer PNG demosaic + LUT undistort + crop + resize 512x256 + write, "
          f"{threads} threads): {fps:6.1f} frames/s over {len(table)} frames, "
          f"{_du(out) / len(table) / 1024:7.1f} KiB/frame")


if __name__ == "__main__":
    main()
