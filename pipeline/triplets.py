"""Rows of a frames shard usable for self-supervised training: targets with both temporal neighbours."""
from __future__ import annotations

import numpy as np


def usable_targets(frames) -> np.ndarray:
    """Rows (int64, ascending) that are targets with a previous and a next frame (prev, next >= 0)."""
    target = np.asarray(frames["target"][:], bool)
    prev = np.asarray(frames["prev"][:])
    nxt = np.asarray(frames["next"][:])
    return np.flatnonzero(target & (prev >= 0) & (nxt >= 0))
