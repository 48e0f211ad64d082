"""Image decoding with validation (OpenCV), and the crop + resize every frame goes through."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

cv2.setNumThreads(1)  # extraction parallelises over frames; one OpenCV thread per decode

_JPEG_EOI = b"\xff\xd9"
_PNG_IEND = b"IEND\xaeB`\x82"


class CorruptImageError(ValueError):
    """An image file is missing, truncated or does not decode."""


def check_complete(path: Path) -> None:
    """Raise CorruptImageError naming `path` when a JPEG/PNG file is empty or truncated.

    OpenCV decodes a truncated JPEG into a partly grey image with only a warning, so the end
    markers are checked explicitly (JPEG EOI, PNG IEND)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    size = path.stat().st_size
    if size == 0:
        raise CorruptImageError(f"image file is empty: {path}")
    suffix = path.suffix.lower()
    with open(path, "rb") as f:
        f.seek(max(0, size - 64))
        tail = f.read()
    if suffix in (".jpg", ".jpeg") and _JPEG_EOI not in tail[-16:]:
        raise CorruptImageError(f"truncated JPEG (no end-of-image marker): {path}")
    if suffix == ".png" and _PNG_IEND not in tail:
        raise CorruptImageError(f"truncated PNG (no IEND chunk): {path}")


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode a colour image file to RGB uint8 (H, W, 3), validating it first."""
    path = Path(path)
    check_complete(path)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise CorruptImageError(f"image does not decode: {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_gray(path: str | Path) -> np.ndarray:
    """Decode a single-channel 8-bit image (label maps, Bayer mosaics), validating it first."""
    path = Path(path)
    check_complete(path)
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.ndim != 2:
        raise CorruptImageError(f"not a single-channel image: {path}")
    return img


def crop_box(crop: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
    """[left, top, right, bottom] margins -> (x0, y0, x1, y1), validated against the image size."""
    left, top, right, bottom = (int(c) for c in crop)
    x0, y0, x1, y1 = left, top, width - right, height - bottom
    if min(left, top, right, bottom) < 0 or x1 <= x0 or y1 <= y0:
        raise ValueError(f"crop {list(crop)} (left, top, right, bottom) leaves nothing of a {width}x{height} image")
    return x0, y0, x1, y1


def crop_resize(img: np.ndarray, crop, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """Cut the crop margins, then resize to size = (width, height): INTER_AREA for photos, NEAREST for labels."""
    h, w = img.shape[:2]
    x0, y0, x1, y1 = crop_box(crop, w, h)
    img = img[y0:y1, x0:x1]
    if (img.shape[1], img.shape[0]) == tuple(size):
        return np.ascontiguousarray(img)
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
    return cv2.resize(img, tuple(int(s) for s in size), interpolation=interp)


def crop_resize_transform(crop, src_size: tuple[int, int], dst_size: tuple[int, int]):
    """(sx, sy, left, top) mapping original pixel coordinates into the cropped + resized image."""
    w, h = src_size
    x0, y0, x1, y1 = crop_box(crop, w, h)
    return dst_size[0] / (x1 - x0), dst_size[1] / (y1 - y0), x0, y0
