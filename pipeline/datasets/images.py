"""Image decoding with validation (OpenCV), and the crop + resize mapping (`CropResize`) every frame,
ground-truth map and intrinsics matrix goes through."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipeline.projection import rasterize_depth

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


def read_rgb_frame(path: str | Path, mapping: "CropResize") -> np.ndarray:
    """`mapping.image(read_rgb(path))` with the colour conversion done on the small image (resizing acts
    on each channel alone, so the bytes are the same; BGR -> RGB of the full image is ~15 % of a decode)."""
    path = Path(path)
    check_complete(path)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise CorruptImageError(f"image does not decode: {path}")
    return cv2.cvtColor(mapping.image(bgr), cv2.COLOR_BGR2RGB)


def read_gray(path: str | Path) -> np.ndarray:
    """Decode a single-channel 8-bit image (label maps, Bayer mosaics), validating it first."""
    path = Path(path)
    check_complete(path)
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.ndim != 2:
        raise CorruptImageError(f"not a single-channel image: {path}")
    return img


class CropResize:
    """The one crop + resize pixel mapping of the pipeline: cut `crop` = (left, top, right, bottom)
    margins off an image of `src_size` = (width, height), then resize to `size` = (width, height).

    Pixel-centre convention (a pixel centre maps to a pixel centre):
        u' = (u - left + 0.5) * sx - 0.5,   v' = (v - top + 0.5) * sy - 0.5
    with sx = width / (src_width - left - right), sy = height / (src_height - top - bottom).
    Used for images (`image`), projected points (`points`, `rasterize`), intrinsics (`intrinsics`)
    and their inverses (`points_inverse`, `intrinsics_inverse`). Intrinsics may be numpy arrays or
    torch tensors of shape (..., 3, 3)."""

    __slots__ = ("crop", "src_size", "size", "left", "top", "sx", "sy")

    def __init__(self, crop, src_size: tuple[int, int], size: tuple[int, int]):
        self.crop = tuple(int(c) for c in crop)
        self.src_size = (int(src_size[0]), int(src_size[1]))
        self.size = (int(size[0]), int(size[1]))
        if len(self.crop) != 4:
            raise ValueError(f"crop must be 4 margins (left, top, right, bottom), got {list(crop)}")
        if min(self.size) < 1:
            raise ValueError(f"target size must be positive, got {self.size[0]}x{self.size[1]}")
        x0, y0, x1, y1 = self.box
        self.left, self.top = x0, y0
        self.sx, self.sy = self.size[0] / (x1 - x0), self.size[1] / (y1 - y0)

    @classmethod
    def resize(cls, src_size: tuple[int, int], size: tuple[int, int]) -> "CropResize":
        """A plain resize (no crop) from `src_size` to `size`."""
        return cls((0, 0, 0, 0), src_size, size)

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the kept region in the original image, validated against its size."""
        left, top, right, bottom = self.crop
        width, height = self.src_size
        x0, y0, x1, y1 = left, top, width - right, height - bottom
        if min(left, top, right, bottom) < 0 or x1 <= x0 or y1 <= y0:
            raise ValueError(f"crop {list(self.crop)} (left, top, right, bottom) leaves nothing of a "
                             f"{width}x{height} image")
        return x0, y0, x1, y1

    def __repr__(self) -> str:
        return f"CropResize(crop={list(self.crop)}, src_size={self.src_size}, size={self.size})"

    def image(self, img: np.ndarray, *, nearest: bool = False) -> np.ndarray:
        """Crop then resize an (H, W[, C]) image of `src_size`: INTER_AREA for photos, NEAREST for labels."""
        h, w = img.shape[:2]
        if (w, h) != self.src_size:
            raise ValueError(f"image is {w}x{h}, expected {self.src_size[0]}x{self.src_size[1]}")
        x0, y0, x1, y1 = self.box
        return self.cropped(img[y0:y1, x0:x1], nearest=nearest)

    def cropped(self, img: np.ndarray, *, nearest: bool = False) -> np.ndarray:
        """`image` of an image already cut to `box` (its size is checked against the box)."""
        x0, y0, x1, y1 = self.box
        if img.shape[:2] != (y1 - y0, x1 - x0):
            raise ValueError(f"cropped image is {img.shape[1]}x{img.shape[0]}, expected the crop box's "
                             f"{x1 - x0}x{y1 - y0}")
        if (img.shape[1], img.shape[0]) == self.size:
            return np.ascontiguousarray(img)
        return cv2.resize(img, self.size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)

    def points(self, u, v):
        """Original pixel coordinates (u, v) -> coordinates in the cropped + resized image."""
        return (u - self.left + 0.5) * self.sx - 0.5, (v - self.top + 0.5) * self.sy - 0.5

    def points_inverse(self, u, v):
        """Coordinates in the cropped + resized image -> original pixel coordinates."""
        return (u + 0.5) / self.sx - 0.5 + self.left, (v + 0.5) / self.sy - 0.5 + self.top

    def intrinsics(self, K):
        """(..., 3, 3) intrinsics of the original image -> of the cropped + resized one (float64 for numpy)."""
        K2 = _copy_matrix(K)
        cx, cy = self.points(K2[..., 0, 2], K2[..., 1, 2])
        K2[..., 0, :2] *= self.sx
        K2[..., 1, :2] *= self.sy
        K2[..., 0, 2], K2[..., 1, 2] = cx, cy
        return K2

    def intrinsics_inverse(self, K):
        """Inverse of `intrinsics`: (..., 3, 3) intrinsics of the cropped + resized image -> of the original."""
        K2 = _copy_matrix(K)
        cx, cy = self.points_inverse(K2[..., 0, 2], K2[..., 1, 2])
        K2[..., 0, :2] /= self.sx
        K2[..., 1, :2] /= self.sy
        K2[..., 0, 2], K2[..., 1, 2] = cx, cy
        return K2

    def rasterize(self, u, v, depth) -> np.ndarray:
        """Points projected into the ORIGINAL image (u, v, depth) -> float32 (H, W) depth image at `size`
        (projection.rasterize_depth: col = floor(u' + 0.5), nearest depth, 0 = none)."""
        u2, v2 = self.points(np.asarray(u, np.float64), np.asarray(v, np.float64))
        return rasterize_depth(u2, v2, depth, self.size[1], self.size[0])


def _copy_matrix(K):
    """A float copy of a numpy array (float64) or torch tensor (same dtype)."""
    if hasattr(K, "clone"):
        return K.clone()
    return np.array(K, dtype=np.float64)


def write_png(path: str | Path, img: np.ndarray) -> None:
    """Write a PNG (grey, or BGR channel order as OpenCV takes it), raising OSError naming the path."""
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write {path}")


def write_jpeg(path: str | Path, rgb: np.ndarray, quality: int) -> None:
    """Write an RGB uint8 image as a JPEG of the given quality, raising OSError naming the path."""
    # cvtColor, not np.ascontiguousarray(rgb[..., ::-1]): same bytes, 15 -> 1.6 ms for a 1600x900 frame
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]):
        raise OSError(f"could not write {path}")
