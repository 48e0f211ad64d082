"""Ground truth aligned with a frames shard: LiDAR depth at the evaluation resolution, and label maps
where the dataset root has them (the demo writes exact ones)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.datasets.images import crop_resize_transform
from pipeline.geometry import scale_intrinsics

log = logging.getLogger(__name__)


def build(dataset: str, root: Path, version: str, frames, *, crop, size: tuple[int, int], lidar_window_us: int = 4_000_000,
          progress: bool = True):
    """-> depth float32 (N, H, W) (0 = none; non-target rows all 0), K float32 (N, 3, 3) at `size`,
    labels uint8 (N, H, W) or None (255 = ignore / not available)."""
    width, height = size
    n = frames["image"].shape[0]
    target = frames["target"][:]
    sources = list(frames["source"][:])
    frame_ids = list(frames["frame_id"][:])
    orig = tuple(frames.attrs.get("image_size_original", (0, 0)))
    if orig == (0, 0):
        raise ValueError("frames shard has no image_size_original attr: re-run extract_frames")
    sx, sy, left, top = crop_resize_transform(crop, orig, size)
    K0 = _original_intrinsics(frames, crop, orig)
    K = np.stack([scale_intrinsics(k, sx, sy, left, top) for k in K0]) if n else np.zeros((0, 3, 3), np.float32)
    depth = np.zeros((n, height, width), np.float32)
    labels = np.full((n, height, width), 255, np.uint8)
    have_labels = []
    if dataset == "nuscenes":
        from pipeline.datasets import nuscenes as ns

        nusc = ns.open_nuscenes(root, version)
        depth_fn = lambda i: ns.lidar_depth(nusc, frame_ids[i], crop, size)  # noqa: E731
        label_fn = lambda i: ns.read_label(root, sources[i], crop, size)  # noqa: E731
    else:
        from pipeline.datasets import robotcar_splits as rs

        depth_fn = lambda i: rs.lidar_depth(root, frame_ids[i], crop, size, lidar_window_us)  # noqa: E731
        label_fn = lambda i: rs.read_label(root, frame_ids[i], crop, size)  # noqa: E731
    for i in tqdm(np.flatnonzero(target), desc="gt depth", unit="frame", disable=not progress):
        depth[i] = depth_fn(i)
        lab = label_fn(i)
        have_labels.append(lab is not None)
        if lab is not None:
            labels[i] = lab
    if any(have_labels) and not all(have_labels):
        missing = sum(1 for h in have_labels if not h)
        raise FileNotFoundError(f"label maps exist for some frames of {root} but {missing} are missing")
    return depth, K.astype(np.float32), (labels if have_labels and all(have_labels) else None)


def _original_intrinsics(frames, crop, orig) -> np.ndarray:
    """Undo the frames' crop+resize on the stored K (exact: scale_intrinsics is affine)."""
    w, h = frames["image"].shape[2], frames["image"].shape[1]
    sx, sy, left, top = crop_resize_transform(crop, orig, (w, h))
    K = frames["K"][:].astype(np.float64)
    K0 = K.copy()
    K0[:, 0, 0] /= sx
    K0[:, 1, 1] /= sy
    K0[:, 0, 2] = (K[:, 0, 2] + 0.5) / sx - 0.5 + left
    K0[:, 1, 2] = (K[:, 1, 2] + 0.5) / sy - 0.5 + top
    return K0
