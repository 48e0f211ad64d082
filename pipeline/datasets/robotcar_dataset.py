"""Oxford RobotCar as the pipeline sees it (the `Dataset` adapter `RobotCar`): splits, frame tables and
ground truth, on top of the SDK-like reader `pipeline.datasets.robotcar`.

Frame ids are `<run>/<timestamp_us>` of the stereo centre camera. Day/night is given by run
(config `datasets.robotcar.runs`). The derived rule for test frames (documented in README):
the last `test_fraction` of each run's frames is held out; in it every `test_every`-th frame
whose +-`lidar_window_us` LiDAR accumulation is covered by VO and LMS data is a test target. The
first part of each run gives the train targets (every frame with both neighbours). No frame is in
both. A user's split files replace any of the four lists.

Options (config keys datasets.robotcar.*): `runs`, `test_every`, `test_fraction`, `lidar_window_us`
(derive_splits); `lidar_window_us` (ground_truth); frame_table and load_rgb read none. Each run's
tables (frame list, vo.csv, lms_front timestamps) and the root's camera model and extrinsics are read
once per adapter (once per job).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.datasets import robotcar as rc
from pipeline.datasets.adapter import Dataset
from pipeline.datasets.frames import SPLITS, FrameTable, build_table
from pipeline.datasets.images import CropResize, read_gray

CAMERA_DIR = Path("stereo") / "centre"
LASER = "lms_front"


def parse_frame_id(frame_id: str) -> tuple[str, int]:
    run, _, ts = str(frame_id).rpartition("/")
    if not run or not ts.isdigit():
        raise ValueError(f"RobotCar frame id {frame_id!r} is not of the form <run>/<timestamp_us>")
    return run, int(ts)


def source_of(run: str, ts: int) -> str:
    """The frame's image path relative to the root (the frames shard's `source`)."""
    return f"{run}/{CAMERA_DIR.as_posix()}/{ts}.png"


def label_path(root: str | Path, frame_id: str) -> Path:
    """<root>/<run>/labels/<ts>.png: Cityscapes train ids in the undistorted camera geometry."""
    run, ts = parse_frame_id(frame_id)
    return Path(root) / run / "labels" / f"{ts}.png"


class RobotCar(Dataset):
    """A RobotCar root: run folders, models/ and extrinsics/ (from the SDK repository)."""

    name = "robotcar"
    title = "RobotCar"
    OPTIONS = {"runs": "splits", "test_every": "splits", "test_fraction": "splits",
               "lidar_window_us": "splits, gt"}

    def __init__(self, root: str | Path, options=None):
        super().__init__(root, options)
        for sub in ("models", "extrinsics"):
            if not (self.root / sub).is_dir():
                raise FileNotFoundError(f"RobotCar {sub}/ folder not found in {self.root} "
                                        "(it comes with the SDK repository)")
        self.models_dir = self.root / "models"
        self._frames: dict[str, np.ndarray] = {}
        self._lasers: dict[str, rc.LaserLog] = {}
        self._camera: rc.CameraModel | None = None

    # ------------------------------------------------------------------------- per-run tables, read once
    def run_frames(self, run: str) -> np.ndarray:
        """int64 timestamps of the run's stereo/centre frames that are listed and on disk."""
        if run not in self._frames:
            self._frames[run] = np.asarray(rc.read_run_frames(self.root / run), dtype=np.int64)
        return self._frames[run]

    def laser(self, run: str) -> rc.LaserLog:
        """The run's lms_front timestamps, vo.csv and laser extrinsics."""
        if run not in self._lasers:
            self._lasers[run] = rc.LaserLog(self.root / run, self.root / "extrinsics", LASER)
        return self._lasers[run]

    def camera(self, run: str, ts: int) -> rc.CameraModel:
        """stereo_narrow_left at the size of the stereo/centre images (one camera, one size: the size is
        read from the header of the first image asked for, the model once)."""
        if self._camera is None:
            path = self.root / source_of(run, ts)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: image not found")
            with Image.open(path) as im:
                w, h = im.size
            self._camera = rc.load_camera_model(self.models_dir, rc.model_name_for(CAMERA_DIR / "x.png"), h, w)
        return self._camera

    # ------------------------------------------------------------------------- splits
    def derive_splits(self) -> tuple[dict[str, list[str]], str]:
        runs = self.option("runs")
        test_every, test_fraction = int(self.option("test_every")), float(self.option("test_fraction"))
        window_us = int(self.option("lidar_window_us"))
        if not runs or not runs.get("day") or not runs.get("night"):
            raise ValueError("config key datasets.robotcar.runs needs `day` and `night` run lists")
        if test_every < 1 or not 0.0 < test_fraction < 1.0:
            raise ValueError(f"datasets.robotcar.test_every must be >= 1 and test_fraction in (0, 1), "
                             f"got {test_every} and {test_fraction}")
        out: dict[str, list[str]] = {s: [] for s in SPLITS}
        for light in ("day", "night"):
            for run in runs[light]:
                ts = self.run_frames(run)
                if len(ts) < 3:
                    raise ValueError(f"run {self.root / run} has {len(ts)} stereo/centre frames; need at least 3")
                cut = int(round(len(ts) * (1.0 - test_fraction)))
                train = ts[1:max(1, cut - 1)]  # targets with both neighbours inside the train part
                lo, hi = self.laser(run).span()
                held = ts[cut:]
                held = held[(held - window_us >= lo) & (held + window_us <= hi)]
                out[f"train_{light}"] += [f"{run}/{t}" for t in train]
                out[f"test_{light}"] += [f"{run}/{t}" for t in held[::test_every]]
        header = (f"runs {runs}; test = last {test_fraction:.0%} of each run, every {test_every}-th frame "
                  f"with LiDAR +-{window_us} us")
        return out, header

    # ------------------------------------------------------------------------- frames
    def frame_table(self, ids) -> FrameTable:
        """Targets plus their t-1/t+1 neighbours (adjacent existing frames of the same run)."""
        records: dict[str, dict] = {}
        run_index = {r: k for k, r in enumerate(sorted({parse_frame_id(i)[0] for i in ids}))}
        model = None

        def add(run: str, ts: int) -> str:
            fid = f"{run}/{ts}"
            if fid not in records:
                records[fid] = {"frame_id": fid, "source": source_of(run, ts), "timestamp": ts,
                                "sequence": run_index[run], "K": model.K}
            return fid

        for fid in ids:
            run, ts = parse_frame_id(fid)
            frames = self.run_frames(run)
            pos = np.searchsorted(frames, ts)
            if pos >= len(frames) or frames[pos] != ts:
                raise ValueError(f"frame {fid}: no image {self.root / source_of(run, ts)}")
            model = self.camera(run, ts)
            rec = records[add(run, ts)]
            if pos > 0:
                rec["prev_id"] = add(run, int(frames[pos - 1]))
            if pos + 1 < len(frames):
                rec["next_id"] = add(run, int(frames[pos + 1]))
        size = (model.width, model.height) if model is not None else (1280, 960)
        return build_table(list(records.values()), set(ids), size)

    def load_rgb(self, source: str) -> np.ndarray:
        return rc.load_image(self.root / source, models_dir=self.models_dir, exact=False)

    def load_frame(self, source: str, mapping: CropResize) -> np.ndarray:
        """Undistorts only the crop box (the remap is most of the per-frame work); same pixels as
        `mapping.image(load_rgb(source))`."""
        img = rc.load_image(self.root / source, models_dir=self.models_dir, exact=False, box=mapping.box)
        return mapping.cropped(img)

    # ------------------------------------------------------------------------- ground truth
    def ground_truth(self, frame_id: str, source: str, *, crop, size: tuple[int, int]):
        """LMS + VO point cloud of the frame +- lidar_window_us (origin: the frame) projected into the
        undistorted camera, then into the cropped + resized frame (CropResize.rasterize: col = floor(u' + 0.5),
        nearest depth, 0 = none); and the label map <root>/<run>/labels/<ts>.png if there is one."""
        window_us = int(self.option("lidar_window_us"))
        run, ts = parse_frame_id(frame_id)
        model = self.camera(run, ts)
        pc = self.laser(run).pointcloud(ts - window_us, ts + window_us, ts)
        # u, v: 0-based pixel-centre coordinates of the undistorted image (the LUT's convention)
        u, v, depth = rc.project_pointcloud(pc, model, model.width, model.height)
        mapping = CropResize(crop, (model.width, model.height), size)
        label = label_path(self.root, frame_id)
        labels = mapping.image(read_gray(label), nearest=True) if label.exists() else None
        return mapping.rasterize(u, v, depth), labels
