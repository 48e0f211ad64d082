"""What every dataset reader produces (a frame table) and the extraction into `frames/{split}.zarr`."""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from pipeline import atomic, shards
from pipeline.allocator import tune_allocator
from pipeline.datasets.images import CropResize
from pipeline.progress import progress_bar

log = logging.getLogger(__name__)

SPLITS = ("train_day", "train_night", "test_day", "test_night")


@dataclass
class FrameTable:
    """Rows of a frames shard before decoding: targets plus the neighbours they need.

    `prev`/`next` index rows of this table (-1 = none); `K` is at the ORIGINAL image size."""
    frame_id: list[str]
    source: list[str]
    timestamp: np.ndarray
    sequence: np.ndarray
    prev: np.ndarray
    next: np.ndarray
    target: np.ndarray
    K: np.ndarray
    image_size: tuple[int, int]          # original (width, height)
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame_id)


def build_table(records: list[dict], targets: set[str], image_size: tuple[int, int]) -> FrameTable:
    """Rows from records {frame_id, source, timestamp, sequence, K, prev_id, next_id}, sorted by
    (sequence, timestamp); prev/next ids become row indices (-1 when the neighbour is not a row)."""
    records = sorted(records, key=lambda r: (r["sequence"], r["timestamp"], r["frame_id"]))
    index = {r["frame_id"]: i for i, r in enumerate(records)}
    if len(index) != len(records):
        raise ValueError("duplicate frame ids in the frame table")
    return FrameTable(
        frame_id=[r["frame_id"] for r in records],
        source=[r["source"] for r in records],
        timestamp=np.array([r["timestamp"] for r in records], dtype=np.int64),
        sequence=np.array([r["sequence"] for r in records], dtype=np.int32),
        prev=np.array([index.get(r.get("prev_id") or "", -1) for r in records], dtype=np.int32),
        next=np.array([index.get(r.get("next_id") or "", -1) for r in records], dtype=np.int32),
        target=np.array([r["frame_id"] in targets for r in records], dtype=bool),
        K=np.stack([np.asarray(r["K"], dtype=np.float64) for r in records]) if records else np.zeros((0, 3, 3)),
        image_size=image_size,
    )


def extract_frames(table: FrameTable, load_frame: Callable[[str, CropResize], np.ndarray], out: Path, *, crop,
                   size: tuple[int, int], attrs: Mapping, threads: int = 2, rows_per_shard: int = 64,
                   progress: bool = True, part: shards.Part | None = None) -> Path:
    """Decode, crop and resize every row with `load_frame(source, mapping)` (`Dataset.load_frame`: the
    frame cut and resized by the `CropResize` mapping) and write the frames group atomically.

    Rows are decoded on `threads` threads (OpenCV releases the GIL; one OpenCV thread per decode, see
    images.py) one shard of `rows_per_shard` rows ahead of the shard being written, and written in
    order one whole shard at a time (zarr shards written at once are ~8x faster than chunk by chunk):
    memory holds two shards of frames, and the bytes do not depend on `threads`. The process keeps freed
    memory for reuse (`tune_allocator`): each shard's buffers would otherwise be mapped afresh and their
    pages zeroed by the kernel (the demo's nuScenes rows at 576x320, 2 threads: 82 -> 89-93 frames/s)."""
    tune_allocator()
    width, height = size
    n = len(table)
    mapping = CropResize(crop, table.image_size, size)
    K = mapping.intrinsics(table.K.reshape(n, 3, 3)).astype(np.float32)

    def decode(source: str) -> np.ndarray:
        try:
            return load_frame(source, mapping)
        except ValueError as exc:
            if Path(source).name in str(exc):
                raise
            raise ValueError(f"{source}: {exc}") from exc

    with shards.ShardWriter(out, n, attrs, part=part) as w:  # part: only its rows (jobs_per_split)
        w.create("image", (height, width, 3), "uint8", rows_per_shard=rows_per_shard, dense=True)
        starts = range(*w.row_range, rows_per_shard)
        with ThreadPoolExecutor(max(1, threads)) as pool, \
                progress_bar(total=n, desc=f"extract {Path(out).name}", unit="frame", disable=not progress) as bar:
            def submit(start: int) -> list:
                return [pool.submit(decode, s) for s in table.source[start:min(start + rows_per_shard, w.row_range[1])]]

            ahead = submit(starts[0]) if len(starts) else []
            for k, start in enumerate(starts):
                current, ahead = ahead, (submit(starts[k + 1]) if k + 1 < len(starts) else [])
                w.write("image", start, np.stack([f.result() for f in current]))
                bar.update(len(current))
        w.write_all("prev", table.prev)
        w.write_all("next", table.next)
        w.write_all("target", table.target)
        w.write_all("K", K)
        w.write_all("timestamp", table.timestamp)
        w.write_all("sequence", table.sequence)
        w.write_all("frame_id", np.array(table.frame_id, dtype=str))
        w.write_all("source", np.array(table.source, dtype=str))
    return Path(out)


def read_split_file(path: str | Path) -> list[str]:
    """One frame id a line; blank lines and `#` comments are ignored."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}")
    ids = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    ids = [i for i in ids if i]
    if not ids:
        raise ValueError(f"split file lists no frame ids: {path}")
    return ids


def write_split_file(path: str | Path, ids: list[str], header: str = "") -> None:
    lines = [f"# {h}" for h in header.splitlines()] + list(ids)
    atomic.write_text(path, "\n".join(lines) + "\n")
