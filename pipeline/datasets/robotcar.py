"""Oxford RobotCar reader, written from /work/shared/formats/robotcar.md (the SDK is not vendored).

Images: ``load_image`` gives the Python SDK's output for the same file. The exact path demosaics
the 8-bit Bayer PNG with the SDK's bilinear algorithm (two ``scipy.ndimage.convolve`` calls in
float64, mode reflect), undistorts with ``map_coordinates(order=1)`` and casts to uint8. The SDK
casts without clipping, so border values above 255 wrap modulo 256; we clip to [0, 255] before
the (truncating) cast, so we match the SDK everywhere except on those wrapped border pixels.
The fast path (``exact=False``) uses OpenCV: ``demosaic_fast`` is within 1 DN of the SDK in the
interior (OpenCV rounds, the SDK truncates; the one-pixel border differs), and ``undistort_fast``
(``cv2.remap``, fixed-point weights, uint8) is within a few DN (mean well below 1 DN), except
next to output pixels that sample the raw image's one-pixel border, which inherit its difference.
The camera (and so the Bayer pattern and model) is the SDK's regex on the path; where several
path components match, the last one (the sensor folder) wins.

Poses and lidar: the SDK's ``interpolate_poses`` has two bugs (issue #33): integer division
(no interpolation) and mutation of the caller's timestamp list (each scan paired with its
successor's pose). This module implements the FIXED semantics: true division, no mutation,
each scan with its own pose.
"""
from __future__ import annotations

import csv
import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from pipeline.datasets.images import check_complete
from pipeline.projection import project_points, rasterize_depth

CAMERA_RE = re.compile(r"(stereo|mono_(left|right|rear))")
STEREO_SENSOR_RE = re.compile(r"(left|centre|right)")
LIDAR_RE = re.compile(r"(lms_front|lms_rear|ldmrs|velodyne_left|velodyne_right)")
STEREO_MODELS = {"centre": "stereo_narrow_left", "left": "stereo_wide_left", "right": "stereo_wide_right"}
DEFAULT_IMAGE_SIZE = {"stereo": (960, 1280), "mono": (1024, 1024)}  # (height, width)
VO_HEADER = "source_timestamp,destination_timestamp,x,y,z,roll,pitch,yaw"
OPENCV_BAYER = {"gbrg": cv2.COLOR_BayerGR2RGB, "rggb": cv2.COLOR_BayerBG2RGB}
SUPPORTED_LASERS = ("lms_front", "lms_rear", "ldmrs")
K_G = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], dtype=np.float64) / 4
K_RB = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float64) / 4


# --------------------------------------------------------------------------- paths and sensors

def _last_match(regex: re.Pattern, path: str | os.PathLike) -> re.Match | None:
    matches = list(regex.finditer(str(path)))
    return matches[-1] if matches else None


def camera_for(path: str | os.PathLike) -> str:
    """Camera name (``stereo``, ``mono_left``, ``mono_right``, ``mono_rear``) from a path.

    Uses the SDK's regex; where several path components match, the last one (the camera
    folder nearest the file) wins."""
    m = _last_match(CAMERA_RE, path)
    if m is None:
        raise ValueError(f"{path}: cannot tell the camera; expected 'stereo' or 'mono_left|right|rear' in the path")
    return m.group(0)


def bayer_pattern_for(path: str | os.PathLike) -> str:
    """Bayer pattern of an image path as the SDK chooses it: ``gbrg`` for stereo, else ``rggb``."""
    return "gbrg" if camera_for(path) == "stereo" else "rggb"


def model_name_for(image_path: str | os.PathLike) -> str:
    """Camera model name for an image path: stereo/centre -> stereo_narrow_left,
    stereo/left -> stereo_wide_left, stereo/right -> stereo_wide_right, mono_X -> mono_X."""
    m = _last_match(CAMERA_RE, image_path)
    if m is None:
        raise ValueError(f"{image_path}: cannot tell the camera; expected 'stereo' or 'mono_*' in the path")
    if m.group(0) != "stereo":
        return m.group(0)
    sensor = STEREO_SENSOR_RE.search(str(image_path), m.end())
    if sensor is None:
        raise ValueError(f"{image_path}: stereo path without a sensor folder (left|centre|right)")
    return STEREO_MODELS[sensor.group(0)]


# --------------------------------------------------------------------------- timestamps

def read_timestamps(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a ``<sensor>.timestamps`` file of ``<unix_us> <chunk>`` lines.

    Returns (timestamps int64, chunks int64), in file order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: timestamps file not found")
    stamps, chunks = [], []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            tokens = line.split()
            if not tokens:
                continue
            if len(tokens) != 2:
                raise ValueError(f"{path}:{lineno}: expected '<timestamp_us> <chunk>', got {line.rstrip()!r}")
            try:
                stamps.append(int(tokens[0]))
                chunks.append(int(tokens[1]))
            except ValueError:
                raise ValueError(f"{path}:{lineno}: expected two integers, got {line.rstrip()!r}") from None
    return np.array(stamps, dtype=np.int64), np.array(chunks, dtype=np.int64)


def find_timestamps_file(images_dir: str | os.PathLike) -> Path:
    """The SDK's lookup: ``<dir>/../<sensor>.timestamps``, then ``<dir>/../../<sensor>.timestamps``."""
    m = _last_match(CAMERA_RE, images_dir) or _last_match(LIDAR_RE, images_dir)
    if m is None:
        raise ValueError(f"{images_dir}: cannot tell the sensor (camera or lidar) from the path")
    name = m.group(0) + ".timestamps"
    candidates = [Path(images_dir) / os.pardir / name, Path(images_dir) / os.pardir / os.pardir / name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{name} not found; looked for {candidates[0]} and {candidates[1]}")


def existing_frames(images_dir: str | os.PathLike, timestamps: np.ndarray, ext: str = ".png") -> np.ndarray:
    """The listed timestamps whose ``<images_dir>/<ts><ext>`` exists (a chunk may be missing), in order."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"{images_dir}: sensor folder not found")
    names = set(os.listdir(images_dir))
    ts = np.asarray(timestamps, dtype=np.int64)
    keep = np.array([f"{t}{ext}" in names for t in ts.tolist()], dtype=bool)
    return ts[keep]


def read_run_frames(run_dir: str | os.PathLike) -> list[int]:
    """Timestamps of the stereo/centre frames of a run that are listed and exist on disk."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: RobotCar run folder not found")
    images_dir = run_dir / "stereo" / "centre"
    stamps, _ = read_timestamps(find_timestamps_file(images_dir))
    return existing_frames(images_dir, stamps).tolist()


# --------------------------------------------------------------------------- images

def read_raw(path: str | os.PathLike) -> np.ndarray:
    """Read an 8-bit single-channel (PIL mode L) Bayer PNG as a uint8 (H, W) array.

    OpenCV decodes it (``imread`` releases the GIL, so decoding threads run in parallel; the values are
    PIL's, a PNG being lossless); a truncated file (no IEND chunk) or one that does not decode raises
    ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image not found")
    check_complete(path)
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f"{path}: unreadable image (OpenCV cannot decode it)")
    if raw.ndim != 2 or raw.dtype != np.uint8:
        raise ValueError(f"{path}: expected an 8-bit single-channel Bayer PNG (mode L), got "
                         f"{raw.dtype} with shape {raw.shape}")
    return raw


def bayer_masks(shape: tuple[int, int], pattern: str) -> dict[str, np.ndarray]:
    """Boolean masks {'r','g','b'} of a Bayer pattern string (2x2 block in reading order, e.g. 'gbrg')."""
    pattern = pattern.lower()
    if sorted(pattern) != ["b", "g", "g", "r"]:
        raise ValueError(f"bad Bayer pattern {pattern!r}; expected e.g. 'gbrg' or 'rggb'")
    masks = {c: np.zeros(shape, dtype=bool) for c in "rgb"}
    for (dy, dx), channel in zip([(0, 0), (0, 1), (1, 0), (1, 1)], pattern):
        masks[channel][dy::2, dx::2] = True
    return masks


def demosaic_exact(raw: np.ndarray, pattern: str) -> np.ndarray:
    """The SDK's bilinear demosaicing: float64 (H, W, 3) RGB, not clipped.

    Each channel's samples (0 elsewhere) convolved with K_rb or K_g, ``scipy.ndimage.convolve``
    mode reflect. Interior pixels are convex combinations; border gains range 0.25..2.25."""
    raw = np.asarray(raw)
    if raw.ndim != 2:
        raise ValueError(f"expected a 2-D Bayer mosaic, got shape {raw.shape}")
    cfa = raw.astype(np.float64)
    masks = bayer_masks(cfa.shape, pattern)
    channels = [ndimage.convolve(cfa * masks[c], K_G if c == "g" else K_RB, mode="reflect") for c in "rgb"]
    return np.stack(channels, axis=-1)


def demosaic_fast(raw: np.ndarray, pattern: str) -> np.ndarray:
    """OpenCV bilinear demosaicing to uint8 (H, W, 3) RGB; within 1 DN of ``demosaic_exact``
    in the interior (OpenCV rounds, the SDK truncates); the one-pixel border differs."""
    key = pattern.lower()
    if key not in OPENCV_BAYER:
        raise ValueError(f"bad Bayer pattern {pattern!r}; expected one of {sorted(OPENCV_BAYER)}")
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    if raw.ndim != 2:
        raise ValueError(f"expected a 2-D Bayer mosaic, got shape {raw.shape}")
    return cv2.cvtColor(raw, OPENCV_BAYER[key])


def _check_lut(img: np.ndarray, lut: np.ndarray) -> None:
    if lut.ndim != 3 or lut.shape[0] != 2 or lut.shape[1:] != img.shape[:2]:
        raise ValueError(f"LUT shape {lut.shape} does not match image shape {img.shape}; expected (2, H, W)")


def undistort_exact(img: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Undistort (H, W, C) with a (2, H, W) LUT (x = column, y = row to sample in ``img``) as the SDK:
    ``map_coordinates(order=1)`` per channel, float64, samples outside the image -> 0."""
    img = np.asarray(img, dtype=np.float64)
    lut = np.asarray(lut, dtype=np.float64)
    _check_lut(img, lut)
    coords = np.stack([lut[1], lut[0]])
    channels = [ndimage.map_coordinates(img[..., c], coords, order=1, mode="constant", cval=0.0)
                for c in range(img.shape[2])]
    return np.stack(channels, axis=-1)


def undistort_fast(img: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """``cv2.remap`` version of ``undistort_exact`` (bilinear, same dtype as ``img``).

    Samples outside [0, W-1] x [0, H-1] are set to 0 as in the SDK; inside, OpenCV's fixed-point
    weights differ from ``map_coordinates`` by a few DN at most (on the same input image)."""
    img = np.asarray(img)
    lut = np.asarray(lut)
    _check_lut(img, lut)
    return remap_fast(img, *remap_maps(lut, img.shape[0], img.shape[1]))


def remap_maps(lut: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fixed-point maps of a (2, H, W) LUT (``cv2.convertMaps``: what ``cv2.remap`` computes from float
    maps anyway, so the result is the same) and the mask of samples outside an image of height x width."""
    map_x, map_y = lut[0].astype(np.float32), lut[1].astype(np.float32)
    xy, frac = cv2.convertMaps(map_x, map_y, cv2.CV_16SC2)
    outside = (lut[0] < 0) | (lut[0] > width - 1) | (lut[1] < 0) | (lut[1] > height - 1)
    return xy, frac, outside


def remap_fast(img: np.ndarray, xy: np.ndarray, frac: np.ndarray, outside: np.ndarray) -> np.ndarray:
    """Bilinear ``cv2.remap`` with `remap_maps`' maps (or a box of them: then the output is that box)."""
    out = cv2.remap(img, xy, frac, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    out[outside] = 0
    return out


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Clip to [0, 255] then cast (truncating) to uint8; the SDK casts without clipping, so its
    border values above 255 wrap instead."""
    return np.clip(img, 0, 255).astype(np.uint8)


def load_image(path: str | os.PathLike, models_dir: str | os.PathLike | None = None, exact: bool = True,
               box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3) of a RobotCar Bayer PNG as the Python SDK's ``load_image`` returns it.

    With ``models_dir`` the image is also undistorted with the camera model chosen from the path.
    ``exact=False`` uses the OpenCV fast path (see ``demosaic_fast`` / ``undistort_fast``).
    ``box`` = (x0, y0, x1, y1): only that region of the result (the fast path undistorts only it)."""
    raw = read_raw(path)
    pattern = bayer_pattern_for(path)
    model = None
    if models_dir is not None:
        model = _cached_camera_model(models_dir, model_name_for(path), raw.shape[0], raw.shape[1])
        _check_lut(raw, model.lut)
    if box is not None:
        x0, y0, x1, y1 = (int(b) for b in box)
        if not (0 <= x0 < x1 <= raw.shape[1] and 0 <= y0 < y1 <= raw.shape[0]):
            raise ValueError(f"{path}: box {list(box)} is not inside the {raw.shape[1]}x{raw.shape[0]} image")
    cut = (slice(None), slice(None)) if box is None else (slice(y0, y1), slice(x0, x1))
    if not exact:
        img = demosaic_fast(raw, pattern)
        if model is None:
            return np.ascontiguousarray(img[cut])
        return remap_fast(img, *(m[cut] for m in model.remap_maps()))
    img = demosaic_exact(raw, pattern)
    if model is not None:
        img = undistort_exact(img, model.lut)
    return np.ascontiguousarray(to_uint8(img)[cut])


# --------------------------------------------------------------------------- camera models

def read_lut(path: str | os.PathLike, height: int, width: int) -> np.ndarray:
    """Read a ``<model>_distortion_lut.bin`` (little-endian float64, x values then y values) as (2, H, W)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: distortion LUT not found")
    expected = 2 * height * width * 8
    size = path.stat().st_size
    if size != expected:
        raise ValueError(f"{path}: LUT has {size} bytes; expected 2*H*W*8 = {expected} for {width}x{height}")
    return np.fromfile(path, dtype="<f8").reshape(2, height, width)


@dataclass(eq=False)
class CameraModel:
    """Pinhole intrinsics of the undistorted image, G_camera_image (optical -> camera frame) and
    the undistortion LUT (2, H, W), read from ``lut_path`` on first access of ``lut``."""

    name: str
    fx: float
    fy: float
    cx: float
    cy: float
    G_camera_image: np.ndarray
    lut_path: Path
    height: int
    width: int
    _lut: np.ndarray | None = field(default=None, init=False, repr=False)
    _maps: tuple | None = field(default=None, init=False, repr=False)

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def lut(self) -> np.ndarray:
        if self._lut is None:
            self._lut = read_lut(self.lut_path, self.height, self.width)
        return self._lut

    def remap_maps(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`remap_maps` of the LUT, computed once per model (the fast path's per-frame work is the remap)."""
        if self._maps is None:
            self._maps = remap_maps(self.lut, self.height, self.width)
        return self._maps


def _parse_model_txt(path: Path) -> tuple[list[float], np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: camera model file not found")
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    try:
        intrinsics = [float(x) for x in rows[0]]
        G = np.array([[float(x) for x in row] for row in rows[1:]], dtype=np.float64)
    except (IndexError, ValueError):
        raise ValueError(f"{path}: expected 'fx fy cx cy' then 4 rows of 4 numbers") from None
    if len(intrinsics) != 4 or G.shape != (4, 4):
        raise ValueError(f"{path}: expected 'fx fy cx cy' then 4 rows of 4 numbers")
    return intrinsics, G


def load_camera_model(models_dir: str | os.PathLike, model_name: str,
                      height: int | None = None, width: int | None = None) -> CameraModel:
    """Read ``<models_dir>/<model_name>.txt``; the LUT ``<model_name>_distortion_lut.bin`` is read lazily.

    ``height``/``width`` (of the images, which the LUT must match) default to 960x1280 for
    stereo models and 1024x1024 for mono ones."""
    models_dir = Path(models_dir)
    (fx, fy, cx, cy), G = _parse_model_txt(models_dir / f"{model_name}.txt")
    default_h, default_w = DEFAULT_IMAGE_SIZE["stereo" if model_name.startswith("stereo") else "mono"]
    return CameraModel(name=model_name, fx=fx, fy=fy, cx=cx, cy=cy, G_camera_image=G,
                       lut_path=models_dir / f"{model_name}_distortion_lut.bin",
                       height=height or default_h, width=width or default_w)


def _file_stamp(path: Path) -> tuple[int, int]:
    st = path.stat() if path.exists() else None
    return (st.st_mtime_ns, st.st_size) if st else (0, 0)


@functools.lru_cache(maxsize=8)
def _camera_model_by_stamp(models_dir: str, name: str, height: int, width: int, stamp: tuple) -> CameraModel:
    return load_camera_model(models_dir, name, height, width)


def _cached_camera_model(models_dir: str | os.PathLike, name: str, height: int, width: int) -> CameraModel:
    """``load_camera_model`` cached per process (so the LUT is read once), keyed on the files' mtimes."""
    models_dir = Path(models_dir)
    stamp = (_file_stamp(models_dir / f"{name}.txt"), _file_stamp(models_dir / f"{name}_distortion_lut.bin"))
    return _camera_model_by_stamp(str(models_dir), name, height, width, stamp)


# --------------------------------------------------------------------------- transforms

def build_se3_transform(xyzrpy) -> np.ndarray:
    """4x4 [R | t] from (x, y, z, roll, pitch, yaw), R = Rz(yaw) Ry(pitch) Rx(roll)."""
    x, y, z, roll, pitch, yaw = (float(v) for v in np.asarray(xyzrpy, dtype=np.float64).reshape(6))
    cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    T = np.eye(4)
    T[:3, :3] = rz @ ry @ rx
    T[:3, 3] = (x, y, z)
    return T


def se3_to_xyzrpy(T: np.ndarray) -> np.ndarray:
    """Inverse of ``build_se3_transform``: (x, y, z, roll, pitch, yaw) of a 4x4 transform."""
    T = np.asarray(T, dtype=np.float64)
    R = T[:3, :3]
    roll = np.arctan2(R[2, 1], R[2, 2])
    pitch = np.arctan2(-R[2, 0], np.hypot(R[0, 0], R[1, 0]))
    yaw = np.arctan2(R[1, 0], R[0, 0])
    return np.array([T[0, 3], T[1, 3], T[2, 3], roll, pitch, yaw])


def read_extrinsics(path: str | os.PathLike) -> np.ndarray:
    """4x4 sensor -> vehicle transform from an ``extrinsics/<sensor>.txt`` line ``x y z roll pitch yaw``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: extrinsics file not found")
    tokens = path.read_text().split()
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        values = []
    if len(values) != 6:
        raise ValueError(f"{path}: expected 6 numbers 'x y z roll pitch yaw', got {tokens!r}")
    return build_se3_transform(values)


# --------------------------------------------------------------------------- poses

def read_vo(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read ``vo/vo.csv``: (source_ts int64, destination_ts int64, xyzrpy float64 (N, 6))."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: VO file not found")
    src, dst, xyzrpy = [], [], []
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or ",".join(h.strip() for h in header) != VO_HEADER:
            raise ValueError(f"{path}: expected the header {VO_HEADER!r}, got {header!r}")
        for lineno, row in enumerate(reader, 2):
            if not row:
                continue
            try:
                if len(row) != 8:
                    raise ValueError
                src.append(int(row[0]))
                dst.append(int(row[1]))
                xyzrpy.append([float(v) for v in row[2:8]])
            except ValueError:
                raise ValueError(f"{path}:{lineno}: expected 2 integer timestamps and 6 numbers, got {row!r}") from None
    return (np.array(src, dtype=np.int64), np.array(dst, dtype=np.int64),
            np.array(xyzrpy, dtype=np.float64).reshape(-1, 6))


def vo_absolute_poses(source_ts: np.ndarray, xyzrpy: np.ndarray, start_ts: int,
                      end_ts: int) -> tuple[np.ndarray, np.ndarray]:
    """Chain relative VO rows into absolute poses covering [start_ts, end_ts].

    A = I at the last row before ``start_ts``; then A_k = A_{k-1} T_k for each following row,
    stamped with its source timestamp, up to and including the first row at or after ``end_ts``.
    Returns (pose_ts int64 (M,), poses (M, 4, 4))."""
    source_ts = np.asarray(source_ts, dtype=np.int64)
    xyzrpy = np.asarray(xyzrpy, dtype=np.float64).reshape(-1, 6)
    if source_ts.size and np.any(np.diff(source_ts) <= 0):
        raise ValueError("VO source timestamps are not strictly increasing")
    first = int(np.searchsorted(source_ts, start_ts, side="left"))
    last = int(np.searchsorted(source_ts, end_ts, side="left"))
    if first == 0:
        raise ValueError(f"VO does not start before the window start {start_ts} "
                         f"(first VO timestamp {source_ts[0] if source_ts.size else 'none'})")
    if last >= source_ts.size:
        raise ValueError(f"VO does not reach the window end {end_ts} (last VO timestamp {source_ts[-1]})")
    poses = [np.eye(4)]
    for k in range(first, last + 1):
        poses.append(poses[-1] @ build_se3_transform(xyzrpy[k]))
    return source_ts[first - 1:last + 1].copy(), np.stack(poses)


def slerp_quaternions(q0: np.ndarray, q1: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Row-wise slerp of unit quaternions (N, 4); lerp when |dot| >= 1 (up to 1e-12); the second
    weight changes sign when dot < 0 (shorter arc)."""
    d = np.sum(q0 * q1, axis=1)
    ad = np.minimum(np.abs(d), 1.0)
    linear = ad >= 1.0 - 1e-12
    theta = np.arccos(ad)
    sin_theta = np.where(linear, 1.0, np.sin(theta))
    w0 = np.where(linear, 1.0 - f, np.sin((1.0 - f) * theta) / sin_theta)
    w1 = np.where(linear, f, np.sin(f * theta) / sin_theta)
    w1 = np.where(d < 0, -w1, w1)
    return w0[:, None] * q0 + w1[:, None] * q1


def _interpolate_absolute(pose_ts: np.ndarray, poses: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Absolute poses (len(ts), 4, 4) at ``ts`` (within [pose_ts[0], pose_ts[-1]])."""
    after = np.searchsorted(pose_ts, ts, side="right")
    lower = after - 1
    upper = np.minimum(after, pose_ts.size - 1)
    span = (pose_ts[upper] - pose_ts[lower]).astype(np.float64)
    offset = (ts - pose_ts[lower]).astype(np.float64)
    f = np.divide(offset, span, out=np.zeros_like(offset), where=span > 0)
    quats = Rotation.from_matrix(poses[:, :3, :3]).as_quat()
    q = slerp_quaternions(quats[lower], quats[upper], f)
    positions = poses[:, :3, 3]
    out = np.tile(np.eye(4), (ts.size, 1, 1))
    out[:, :3, :3] = Rotation.from_quat(q).as_matrix()
    out[:, :3, 3] = (1.0 - f)[:, None] * positions[lower] + f[:, None] * positions[upper]
    return out


def interpolate_poses(pose_ts, poses, requested_ts, origin_ts: int) -> np.ndarray:
    """Poses at ``requested_ts`` relative to the pose at ``origin_ts``: P_rel = inv(P(origin)) @ P(t).

    Fixed SDK semantics: f = (t - t_lower) / (t_upper - t_lower) in true division, quaternion
    slerp for rotation, lerp for translation, and the caller's ``requested_ts`` is not modified.
    P_rel(t) maps vehicle points at time t into the vehicle frame at the origin time.
    Returns (len(requested_ts), 4, 4)."""
    pose_ts = np.asarray(pose_ts, dtype=np.int64)
    poses = np.asarray(poses, dtype=np.float64)
    ts = np.append(np.asarray(requested_ts, dtype=np.int64).reshape(-1), np.int64(origin_ts))
    if poses.shape != (pose_ts.size, 4, 4) or pose_ts.size == 0:
        raise ValueError(f"expected poses of shape ({pose_ts.size}, 4, 4) matching pose_ts, got {poses.shape}")
    if np.any(np.diff(pose_ts) <= 0):
        raise ValueError("pose timestamps must be strictly increasing")
    outside = ts[(ts < pose_ts[0]) | (ts > pose_ts[-1])]
    if outside.size:
        raise ValueError(f"timestamps {outside[:5].tolist()} are outside the poses' range [{pose_ts[0]}, {pose_ts[-1]}]")
    absolute = _interpolate_absolute(pose_ts, poses, ts)
    return np.linalg.inv(absolute[-1]) @ absolute[:-1]


# --------------------------------------------------------------------------- lidar

def read_lms_scan(path: str | os.PathLike) -> np.ndarray:
    """Read an LMS scan ``.bin`` of float64 (x, y, reflectance) triples as (N, 3) float64."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: LMS scan not found")
    size = path.stat().st_size
    if size % 24:
        raise ValueError(f"{path}: size {size} bytes is not a multiple of 24 (float64 x, y, reflectance triples)")
    return np.fromfile(path, dtype="<f8").reshape(-1, 3)


def _scan_points(path: Path, laser: str) -> np.ndarray:
    """Homogeneous (4, N) points of one scan in the laser frame (LMS: z = 0)."""
    scan = read_lms_scan(path)  # ldmrs files are also float64 triples: (x, y, z)
    z = scan[:, 2] if laser == "ldmrs" else np.zeros(len(scan))
    return np.stack([scan[:, 0], scan[:, 1], z, np.ones(len(scan))])


class LaserLog:
    """One run's laser timestamps, VO and laser extrinsics, read once; point clouds of any window.

    ``build_pointcloud`` reads these files for one window; a job that builds many windows of the same
    run (ground truth of a split) keeps one ``LaserLog`` per run instead."""

    def __init__(self, run_dir, extrinsics_dir, laser: str = "lms_front"):
        if laser not in SUPPORTED_LASERS:
            raise ValueError(f"unsupported laser {laser!r}; expected one of {SUPPORTED_LASERS}")
        self.run_dir, self.laser = Path(run_dir), laser
        self.timestamps_path = self.run_dir / f"{laser}.timestamps"
        self.scan_ts, _ = read_timestamps(self.timestamps_path)
        self.T_laser = read_extrinsics(Path(extrinsics_dir) / f"{laser}.txt")
        self.vo_path = self.run_dir / "vo" / "vo.csv"
        self.vo_source, self.vo_destination, self.vo_xyzrpy = read_vo(self.vo_path)

    def span(self) -> tuple[int, int]:
        """First and last timestamp covered by both VO and the laser."""
        return (int(max(self.vo_destination.min(), self.scan_ts.min())),
                int(min(self.vo_source.max(), self.scan_ts.max())))

    def pointcloud(self, start_ts: int, end_ts: int, origin_ts: int) -> np.ndarray:
        """The scans with start_ts <= t <= end_ts as a (4, N) cloud in the vehicle frame at ``origin_ts``:
        p = P_rel(t) @ T_laser @ [x, y, 0, 1], each scan with its own pose (listed scans without a file
        are skipped)."""
        stamps = self.scan_ts[(self.scan_ts >= start_ts) & (self.scan_ts <= end_ts)]
        if stamps.size == 0:
            raise ValueError(f"{self.timestamps_path}: no {self.laser} scans between {start_ts} and {end_ts}")
        lo, hi = min(int(stamps[0]), origin_ts), max(int(stamps[-1]), origin_ts)
        try:
            pose_ts, poses = vo_absolute_poses(self.vo_source, self.vo_xyzrpy, lo, hi)
        except ValueError as err:
            raise ValueError(f"{self.vo_path}: {err}") from err
        rel = interpolate_poses(pose_ts, poses, stamps, origin_ts)
        clouds = [np.empty((4, 0))]
        for t, pose in zip(stamps.tolist(), rel):
            scan_path = self.run_dir / self.laser / f"{t}.bin"
            if scan_path.is_file():
                clouds.append(pose @ self.T_laser @ _scan_points(scan_path, self.laser))
        return np.concatenate(clouds, axis=1)


def build_pointcloud(run_dir, extrinsics_dir, start_ts: int, end_ts: int, origin_ts: int,
                     laser: str = "lms_front") -> np.ndarray:
    """Accumulate the scans with start_ts <= t <= end_ts into a (4, N) cloud in the vehicle frame
    at ``origin_ts``, with VO poses: p = P_rel(t) @ T_laser @ [x, y, 0, 1] (each scan with its own pose).

    Reads ``<run>/<laser>.timestamps``, ``<run>/<laser>/<ts>.bin`` (listed scans without a file are
    skipped), ``<run>/vo/vo.csv`` and ``<extrinsics_dir>/<laser>.txt`` (see ``LaserLog``)."""
    return LaserLog(run_dir, extrinsics_dir, laser).pointcloud(start_ts, end_ts, origin_ts)


def project_pointcloud(pc: np.ndarray, camera_model: CameraModel, width: int, height: int,
                       T_camera_posesource: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project a (4, N) vehicle-frame cloud into the undistorted image as the SDK does.

    xyz = T_camera_posesource @ pc (identity for VO and the stereo camera),
    q = inv(G_camera_image) @ xyz; keeps q_z >= 0, 0.5 <= u <= width, 0.5 <= v <= height.
    Returns (u, v, depth = q_z)."""
    pc = np.asarray(pc, dtype=np.float64)
    if pc.ndim != 2 or pc.shape[0] != 4:
        raise ValueError(f"expected a (4, N) homogeneous point cloud, got shape {pc.shape}")
    T = np.eye(4) if T_camera_posesource is None else np.asarray(T_camera_posesource, dtype=np.float64)
    q = np.linalg.solve(camera_model.G_camera_image, T @ pc)
    q = q[:, q[2] >= 0]
    u, v, depth = project_points(q[:3], camera_model.K)
    keep = (u >= 0.5) & (u <= width) & (v >= 0.5) & (v <= height)
    return u[keep], v[keep], depth[keep]


def gt_depth(run_dir, models_dir, extrinsics_dir, image_ts: int, width: int = 1280, height: int = 960,
             window_us: int = 4_000_000, laser: str = "lms_front") -> np.ndarray:
    """Ground-truth depth (float32 (H, W), 0 = none) for the stereo/centre frame ``image_ts``:
    the VO-accumulated cloud of image_ts +- window_us, origin image_ts, projected with
    stereo_narrow_left (camera = vehicle frame for VO) and rasterised (nearest depth per pixel)."""
    pc = build_pointcloud(run_dir, extrinsics_dir, image_ts - window_us, image_ts + window_us, image_ts, laser)
    model = load_camera_model(models_dir, STEREO_MODELS["centre"], height, width)
    u, v, depth = project_pointcloud(pc, model, width, height)
    return rasterize_depth(u, v, depth, height, width)
