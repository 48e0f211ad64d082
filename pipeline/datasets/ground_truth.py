"""Ground truth aligned with a frames shard, written shard by shard: LiDAR depth at the evaluation
resolution, its intrinsics, and label maps where the dataset root has them (the demo writes exact ones).

Memory stays flat: one shard of rows (about 64 MB of depth) is filled, written and dropped at a time,
with a few frames computed ahead of it, so a split of thousands of 1600x900 frames never sits in memory.
"""
from __future__ import annotations

import logging
from contextlib import closing
from itertools import chain
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from pipeline import shards
from pipeline.datasets.adapter import Dataset
from pipeline.datasets.images import CropResize
from pipeline.parallel import ordered_map
from pipeline.progress import progress_bar

log = logging.getLogger(__name__)

IGNORE = 255  # label of pixels without a label (and of every non-target row)


def write(dataset: Dataset, frames, out: str | Path, *, crop, size: tuple[int, int], attrs: Mapping[str, Any],
          rows_per_shard: int | None = None, threads: int = 1, progress: bool = True) -> dict:
    """Write `out` (atomically) with rows aligned to `frames`:
    depth float32 (N, H, W) (0 = none; non-target rows all 0), K float32 (N, 3, 3) at size = (W, H), and
    labels uint8 (N, H, W) (255 = ignore; non-target rows all 255) when the root has label maps: for every
    target frame or for none. Returns {targets, depth_pixels, pixels, labels}.

    Frames are computed on `threads` threads (the dataset's tables are loaded by the first frame, before
    the others start), at most 2 x `threads` frames ahead of the one being stored, while the shard being
    filled is written: the bytes do not depend on `threads`, and memory holds one shard and those frames."""
    width, height = size
    n = frames["image"].shape[0]
    target = np.asarray(frames["target"][:], bool)
    frame_ids = [str(f) for f in frames["frame_id"][:]]
    sources = [str(s) for s in frames["source"][:]]
    # the frames' K is at the frames' resolution after the same crop: eval K = a plain resize of it
    frames_size = (frames["image"].shape[2], frames["image"].shape[1])
    K = CropResize.resize(frames_size, size).intrinsics(np.asarray(frames["K"][:]).reshape(n, 3, 3))
    rps = rows_per_shard or shards.default_rows_per_shard(width * height * 4)
    stats = {"targets": int(target.sum()), "depth_pixels": 0, "pixels": int(target.sum()) * width * height,
             "labels": None}

    def one(i: int):
        return dataset.ground_truth(frame_ids[i], sources[i], crop=crop, size=size)

    targets = np.flatnonzero(target).tolist()
    # the first frame loads the dataset's tables, once, before the other threads start
    rest = ordered_map(one, targets[1:], threads=threads)
    results = chain([one(targets[0])] if targets else [], rest)
    with closing(rest), shards.ShardWriter(out, n, attrs) as w:
        w.create("depth", (height, width), np.float32, compress=True, rows_per_shard=rps)
        done = 0  # rows written so far
        with progress_bar(total=stats["targets"], desc="gt depth", unit="frame", disable=not progress) as bar:
            for start in range(0, n, rps):
                stop = min(n, start + rps)
                depth = np.zeros((stop - start, height, width), np.float32)
                labels = np.full((stop - start, height, width), IGNORE, np.uint8)
                for i in np.flatnonzero(target[start:stop]) + start:
                    depth[i - start], lab = next(results)
                    if stats["labels"] is None:  # the first target decides: labels for all targets or for none
                        stats["labels"] = lab is not None
                        if lab is not None:
                            _create_labels(w, height, width, rps, done)
                    elif stats["labels"] != (lab is not None):
                        raise FileNotFoundError(
                            f"label maps exist for some frames of {dataset.root} but not for others (frame "
                            f"{frame_ids[i]} {'has one' if lab is not None else 'has none'}): all or none")
                    if lab is not None:
                        labels[i - start] = lab
                    bar.update(1)
                w.write("depth", start, depth)
                if stats["labels"]:
                    w.write("labels", start, labels)
                stats["depth_pixels"] += int(np.count_nonzero(depth))
                done = stop
            w.write_all("K", K.astype(np.float32))
    stats["labels"] = bool(stats["labels"])
    return stats


def _create_labels(w: shards.ShardWriter, height: int, width: int, rows_per_shard: int, done: int) -> None:
    """Create the labels array once the first label map is seen; rows already written get IGNORE."""
    w.create("labels", (height, width), np.uint8, compress=True, rows_per_shard=rows_per_shard)
    for start in range(0, done, rows_per_shard):
        stop = min(done, start + rows_per_shard)
        w.write("labels", start, np.full((stop - start, height, width), IGNORE, np.uint8))
