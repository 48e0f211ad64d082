"""The Oxford RobotCar-format writer of the embedded demo (`write_robotcar_demo`).

`write_robotcar_demo` renders a day run and a night run in the Oxford RobotCar format
(formats/robotcar.md) that `pipeline.datasets.robotcar` reads: gbrg Bayer PNGs at 1280x960 through a
mild radial distortion with its undistortion LUT (the stereo_narrow_left model, scaled K),
stereo.timestamps, vo/vo.csv, 50 Hz lms_front push-broom scans, models/ and extrinsics/ (stereo and
lms_front), plus exact label maps `<run>/labels/<ts>.png` in the undistorted geometry.

Frames. Renderer ego: x forward, y left, z up, on the ground. RobotCar vehicle frame = stereo
camera frame: x forward, y right, z down, at the camera (CAMERA_HEIGHT above the ground, above the
ego origin). Optical frame (x right, y down, z forward) = G_camera_image.
"""
from __future__ import annotations

import datetime as _dt
import os
import time

import cv2
import numpy as np

from pipeline.datasets import render
from pipeline.datasets.images import CropResize, write_png
from pipeline.datasets.robotcar import VO_HEADER, build_se3_transform, se3_to_xyzrpy

DEMO_RUNS = (("2014-12-09-13-21-02", False), ("2014-12-16-18-44-24", True))  # (run, night)
STEREO_NARROW_LEFT = (964.828979, 964.828979, 643.788025, 484.407990)         # fx fy cx cy at 1280x960
STEREO_SIZE = (1280, 960)
G_CAMERA_IMAGE = np.array([[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
LMS_FRONT_EXTRINSICS = (1.7589, 0.2268, 1.0411, -0.0437, -1.4572, 0.0356)
CAMERA_HEIGHT = 1.5               # m above the ground
K1 = -0.05                        # radial distortion on normalised coordinates (barrel)
STEREO_PERIOD_US = 62_500         # 16 Hz
LMS_PERIOD_US = 20_000            # 50 Hz
LMS_BEAMS = 541                   # 270 deg at 0.5 deg
LMS_MIN_RANGE, LMS_MAX_RANGE = 0.5, 50.0
POSE_MARGIN_US = 5_000_000        # VO and LMS cover the images +- 5 s (splits use +- 4 s windows)
_LMS_BATCH = 50                   # scans per cast_rays call


def _run_start_us(run: str) -> int:
    """UNIX microseconds of a run name such as 2014-12-09-13-21-02 (UK local = UTC in winter)."""
    stamp = _dt.datetime.strptime(run, "%Y-%m-%d-%H-%M-%S").replace(tzinfo=_dt.timezone.utc)
    return int(stamp.timestamp()) * 1_000_000


def _intrinsics(width: int, height: int) -> tuple[float, float, float, float]:
    """stereo_narrow_left (fx, fy, cx, cy) scaled to width x height (pixel-centre convention),
    rounded to the 6 decimals the model file holds."""
    K = CropResize.resize(STEREO_SIZE, (width, height)).intrinsics(_K(STEREO_NARROW_LEFT))
    return tuple(round(float(k), 6) for k in (K[0, 0], K[1, 1], K[0, 2], K[1, 2]))


def _K(intrinsics, shift=(0.0, 0.0)) -> np.ndarray:
    fx, fy, cx, cy = intrinsics
    return np.array([[fx, 0.0, cx + shift[0]], [0.0, fy, cy + shift[1]], [0.0, 0.0, 1.0]])


def _distortion_lut(intrinsics, width: int, height: int, k1: float) -> np.ndarray:
    """(2, H, W) float64: for each undistorted pixel, the (x, y) to sample in the raw image:
    distorted = undistorted * (1 + k1 r^2) on normalised coordinates."""
    fx, fy, cx, cy = intrinsics
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    x, y = (u - cx) / fx, (v - cy) / fy
    f = 1.0 + k1 * (x * x + y * y)
    return np.stack([fx * x * f + cx, fy * y * f + cy])


def _undistort_points(ud, vd, intrinsics, k1: float, iterations: int = 20):
    """Inverse of the LUT's radial model: undistorted pixel (u, v) of raw pixels (ud, vd),
    by fixed-point iteration x = xd / (1 + k1 r(x)^2) (a contraction for mild k1)."""
    fx, fy, cx, cy = intrinsics
    xd, yd = (np.asarray(ud, np.float64) - cx) / fx, (np.asarray(vd, np.float64) - cy) / fy
    x, y = xd.copy(), yd.copy()
    for _ in range(iterations):
        f = 1.0 + k1 * (x * x + y * y)
        x, y = xd / f, yd / f
    return fx * x + cx, fy * y + cy


def _raw_maps(intrinsics, width: int, height: int, k1: float):
    """cv2.remap maps (float32 (H, W) each) from the raw image into a pinhole render enlarged by
    (mx, my) pixels on each side, and the margins (mx, my)."""
    vd, ud = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = _undistort_points(ud, vd, intrinsics, k1)
    mx = int(np.ceil(max(-u.min(), u.max() - (width - 1), 0.0))) + 2
    my = int(np.ceil(max(-v.min(), v.max() - (height - 1), 0.0))) + 2
    return (u + mx).astype(np.float32), (v + my).astype(np.float32), (mx, my)


def _bayer_gbrg(rgb: np.ndarray) -> np.ndarray:
    """8-bit gbrg mosaic of an RGB image: row 0 = G B G B ..., row 1 = R G R G ...."""
    raw = np.ascontiguousarray(rgb[..., 1])
    raw[0::2, 1::2] = rgb[0::2, 1::2, 2]
    raw[1::2, 0::2] = rgb[1::2, 0::2, 0]
    return raw


def _T_ego_vehicle(camera_height: float = CAMERA_HEIGHT) -> np.ndarray:
    """Renderer ego (x fwd, y left, z up) <- RobotCar vehicle = camera (x fwd, y right, z down)."""
    T = np.diag([1.0, -1.0, -1.0, 1.0])
    T[2, 3] = camera_height
    return T


def _lms_directions() -> tuple[np.ndarray, np.ndarray]:
    """Beam angles (rad, -135..135 deg) and unit directions (N, 3) in the laser frame (z = 0)."""
    a = np.deg2rad(np.linspace(-135.0, 135.0, LMS_BEAMS))
    return a, np.stack([np.cos(a), np.sin(a), np.zeros_like(a)], 1)


def _plan(seed: int, index: int, run: str, night: bool, frames: int) -> dict:
    """Timestamps (us), trajectory and scene parameters of one run, before rendering.

    Stereo at 16 Hz (+-300 us jitter) over the images +- POSE_MARGIN_US (images are the middle
    `frames`), lms_front at 50 Hz inside the stereo span."""
    rng = np.random.default_rng([int(seed), index, 21])
    pad = -(-POSE_MARGIN_US // STEREO_PERIOD_US)
    n = frames + 2 * pad
    start = _run_start_us(run) + 2_000_000 + int(rng.integers(0, STEREO_PERIOD_US))
    stereo = start + np.arange(n, dtype=np.int64) * STEREO_PERIOD_US + rng.integers(-300, 301, n)
    n_lms = int((stereo[-1] - stereo[0] - 2 * 10_000) // LMS_PERIOD_US) + 1
    lms = stereo[0] + 10_000 + np.arange(n_lms, dtype=np.int64) * LMS_PERIOD_US + rng.integers(-100, 101, n_lms)
    speed = float(rng.uniform(6.0, 9.0))
    duration = (stereo[-1] - stereo[0]) / 1e6
    return dict(run=run, night=bool(night), index=index, t0_us=int(stereo[0]), speed=speed,
                scene_seed=int(np.random.SeedSequence([int(seed), index, 22]).generate_state(1)[0]),
                traj_seed=int(np.random.SeedSequence([int(seed), index, 23]).generate_state(1)[0]),
                length_m=round(5.0 + speed * duration + 110.0, 3),
                stereo=stereo, images=stereo[pad:pad + frames], lms=lms)


def _world_vehicle(scene, plan, ts) -> np.ndarray:
    """world <- vehicle (N, 4, 4) at timestamps ts (us)."""
    times = (np.asarray(ts, dtype=np.int64) - plan["t0_us"]) / 1e6
    ego = render.trajectory(scene, times, plan["speed"], plan["traj_seed"])
    return np.stack(ego) @ _T_ego_vehicle()


def _vo_text(stereo_ts, poses) -> str:
    """vo.csv: one row per consecutive pair; source = later, destination = earlier; x..yaw of
    inv(P_dst) @ P_src (the source pose in the destination vehicle frame)."""
    lines = [VO_HEADER]
    for k in range(1, len(stereo_ts)):
        rel = se3_to_xyzrpy(np.linalg.inv(poses[k - 1]) @ poses[k])
        values = ",".join(repr(float(v) + 0.0) for v in rel)           # + 0.0 turns -0.0 into 0.0
        lines.append(f"{stereo_ts[k]},{stereo_ts[k - 1]},{values}")
    return "\n".join(lines) + "\n"


def _lms_scans(scene, world_vehicle, T_vehicle_lms) -> list[np.ndarray]:
    """One (n, 3) float64 (x, y, reflectance) array per vehicle pose: 541 beams in the laser
    plane cast into the scene; misses and ranges outside [LMS_MIN_RANGE, LMS_MAX_RANGE] dropped."""
    angles, dirs = _lms_directions()
    T = np.asarray(world_vehicle) @ T_vehicle_lms                                     # (N, 4, 4)
    origins = np.repeat(T[:, :3, 3], len(dirs), axis=0)
    world_dirs = np.einsum("nij,bj->nbi", T[:, :3, :3], dirs).reshape(-1, 3)
    t, labels = render.cast_rays(scene, origins, world_dirs, max_dist=LMS_MAX_RANGE)
    t = t.astype(np.float64)
    ok = np.isfinite(t) & (t >= LMS_MIN_RANGE)
    refl = np.zeros_like(t)
    points = origins[ok] + world_dirs[ok] / np.linalg.norm(world_dirs[ok], axis=1, keepdims=True) * t[ok, None]
    refl[ok] = render.reflectivity(scene, points, labels[ok])
    scans = []
    for k in range(len(T)):
        sl = slice(k * len(dirs), (k + 1) * len(dirs))
        keep = ok[sl]
        r = t[sl][keep]
        scans.append(np.column_stack([r * np.cos(angles[keep]), r * np.sin(angles[keep]), refl[sl][keep]]))
    return scans


def _write_static(root: str, intrinsics, width: int, height: int, k1: float) -> None:
    """models/stereo_narrow_left{.txt,_distortion_lut.bin} and extrinsics/{stereo,lms_front}.txt."""
    os.makedirs(os.path.join(root, "models"), exist_ok=True)
    os.makedirs(os.path.join(root, "extrinsics"), exist_ok=True)
    rows = "\n".join(" ".join(f"{v:f}" for v in row) for row in G_CAMERA_IMAGE)
    with open(os.path.join(root, "models", "stereo_narrow_left.txt"), "w") as f:
        f.write(" ".join(f"{v:f}" for v in intrinsics) + "\n" + rows + "\n")
    lut = _distortion_lut(intrinsics, width, height, k1)
    lut.astype("<f8").tofile(os.path.join(root, "models", "stereo_narrow_left_distortion_lut.bin"))
    with open(os.path.join(root, "extrinsics", "stereo.txt"), "w") as f:
        f.write("0 0 0 0 0 0\n")
    with open(os.path.join(root, "extrinsics", "lms_front.txt"), "w") as f:
        f.write(" ".join(str(v) for v in LMS_FRONT_EXTRINSICS) + "\n")


def _write_timestamps(path: str, stamps) -> None:
    with open(path, "w") as f:
        f.write("".join(f"{int(t)} 1\n" for t in stamps))


def _render_image(root, seed, plan, scene, pose, ts, intrinsics, maps, width, height, render_scale) -> None:
    """Render the enlarged pinhole view once: its centre is the label map (undistorted geometry),
    its (bicubic) remap through the inverse distortion is the raw image, stored as a gbrg mosaic."""
    map_x, map_y, (mx, my) = maps
    K_big = _K(intrinsics, (mx, my))
    rng = np.random.default_rng([int(seed), plan["index"], int(ts) % (1 << 31)])
    rgb, _, labels = render.render_scaled(scene, pose @ G_CAMERA_IMAGE, K_big, width + 2 * mx, height + 2 * my,
                                          plan["night"], rng, render_scale)
    raw_rgb = cv2.remap(rgb, map_x, map_y, interpolation=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    run_dir = os.path.join(root, plan["run"])
    write_png(os.path.join(run_dir, "stereo", "centre", f"{ts}.png"), _bayer_gbrg(raw_rgb))
    labels = np.ascontiguousarray(labels[my:my + height, mx:mx + width])
    write_png(os.path.join(run_dir, "labels", f"{ts}.png"), labels)


def _write_run(root, seed, plan, intrinsics, maps, width, height, render_scale, bar) -> dict:
    """Everything of one run: timestamps, images and labels, vo.csv, lms_front scans."""
    run_dir = os.path.join(root, plan["run"])
    for sub in ("stereo/centre", "labels", "vo", "lms_front"):
        os.makedirs(os.path.join(run_dir, sub), exist_ok=True)
    scene = render.make_scene(plan["scene_seed"], plan["length_m"])
    _write_timestamps(os.path.join(run_dir, "stereo.timestamps"), plan["images"])
    _write_timestamps(os.path.join(run_dir, "lms_front.timestamps"), plan["lms"])
    stereo_poses = _world_vehicle(scene, plan, plan["stereo"])
    with open(os.path.join(run_dir, "vo", "vo.csv"), "w") as f:
        f.write(_vo_text(plan["stereo"].tolist(), stereo_poses))
    for ts, pose in zip(plan["images"].tolist(), _world_vehicle(scene, plan, plan["images"])):
        _render_image(root, seed, plan, scene, pose, ts, intrinsics, maps, width, height, render_scale)
        bar.update(1)
    T_lms = build_se3_transform(LMS_FRONT_EXTRINSICS)
    n_points = 0
    for b in range(0, len(plan["lms"]), _LMS_BATCH):
        stamps = plan["lms"][b:b + _LMS_BATCH]
        for ts, scan in zip(stamps.tolist(), _lms_scans(scene, _world_vehicle(scene, plan, stamps), T_lms)):
            scan.astype("<f8").tofile(os.path.join(run_dir, "lms_front", f"{ts}.bin"))
            n_points += len(scan)
        bar.update(1)
    return {"run": plan["run"], "night": plan["night"], "scene_seed": plan["scene_seed"],
            "length_m": plan["length_m"], "speed": plan["speed"], "traj_seed": plan["traj_seed"],
            "t0_us": plan["t0_us"], "n_frames": len(plan["images"]), "first_frame_us": int(plan["images"][0]),
            "last_frame_us": int(plan["images"][-1]), "n_vo_rows": len(plan["stereo"]) - 1,
            "n_lms_scans": len(plan["lms"]), "n_lms_points": n_points}


def _check_args(width, height, frames_per_run):
    if int(width) < 16 or int(height) < 16 or int(width) % 2 or int(height) % 2:
        raise ValueError(f"write_robotcar_demo: width/height must be even and >= 16 (Bayer 2x2), got {width}x{height}")
    if int(frames_per_run) < 3:
        raise ValueError(f"write_robotcar_demo: frames_per_run must be >= 3, got {frames_per_run}")


def write_robotcar_demo(root, seed: int = 0, frames_per_run: int = 40, width: int = 1280, height: int = 960,
                        render_scale: float = 1.0, progress: bool = True) -> dict:
    """Write the two-run (day, night) Oxford RobotCar-format demo root under `root` (files are overwritten).

    Per run: `frames_per_run` stereo/centre Bayer (gbrg) PNGs at 16 Hz, exact label maps
    `labels/<ts>.png` (Cityscapes train ids, undistorted geometry), and vo.csv + lms_front scans
    covering the images +- 5 s. `render_scale` < 1 traces fewer rays and upsamples (`render.render_scaled`).
    Deterministic: the same arguments give byte-identical files.
    Returns a summary holding what rebuilds the geometry (`render.make_scene(scene_seed, length_m)`,
    `render.trajectory(scene, (ts - t0_us) / 1e6, speed, traj_seed)` = world <- ego, and
    `T_ego_vehicle`), the intrinsics, counts and the wall time."""
    from pipeline.progress import progress_bar

    _check_args(width, height, frames_per_run)
    t0 = time.perf_counter()
    root, width, height, frames = os.fspath(root), int(width), int(height), int(frames_per_run)
    intrinsics = _intrinsics(width, height)
    _write_static(root, intrinsics, width, height, K1)
    maps = _raw_maps(intrinsics, width, height, K1)
    plans = [_plan(seed, i, run, night, frames) for i, (run, night) in enumerate(DEMO_RUNS)]
    total = sum(len(p["images"]) + -(-len(p["lms"]) // _LMS_BATCH) for p in plans)
    with progress_bar(total=total, desc="RobotCar demo", unit="step", disable=not progress) as bar:
        runs = [_write_run(root, seed, p, intrinsics, maps, width, height, float(render_scale), bar) for p in plans]
    return {"root": root, "seed": int(seed), "width": width, "height": height,
            "intrinsics": list(intrinsics), "k1": K1, "camera_height": CAMERA_HEIGHT,
            "T_ego_vehicle": _T_ego_vehicle().tolist(), "runs": runs,
            "seconds": round(time.perf_counter() - t0, 2)}
