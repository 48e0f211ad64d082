"""Oxford RobotCar as the pipeline sees it: splits, frame tables and ground truth, on top of the reader.

Frame ids are `<run>/<timestamp_us>` of the stereo centre camera. Day/night is given by run
(config `datasets.robotcar.runs`). The derived rule for test frames (documented in README):
the last `test_fraction` of each run's frames is held out; in it every `test_every`-th frame
whose +-window LiDAR accumulation is covered by VO and LMS data is a test target. The first
part of each run gives the train targets (every frame with both neighbours). No frame is in
both. A user's split files replace any of the four lists.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.datasets import robotcar as rc
from pipeline.datasets.frames import build_table
from pipeline.datasets.images import crop_resize, crop_resize_transform, read_gray
from pipeline.geometry import rasterize_depth

CAMERA_DIR = Path("stereo") / "centre"


def parse_frame_id(frame_id: str) -> tuple[str, int]:
    run, _, ts = str(frame_id).rpartition("/")
    if not run or not ts.isdigit():
        raise ValueError(f"RobotCar frame id {frame_id!r} is not of the form <run>/<timestamp_us>")
    return run, int(ts)


def _check_root(root: Path) -> None:
    if not Path(root).is_dir():
        raise FileNotFoundError(f"RobotCar root not found: {root} (config key datasets.robotcar.root)")
    for sub in ("models", "extrinsics"):
        if not (Path(root) / sub).is_dir():
            raise FileNotFoundError(f"RobotCar {sub}/ folder not found in {root} (it comes with the SDK repository)")


def lidar_span(run_dir: Path, laser: str = "lms_front") -> tuple[int, int]:
    """First and last timestamp covered by both VO and the laser."""
    src, dst, _ = rc.read_vo(run_dir / "vo" / "vo.csv")
    lts, _ = rc.read_timestamps(run_dir / f"{laser}.timestamps")
    return int(max(dst.min(), lts.min())), int(min(src.max(), lts.max()))


def derive_splits(root: str | Path, runs: dict, *, test_every: int = 5, test_fraction: float = 0.3,
                  window_us: int = 4_000_000) -> dict[str, list[str]]:
    root = Path(root)
    _check_root(root)
    if not runs or not runs.get("day") or not runs.get("night"):
        raise ValueError("config key datasets.robotcar.runs needs `day` and `night` run lists")
    out = {s: [] for s in ("train_day", "train_night", "test_day", "test_night")}
    for light in ("day", "night"):
        for run in runs[light]:
            ts = np.asarray(rc.read_run_frames(root / run), dtype=np.int64)
            if len(ts) < 3:
                raise ValueError(f"run {root / run} has {len(ts)} stereo/centre frames; need at least 3")
            cut = int(round(len(ts) * (1.0 - test_fraction)))
            train = ts[1:max(1, cut - 1)]  # targets with both neighbours inside the train part
            lo, hi = lidar_span(root / run)
            held = ts[cut:]
            held = held[(held - window_us >= lo) & (held + window_us <= hi)]
            out[f"train_{light}"] += [f"{run}/{t}" for t in train]
            out[f"test_{light}"] += [f"{run}/{t}" for t in held[::test_every]]
    return out


def frame_table(root: str | Path, ids: list[str]):
    """Targets plus their t-1/t+1 neighbours (adjacent existing frames of the same run) and a loader."""
    root = Path(root)
    _check_root(root)
    models_dir = root / "models"
    per_run: dict[str, np.ndarray] = {}
    records: dict[str, dict] = {}
    model = None
    runs = sorted({parse_frame_id(i)[0] for i in ids})
    run_index = {r: k for k, r in enumerate(runs)}

    def add(run: str, ts: int) -> str:
        fid = f"{run}/{ts}"
        if fid not in records:
            records[fid] = {"frame_id": fid, "source": f"{run}/{CAMERA_DIR.as_posix()}/{ts}.png", "timestamp": ts,
                            "sequence": run_index[run], "K": model.K}
        return fid

    for fid in ids:
        run, ts = parse_frame_id(fid)
        if run not in per_run:
            per_run[run] = np.asarray(rc.read_run_frames(root / run), dtype=np.int64)
        frames = per_run[run]
        pos = np.searchsorted(frames, ts)
        if pos >= len(frames) or frames[pos] != ts:
            raise ValueError(f"frame {fid}: no image {root / run / CAMERA_DIR / f'{ts}.png'}")
        if model is None:
            h, w = rc.read_raw(root / run / CAMERA_DIR / f"{ts}.png").shape
            model = rc.load_camera_model(models_dir, rc.model_name_for(CAMERA_DIR / "x.png"), h, w)
        rec = records[add(run, ts)]
        if pos > 0:
            rec["prev_id"] = add(run, int(frames[pos - 1]))
        if pos + 1 < len(frames):
            rec["next_id"] = add(run, int(frames[pos + 1]))
    size = (model.width, model.height) if model is not None else (1280, 960)
    table = build_table(list(records.values()), set(ids), size)

    def load(source: str) -> np.ndarray:
        return rc.load_image(root / source, models_dir=models_dir, exact=False)

    return table, load


def lidar_depth(root: str | Path, frame_id: str, crop, size: tuple[int, int], window_us: int) -> np.ndarray:
    """LMS + VO point cloud of frame_id +- window_us projected into the undistorted camera, then into the
    cropped + resized frame, rasterised at `size` (col = floor(u' + 0.5), nearest depth, 0 = none)."""
    root = Path(root)
    run, ts = parse_frame_id(frame_id)
    h, w = rc.read_raw(root / run / CAMERA_DIR / f"{ts}.png").shape
    model = rc.load_camera_model(root / "models", rc.model_name_for(CAMERA_DIR / "x.png"), h, w)
    pc = rc.build_pointcloud(root / run, root / "extrinsics", ts - window_us, ts + window_us, ts)
    u, v, depth = rc.project_pointcloud(pc, model, w, h)
    # u, v are 0-based pixel-centre coordinates of the undistorted image (the LUT's convention)
    sx, sy, left, top = crop_resize_transform(crop, (w, h), size)
    u2 = (u - left + 0.5) * sx - 0.5
    v2 = (v - top + 0.5) * sy - 0.5
    return rasterize_depth(u2, v2, depth, size[1], size[0])


def label_path(root: str | Path, frame_id: str) -> Path:
    """<root>/<run>/labels/<ts>.png: Cityscapes train ids in the undistorted camera geometry."""
    run, ts = parse_frame_id(frame_id)
    return Path(root) / run / "labels" / f"{ts}.png"


def read_label(root: str | Path, frame_id: str, crop, size: tuple[int, int]) -> np.ndarray | None:
    path = label_path(root, frame_id)
    if not path.exists():
        return None
    return crop_resize(read_gray(path), crop, size, nearest=True)
