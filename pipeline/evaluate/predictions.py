"""The predictions file of `evaluate` (PRED.h5): written row by row, atomically; read back whole.

Datasets: `depth` float16 (n, He, We) (depth at the gt size, before median scaling), `seg` uint8
(n, Hs, Ws) (classes at the reference size), `frame_id` str (n,), `row` int64 (n,) (row in the
frames shard). Attrs: what the caller passes (`evaluate` records `dataset`, `split`, `checkpoint_sha256`,
`protocol`; dicts and lists as JSON text).
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from pipeline.atomic import atomic_path

DATASETS = ("depth", "seg", "frame_id", "row")


class PredictionRows:
    """The open file of `prediction_writer`: `add` one prediction after the other."""

    def __init__(self, file, path: Path, n: int):
        self.file, self.path, self.n, self.i = file, path, int(n), 0

    def add(self, row: int, frame_id: str, depth: np.ndarray, seg: np.ndarray) -> None:
        if self.i >= self.n:
            raise ValueError(f"{self.path}: more than the {self.n} announced predictions")
        self.file["depth"][self.i] = depth.astype(np.float16)
        self.file["seg"][self.i] = seg
        self.file["frame_id"][self.i] = frame_id
        self.file["row"][self.i] = row
        self.i += 1


@contextmanager
def prediction_writer(path, n: int, depth_hw, seg_hw, attrs: dict | None = None) -> Iterator[PredictionRows]:
    """Write `n` predictions to `path` (see the module docstring). The file appears only when the block
    ends without an exception and exactly `n` predictions were added."""
    import h5py

    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("depth", (n, *depth_hw), dtype="float16", chunks=(1, *depth_hw), compression="gzip")
            f.create_dataset("seg", (n, *seg_hw), dtype="uint8", chunks=(1, *seg_hw), compression="gzip")
            f.create_dataset("frame_id", (n,), dtype=h5py.string_dtype())
            f.create_dataset("row", (n,), dtype="int64")
            for key, value in (attrs or {}).items():
                f.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value
            rows = PredictionRows(f, path, n)
            yield rows
            if rows.i != rows.n:
                raise ValueError(f"{path}: {rows.i} predictions written, {rows.n} announced")


def read_predictions(path) -> dict:
    """PRED.h5 -> dict of numpy arrays (`depth` float16, `seg`, `frame_id` str, `row`) and `attrs` (a dict)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"predictions file not found: {path}")
    with h5py.File(path, "r") as f:
        missing = [k for k in DATASETS if k not in f]
        if missing:
            raise KeyError(f"{path}: predictions file lacks datasets {missing}")
        return {"depth": f["depth"][:], "seg": f["seg"][:], "row": f["row"][:],
                "frame_id": np.array([s.decode() if isinstance(s, bytes) else str(s) for s in f["frame_id"][:]]),
                "attrs": {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}}
