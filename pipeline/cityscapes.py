"""The 19 Cityscapes train-id classes: names in train-id order, the standard colour palette."""
from __future__ import annotations

import numpy as np

IGNORE = 255

# Train ids 0..18, in order (cityscapesScripts `labels.py`, trainId != 255).
NAMES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)
NUM_CLASSES = len(NAMES)

# RGB colours of cityscapesScripts `labels.py`, one row per train id.
PALETTE = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
    (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
], dtype=np.uint8)


def colorize(labels: np.ndarray, ignore_color: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """(H, W) train ids -> (H, W, 3) uint8 RGB; IGNORE (and any id >= 19) gets `ignore_color`."""
    labels = np.asarray(labels)
    lut = np.tile(np.asarray(ignore_color, dtype=np.uint8), (256, 1))
    lut[:NUM_CLASSES] = PALETTE
    ids = np.where((labels >= 0) & (labels < NUM_CLASSES), labels, IGNORE).astype(np.uint8)
    return lut[ids]


def same_names(names) -> bool:
    """True when `names` are the 19 Cityscapes names in train-id order (case, '_' and '-' ignored)."""
    def norm(s: str) -> str:
        return str(s).lower().replace("_", " ").replace("-", " ").strip()
    names = list(names)
    return len(names) == NUM_CLASSES and all(norm(a) == norm(b) for a, b in zip(names, NAMES))
