"""Projection of camera-frame points into images and the depth rasteriser that every ground-truth
depth map goes through (numpy only: the data stages import it without torch).

The crop + resize pixel mapping of images, points and intrinsics is
`pipeline.datasets.images.CropResize`; the torch geometry of training is `pipeline.geometry`.
"""
from __future__ import annotations

import numpy as np


def project_points(points_cam: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pinhole projection of (3, N) camera-frame points (x right, y down, z forward).

    Returns float64 (u, v, depth) with depth = z (the optical-axis distance)."""
    pts = np.asarray(points_cam, dtype=np.float64)
    z = pts[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uvw = np.asarray(K, dtype=np.float64) @ pts
        u = uvw[0] / uvw[2]
        v = uvw[1] / uvw[2]
    return u, v, z


def rasterize_depth(u: np.ndarray, v: np.ndarray, depth: np.ndarray, height: int, width: int) -> np.ndarray:
    """Rasterise projected points into a (H, W) float32 depth image, 0 = no measurement.

    Convention (DESIGN.md, formats/*.md): col = floor(u + 0.5), row = floor(v + 0.5);
    indices outside [0, W) x [0, H) are dropped; the NEAREST depth wins per pixel."""
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    d = np.asarray(depth, dtype=np.float64)
    ok = np.isfinite(u) & np.isfinite(v) & np.isfinite(d) & (d > 0)
    col = np.floor(u[ok] + 0.5).astype(np.int64)
    row = np.floor(v[ok] + 0.5).astype(np.int64)
    d = d[ok]
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
    col, row, d = col[inside], row[inside], d[inside]
    out = np.full(height * width, np.inf, dtype=np.float64)
    np.minimum.at(out, row * width + col, d)
    out[~np.isfinite(out)] = 0.0
    return out.reshape(height, width).astype(np.float32)
