"""Writers of the embedded demo datasets in the real on-disk formats.

`write_nuscenes_demo` renders six short scenes (real v1.0-mini scene names, so the
devkit's official mini_train / mini_val splits assign them) by day and by night and
writes a nuScenes dataroot that `nuscenes.nuscenes.NuScenes` loads unmodified
(formats/nuscenes.md): 13 JSON tables, CAM_FRONT key frames and sweeps, LIDAR_TOP key
frames (.pcd.bin), map placeholders, plus exact ground truth the real dataset lacks:
`labels/CAM_FRONT/<image basename>.png` (uint8 Cityscapes train ids).

`write_robotcar_demo` renders a day run and a night run in the Oxford RobotCar format
(formats/robotcar.md): gbrg Bayer PNGs at 1280x960 through a mild radial distortion with its
undistortion LUT, stereo.timestamps, vo/vo.csv, 50 Hz lms_front push-broom scans, models/ and
extrinsics/, plus `<run>/labels/<ts>.png` in the undistorted geometry.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import time
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.datasets import render
from pipeline.geometry import scale_intrinsics


@dataclass(frozen=True)
class DemoScene:
    name: str           # a real v1.0-mini scene name
    description: str    # 'night' in description.lower() marks a night scene
    night: bool
    split: str          # the devkit's official split holding `name`
    logfile: str
    location: str


NUSCENES_DEMO_SCENES = (
    DemoScene("scene-0061", "Day, parked cars, sidewalk, street lamps", False, "mini_train",
              "n015-2018-07-24-11-22-45+0800", "singapore-onenorth"),
    DemoScene("scene-0553", "Day, buildings, trees, lane markings", False, "mini_train",
              "n008-2018-08-28-16-43-51-0400", "boston-seaport"),
    DemoScene("scene-1077", "Night, street lamps, parked cars, lit windows", True, "mini_train",
              "n015-2018-11-21-19-38-26+0800", "singapore-hollandvillage"),
    DemoScene("scene-1094", "Night, buildings, trees, headlights", True, "mini_train",
              "n015-2018-11-21-19-58-31+0800", "singapore-hollandvillage"),
    DemoScene("scene-0103", "Day, parked cars, trees, traffic sign", False, "mini_val",
              "n008-2018-08-01-15-16-36-0400", "boston-seaport"),
    DemoScene("scene-0916", "Night, parked cars, sidewalk, street lamps", True, "mini_val",
              "n015-2018-10-08-19-52-04+0800", "singapore-queenstown"),
)

VERSION = "v1.0-mini"
# Calibrations of the real v1.0-mini CAM_FRONT (at 1600x900) and LIDAR_TOP (sensor -> ego).
CAM_FRONT_K = np.array([[1266.417203046554, 0.0, 816.2670197447984],
                        [0.0, 1266.417203046554, 491.50706579294757],
                        [0.0, 0.0, 1.0]])
CAM_FRONT_SIZE = (1600, 900)
CAM_FRONT_TRANSLATION = [1.70079118954, 0.0159456324149, 1.51095763913]
CAM_FRONT_ROTATION = [0.4998015430569128, -0.5030316162024876, 0.4997798114386805, -0.49737083824542755]
LIDAR_TOP_TRANSLATION = [0.985793, 0.0, 1.84019]
LIDAR_TOP_ROTATION = [0.706749235646644, -0.015300993788500868, 0.01739745181256607, -0.7070846669051719]
LIDAR_RINGS = np.linspace(-30.0, 10.0, 32)      # elevation (deg) of rings 0..31
LIDAR_AZIMUTH_STEP = 0.4                       # deg
LIDAR_MAX_RANGE = 70.0                         # m
KEYFRAME_US = 500_000                          # 2 Hz samples
JPEG_QUALITY = 90

_CATEGORIES = (
    ("vehicle.car", "Vehicle designed primarily for personal use, e.g. sedans, hatch-backs, wagons, vans, "
                    "mini-vans, SUVs and jeeps."),
    ("human.pedestrian.adult", "Adult subcategory."),
    ("movable_object.trafficcone", "All types of traffic cone."),
    ("static_object.bicycle_rack", "Area or device intended to park or secure the bicycles in a row."),
)
_ATTRIBUTES = (
    ("vehicle.parked", "Vehicle is stationary (usually for longer duration) with no immediate intent to move."),
    ("vehicle.moving", "Vehicle is moving."),
    ("vehicle.stopped", "Vehicle, with a driver/rider in/on it, is currently stationary but has an intent to move."),
    ("pedestrian.moving", "The human is moving."),
)
_VISIBILITY = (("1", "v0-40", "visibility of whole object is between 0 and 40%"),
               ("2", "v40-60", "visibility of whole object is between 40 and 60%"),
               ("3", "v60-80", "visibility of whole object is between 60 and 80%"),
               ("4", "v80-100", "visibility of whole object is between 80 and 100%"))


# ----------------------------------------------------------------------------- small helpers


def _token(seed: int, *parts) -> str:
    """Deterministic 32-hex token."""
    return hashlib.md5("/".join(str(p) for p in (seed,) + parts).encode()).hexdigest()


def quaternion_to_matrix(q) -> np.ndarray:
    """3x3 rotation of a quaternion [w, x, y, z] (normalised first, as pyquaternion does)."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def pose_matrix(translation, rotation) -> np.ndarray:
    """4x4 transform from a nuScenes translation [x, y, z] and rotation [w, x, y, z]."""
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix(rotation)
    T[:3, 3] = translation
    return T


def _yaw_quaternion(T) -> list[float]:
    yaw = float(np.arctan2(T[1, 0], T[0, 0]))
    return [float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2))]


def _logfile_start_us(logfile: str) -> int:
    """UNIX microseconds of a logfile name such as n015-2018-07-24-11-22-45+0800."""
    stamp = logfile.split("-", 1)[1]
    return int(_dt.datetime.strptime(stamp, "%Y-%m-%d-%H-%M-%S%z").timestamp()) * 1_000_000


def camera_intrinsics(width: int, height: int) -> np.ndarray:
    """CAM_FRONT K for an image of width x height (the real K scaled from 1600x900)."""
    if (width, height) == CAM_FRONT_SIZE:
        return CAM_FRONT_K.copy()
    K = scale_intrinsics(CAM_FRONT_K, width / CAM_FRONT_SIZE[0], height / CAM_FRONT_SIZE[1])
    return K.astype(np.float64)


def lidar_beams() -> tuple[np.ndarray, np.ndarray]:
    """Unit beam directions (N, 3) in the LIDAR_TOP frame (x right, y forward, z up) and ring ids."""
    az = np.deg2rad(np.arange(0.0, 360.0, LIDAR_AZIMUTH_STEP))
    el = np.deg2rad(LIDAR_RINGS)
    A, E = np.meshgrid(az, el, indexing="ij")          # azimuth-major, like a spinning scan
    dirs = np.stack([np.cos(E) * np.sin(A), np.cos(E) * np.cos(A), np.sin(E)], -1).reshape(-1, 3)
    rings = np.broadcast_to(np.arange(len(el)), A.shape).reshape(-1)
    return dirs, rings


def lidar_scan(scene: render.Scene, T_world_lidar) -> np.ndarray:
    """One LIDAR_TOP sweep as float32 (N, 5): x, y, z (lidar frame), intensity 0-255, ring."""
    T = np.asarray(T_world_lidar, dtype=np.float64)
    dirs, rings = lidar_beams()
    world_dirs = dirs @ T[:3, :3].T
    origins = np.broadcast_to(T[:3, 3], dirs.shape)
    t, labels = render.cast_rays(scene, origins, world_dirs, max_dist=LIDAR_MAX_RANGE)
    ok = np.isfinite(t) & (t >= 1.0)
    t, labels, dirs, rings = t[ok].astype(np.float64), labels[ok], dirs[ok], rings[ok]
    world = T[:3, 3] + world_dirs[ok] * t[:, None]
    intensity = np.round(render.reflectivity(scene, world, labels) * 255.0)
    return np.column_stack([dirs * t[:, None], intensity, rings]).astype(np.float32)


def _write_jpeg(path, rgb):
    ok = cv2.imwrite(path, np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError(f"could not write {path}")


def _write_png(path, img):
    if not cv2.imwrite(path, img):
        raise OSError(f"could not write {path}")


# ----------------------------------------------------------------------------- the plan


def _scene_plan(seed: int, index: int, spec: DemoScene, keyframes: int, sweeps: int) -> dict:
    """Timestamps (us), geometry parameters and tokens of one demo scene, before rendering."""
    rng = np.random.default_rng([int(seed), index, 11])
    speed = float(rng.uniform(6.0, 10.0))
    sweep_us = KEYFRAME_US // (sweeps + 1)
    start = _logfile_start_us(spec.logfile) + 20_000_000 + index * 1_000_000
    lidar_ts = [start + 1_000_000 + k * KEYFRAME_US + int(rng.integers(-500, 500)) for k in range(keyframes)]
    cam_key = [ts + int(rng.integers(5_000, 15_000)) for ts in lidar_ts]
    cams = [(cam_key[0] - sweep_us, False, 0)]                  # (timestamp, key?, sample index)
    for k, ts in enumerate(cam_key):
        cams.append((ts, True, k))
        last = k == keyframes - 1
        for j in range(1, (1 if last else sweeps) + 1):
            cams.append((ts + j * sweep_us, False, k if last else k + 1))
    duration = (cams[-1][0] - start) / 1e6
    return dict(spec=spec, index=index, start_us=start, speed=speed,
                scene_seed=int(np.random.SeedSequence([int(seed), index, 12]).generate_state(1)[0]),
                traj_seed=int(np.random.SeedSequence([int(seed), index, 13]).generate_state(1)[0]),
                length_m=round(speed * duration + 130.0, 3), lidar_ts=lidar_ts, cams=cams)


def _ego_pose(scene, plan, ts):
    """world <- ego at timestamp ts (us), from the scene's closed-form trajectory."""
    return render.trajectory(scene, [(ts - plan["start_us"]) / 1e6], plan["speed"], plan["traj_seed"])[0]


# ----------------------------------------------------------------------------- tables


def _static_tables(seed, plans):
    """sensor, category, attribute, visibility, log, map, instance, sample_annotation."""
    sensors = [{"token": _token(seed, "sensor", ch), "channel": ch, "modality": mod}
               for ch, mod in (("CAM_FRONT", "camera"), ("LIDAR_TOP", "lidar"))]
    cats = [{"token": _token(seed, "category", n), "name": n, "description": d} for n, d in _CATEGORIES]
    attrs = [{"token": _token(seed, "attribute", n), "name": n, "description": d} for n, d in _ATTRIBUTES]
    vis = [{"token": t, "level": lv, "description": d} for t, lv, d in _VISIBILITY]
    logs, maps = [], {}
    for p in plans:
        spec = p["spec"]
        tok = _token(seed, "log", spec.logfile)
        date = spec.logfile.split("-", 1)[1][:10]
        logs.append({"token": tok, "logfile": spec.logfile, "vehicle": spec.logfile.split("-")[0],
                     "date_captured": date, "location": spec.location})
        maps.setdefault(spec.location, []).append(tok)
    map_records = []
    for loc, log_tokens in maps.items():
        tok = _token(seed, "map", loc)
        map_records.append({"token": tok, "log_tokens": log_tokens, "category": "semantic_prior",
                            "filename": f"maps/{tok}.png"})
    return {"sensor": sensors, "category": cats, "attribute": attrs, "visibility": vis, "log": logs,
            "map": map_records, "instance": [], "sample_annotation": []}


def _calibrations(seed, plan, sensors, K):
    name = plan["spec"].name
    cam = {"token": _token(seed, "calib", name, "CAM_FRONT"), "sensor_token": sensors[0]["token"],
           "translation": CAM_FRONT_TRANSLATION, "rotation": CAM_FRONT_ROTATION,
           "camera_intrinsic": K.tolist()}
    lidar = {"token": _token(seed, "calib", name, "LIDAR_TOP"), "sensor_token": sensors[1]["token"],
             "translation": LIDAR_TOP_TRANSLATION, "rotation": LIDAR_TOP_ROTATION, "camera_intrinsic": []}
    return cam, lidar


def _link(records):
    """Chain records (in time order) by prev/next tokens."""
    for a, b in zip(records, records[1:]):
        a["next"], b["prev"] = b["token"], a["token"]
    return records


def _scene_tables(seed, plan, cal_cam, cal_lidar, log_token, width, height):
    """scene, sample, sample_data and ego_pose records of one scene, plus the frames to render."""
    spec, name = plan["spec"], plan["spec"].name
    samples = _link([{"token": _token(seed, "sample", name, k), "timestamp": ts,
                      "prev": "", "next": "", "scene_token": _token(seed, "scene", name)}
                     for k, ts in enumerate(plan["lidar_ts"])])
    poses, frames = [], []

    def data_record(channel, ts, key, k, cal, ext):
        folder = "samples" if key else "sweeps"
        tok = _token(seed, "sample_data", name, channel, ts)
        poses.append({"token": tok, "timestamp": ts})
        return {"token": tok, "sample_token": samples[k]["token"], "ego_pose_token": tok,
                "calibrated_sensor_token": cal["token"], "timestamp": ts,
                "fileformat": "jpg" if channel == "CAM_FRONT" else "pcd", "is_key_frame": key,
                "height": height if channel == "CAM_FRONT" else 0,
                "width": width if channel == "CAM_FRONT" else 0,
                "filename": f"{folder}/{channel}/{spec.logfile}__{channel}__{ts}.{ext}",
                "prev": "", "next": ""}

    cams = _link([data_record("CAM_FRONT", ts, key, k, cal_cam, "jpg") for ts, key, k in plan["cams"]])
    lidars = _link([data_record("LIDAR_TOP", ts, True, k, cal_lidar, "pcd.bin")
                    for k, ts in enumerate(plan["lidar_ts"])])
    scene = {"token": _token(seed, "scene", name), "log_token": log_token, "nbr_samples": len(samples),
             "first_sample_token": samples[0]["token"], "last_sample_token": samples[-1]["token"],
             "name": name, "description": spec.description}
    frames = [("CAM_FRONT", r) for r in cams] + [("LIDAR_TOP", r) for r in lidars]
    return scene, samples, cams + lidars, poses, frames


# ----------------------------------------------------------------------------- rendering


def _render_frame(root, seed, plan, scene, channel, record, K, width, height):
    """Render one sample_data record to disk; returns its ego_pose record fields."""
    T_world_ego = _ego_pose(scene, plan, record["timestamp"])
    path = os.path.join(root, record["filename"])
    if channel == "CAM_FRONT":
        T_world_cam = T_world_ego @ pose_matrix(CAM_FRONT_TRANSLATION, CAM_FRONT_ROTATION)
        rng = np.random.default_rng([int(seed), plan["index"], record["timestamp"] % (1 << 31)])
        rgb, _, labels = render.render(scene, T_world_cam, K, width, height, plan["spec"].night, rng)
        _write_jpeg(path, rgb)
        base = os.path.basename(record["filename"]).rsplit(".", 1)[0]
        _write_png(os.path.join(root, "labels", "CAM_FRONT", base + ".png"), labels)
    else:
        T_world_lidar = T_world_ego @ pose_matrix(LIDAR_TOP_TRANSLATION, LIDAR_TOP_ROTATION)
        lidar_scan(scene, T_world_lidar).tofile(path)
    return {"translation": [float(T_world_ego[0, 3]), float(T_world_ego[1, 3]), 0.0],
            "rotation": _yaw_quaternion(T_world_ego)}


def _check_args(width, height, keyframes_per_scene, sweeps_between):
    if int(width) < 16 or int(height) < 16:
        raise ValueError(f"write_nuscenes_demo: width/height must be >= 16, got {width}x{height}")
    if int(keyframes_per_scene) < 1:
        raise ValueError(f"write_nuscenes_demo: keyframes_per_scene must be >= 1, got {keyframes_per_scene}")
    if int(sweeps_between) < 0:
        raise ValueError(f"write_nuscenes_demo: sweeps_between must be >= 0, got {sweeps_between}")


def write_nuscenes_demo(root, seed: int = 0, keyframes_per_scene: int = 8, sweeps_between: int = 2,
                        width: int = 1600, height: int = 900, progress: bool = True) -> dict:
    """Write the six-scene nuScenes-format demo dataroot under `root` (files are overwritten).

    Deterministic: the same arguments give byte-identical files. Returns a summary with
    per-scene `scene_seed`, `length_m`, `speed`, `traj_seed`, `start_us` (to rebuild the
    geometry with `render.make_scene(scene_seed, length_m)`), counts and the wall time."""
    _check_args(width, height, keyframes_per_scene, sweeps_between)
    t0 = time.perf_counter()
    root = os.fspath(root)
    K = camera_intrinsics(int(width), int(height))
    plans = [_scene_plan(seed, i, s, int(keyframes_per_scene), int(sweeps_between))
             for i, s in enumerate(NUSCENES_DEMO_SCENES)]
    tables = _static_tables(seed, plans)
    tables.update(calibrated_sensor=[], scene=[], sample=[], sample_data=[], ego_pose=[])
    jobs = []
    for plan, log in zip(plans, tables["log"]):
        cal_cam, cal_lidar = _calibrations(seed, plan, tables["sensor"], K)
        scene, samples, data, poses, frames = _scene_tables(seed, plan, cal_cam, cal_lidar, log["token"],
                                                            int(width), int(height))
        tables["calibrated_sensor"] += [cal_cam, cal_lidar]
        tables["scene"].append(scene)
        tables["sample"] += samples
        tables["sample_data"] += data
        tables["ego_pose"] += poses
        jobs += [(plan, ch, rec, pose) for (ch, rec), pose in zip(frames, poses)]
    for sub in ("samples/CAM_FRONT", "sweeps/CAM_FRONT", "samples/LIDAR_TOP", "labels/CAM_FRONT", "maps",
                VERSION):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    _render_all(root, seed, jobs, K, int(width), int(height), progress)
    for m in tables["map"]:
        _write_png(os.path.join(root, m["filename"]), np.zeros((64, 64), np.uint8))
    for name, records in tables.items():
        with open(os.path.join(root, VERSION, f"{name}.json"), "w") as f:
            json.dump(records, f, indent=0)
    cams = [r for r in tables["sample_data"] if r["fileformat"] == "jpg"]
    return {
        "root": root, "version": VERSION, "seed": int(seed), "width": int(width), "height": int(height),
        "scenes": [{"name": p["spec"].name, "description": p["spec"].description, "night": p["spec"].night,
                    "split": p["spec"].split, "scene_seed": p["scene_seed"], "length_m": p["length_m"],
                    "speed": p["speed"], "traj_seed": p["traj_seed"], "start_us": p["start_us"]}
                   for p in plans],
        "n_samples": len(tables["sample"]),
        "n_cam_keyframes": sum(r["is_key_frame"] for r in cams),
        "n_cam_sweeps": sum(not r["is_key_frame"] for r in cams),
        "n_lidar": len(tables["sample_data"]) - len(cams),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _render_all(root, seed, jobs, K, width, height, progress):
    """Render every frame (scene geometry built once per scene) and fill in the ego poses."""
    from tqdm import tqdm

    scenes = {}
    for plan, channel, record, pose in tqdm(jobs, desc="nuScenes demo", unit="frame", disable=not progress):
        key = plan["index"]
        if key not in scenes:
            scenes = {key: render.make_scene(plan["scene_seed"], plan["length_m"])}
        pose.update(_render_frame(root, seed, plan, scenes[key], channel, record, K, width, height))


# ============================================================================= Oxford RobotCar
# `write_robotcar_demo` writes a RobotCar-format root (formats/robotcar.md) that
# `pipeline.datasets.robotcar` reads: the stereo_narrow_left model (scaled K, a mild radial
# distortion LUT), the stereo and lms_front extrinsics, and one day and one night run with
# Bayer PNGs, vo.csv, push-broom lms_front scans and exact label maps.
#
# Frames. Renderer ego: x forward, y left, z up, on the ground. RobotCar vehicle frame = stereo
# camera frame: x forward, y right, z down, at the camera (ROBOTCAR_CAMERA_HEIGHT above the
# ground, above the ego origin). Optical frame (x right, y down, z forward) = G_camera_image.

ROBOTCAR_DEMO_RUNS = (("2014-12-09-13-21-02", False), ("2014-12-16-18-44-24", True))  # (run, night)
STEREO_NARROW_LEFT = (964.828979, 964.828979, 643.788025, 484.407990)                # fx fy cx cy at 1280x960
STEREO_SIZE = (1280, 960)
G_CAMERA_IMAGE = np.array([[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
LMS_FRONT_EXTRINSICS = (1.7589, 0.2268, 1.0411, -0.0437, -1.4572, 0.0356)
ROBOTCAR_CAMERA_HEIGHT = 1.5      # m above the ground
ROBOTCAR_K1 = -0.05               # radial distortion on normalised coordinates (barrel)
STEREO_PERIOD_US = 62_500         # 16 Hz
LMS_PERIOD_US = 20_000            # 50 Hz
LMS_BEAMS = 541                   # 270 deg at 0.5 deg
LMS_MIN_RANGE, LMS_MAX_RANGE = 0.5, 50.0
POSE_MARGIN_US = 5_000_000        # VO and LMS cover the images +- 5 s (splits use +- 4 s windows)
_LMS_BATCH = 50                   # scans per cast_rays call


def _rc_run_start_us(run: str) -> int:
    """UNIX microseconds of a run name such as 2014-12-09-13-21-02 (UK local = UTC in winter)."""
    stamp = _dt.datetime.strptime(run, "%Y-%m-%d-%H-%M-%S").replace(tzinfo=_dt.timezone.utc)
    return int(stamp.timestamp()) * 1_000_000


def _rc_intrinsics(width: int, height: int) -> tuple[float, float, float, float]:
    """stereo_narrow_left (fx, fy, cx, cy) scaled to width x height (pixel-centre convention),
    rounded to the 6 decimals the model file holds."""
    fx, fy, cx, cy = STEREO_NARROW_LEFT
    sx, sy = width / STEREO_SIZE[0], height / STEREO_SIZE[1]
    return (round(fx * sx, 6), round(fy * sy, 6), round((cx + 0.5) * sx - 0.5, 6), round((cy + 0.5) * sy - 0.5, 6))


def _rc_K(intrinsics, shift=(0.0, 0.0)) -> np.ndarray:
    fx, fy, cx, cy = intrinsics
    return np.array([[fx, 0.0, cx + shift[0]], [0.0, fy, cy + shift[1]], [0.0, 0.0, 1.0]])


def _rc_distortion_lut(intrinsics, width: int, height: int, k1: float) -> np.ndarray:
    """(2, H, W) float64: for each undistorted pixel, the (x, y) to sample in the raw image:
    distorted = undistorted * (1 + k1 r^2) on normalised coordinates."""
    fx, fy, cx, cy = intrinsics
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    x, y = (u - cx) / fx, (v - cy) / fy
    f = 1.0 + k1 * (x * x + y * y)
    return np.stack([fx * x * f + cx, fy * y * f + cy])


def _rc_undistort_points(ud, vd, intrinsics, k1: float, iterations: int = 20):
    """Inverse of the LUT's radial model: undistorted pixel (u, v) of raw pixels (ud, vd),
    by fixed-point iteration x = xd / (1 + k1 r(x)^2) (a contraction for mild k1)."""
    fx, fy, cx, cy = intrinsics
    xd, yd = (np.asarray(ud, np.float64) - cx) / fx, (np.asarray(vd, np.float64) - cy) / fy
    x, y = xd.copy(), yd.copy()
    for _ in range(iterations):
        f = 1.0 + k1 * (x * x + y * y)
        x, y = xd / f, yd / f
    return fx * x + cx, fy * y + cy


def _rc_raw_maps(intrinsics, width: int, height: int, k1: float):
    """cv2.remap maps (float32 (H, W) each) from the raw image into a pinhole render enlarged by
    (mx, my) pixels on each side, and the margins (mx, my)."""
    vd, ud = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = _rc_undistort_points(ud, vd, intrinsics, k1)
    mx = int(np.ceil(max(-u.min(), u.max() - (width - 1), 0.0))) + 2
    my = int(np.ceil(max(-v.min(), v.max() - (height - 1), 0.0))) + 2
    return (u + mx).astype(np.float32), (v + my).astype(np.float32), (mx, my)


def _rc_bayer_gbrg(rgb: np.ndarray) -> np.ndarray:
    """8-bit gbrg mosaic of an RGB image: row 0 = G B G B ..., row 1 = R G R G ...."""
    raw = np.ascontiguousarray(rgb[..., 1])
    raw[0::2, 1::2] = rgb[0::2, 1::2, 2]
    raw[1::2, 0::2] = rgb[1::2, 0::2, 0]
    return raw


def _rc_T_ego_vehicle(camera_height: float = ROBOTCAR_CAMERA_HEIGHT) -> np.ndarray:
    """Renderer ego (x fwd, y left, z up) <- RobotCar vehicle = camera (x fwd, y right, z down)."""
    T = np.diag([1.0, -1.0, -1.0, 1.0])
    T[2, 3] = camera_height
    return T


def _rc_lms_directions() -> tuple[np.ndarray, np.ndarray]:
    """Beam angles (rad, -135..135 deg) and unit directions (N, 3) in the laser frame (z = 0)."""
    a = np.deg2rad(np.linspace(-135.0, 135.0, LMS_BEAMS))
    return a, np.stack([np.cos(a), np.sin(a), np.zeros_like(a)], 1)


def _rc_plan(seed: int, index: int, run: str, night: bool, frames: int) -> dict:
    """Timestamps (us), trajectory and scene parameters of one run, before rendering.

    Stereo at 16 Hz (+-300 us jitter) over the images +- POSE_MARGIN_US (images are the middle
    `frames`), lms_front at 50 Hz inside the stereo span."""
    rng = np.random.default_rng([int(seed), index, 21])
    pad = -(-POSE_MARGIN_US // STEREO_PERIOD_US)
    n = frames + 2 * pad
    start = _rc_run_start_us(run) + 2_000_000 + int(rng.integers(0, STEREO_PERIOD_US))
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


def _rc_world_vehicle(scene, plan, ts) -> np.ndarray:
    """world <- vehicle (N, 4, 4) at timestamps ts (us)."""
    times = (np.asarray(ts, dtype=np.int64) - plan["t0_us"]) / 1e6
    ego = render.trajectory(scene, times, plan["speed"], plan["traj_seed"])
    return np.stack(ego) @ _rc_T_ego_vehicle()


def _rc_vo_text(stereo_ts, poses) -> str:
    """vo.csv: one row per consecutive pair; source = later, destination = earlier; x..yaw of
    inv(P_dst) @ P_src (the source pose in the destination vehicle frame)."""
    from pipeline.datasets.robotcar import VO_HEADER, se3_to_xyzrpy

    lines = [VO_HEADER]
    for k in range(1, len(stereo_ts)):
        rel = se3_to_xyzrpy(np.linalg.inv(poses[k - 1]) @ poses[k])
        values = ",".join(repr(float(v) + 0.0) for v in rel)           # + 0.0 turns -0.0 into 0.0
        lines.append(f"{stereo_ts[k]},{stereo_ts[k - 1]},{values}")
    return "\n".join(lines) + "\n"


def _rc_lms_scans(scene, world_vehicle, T_vehicle_lms) -> list[np.ndarray]:
    """One (n, 3) float64 (x, y, reflectance) array per vehicle pose: 541 beams in the laser
    plane cast into the scene; misses and ranges outside [LMS_MIN_RANGE, LMS_MAX_RANGE] dropped."""
    angles, dirs = _rc_lms_directions()
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


def _rc_write_static(root: str, intrinsics, width: int, height: int, k1: float) -> None:
    """models/stereo_narrow_left{.txt,_distortion_lut.bin} and extrinsics/{stereo,lms_front}.txt."""
    os.makedirs(os.path.join(root, "models"), exist_ok=True)
    os.makedirs(os.path.join(root, "extrinsics"), exist_ok=True)
    rows = "\n".join(" ".join(f"{v:f}" for v in row) for row in G_CAMERA_IMAGE)
    with open(os.path.join(root, "models", "stereo_narrow_left.txt"), "w") as f:
        f.write(" ".join(f"{v:f}" for v in intrinsics) + "\n" + rows + "\n")
    lut = _rc_distortion_lut(intrinsics, width, height, k1)
    lut.astype("<f8").tofile(os.path.join(root, "models", "stereo_narrow_left_distortion_lut.bin"))
    with open(os.path.join(root, "extrinsics", "stereo.txt"), "w") as f:
        f.write("0 0 0 0 0 0\n")
    with open(os.path.join(root, "extrinsics", "lms_front.txt"), "w") as f:
        f.write(" ".join(str(v) for v in LMS_FRONT_EXTRINSICS) + "\n")


def _rc_write_timestamps(path: str, stamps) -> None:
    with open(path, "w") as f:
        f.write("".join(f"{int(t)} 1\n" for t in stamps))


def _rc_render_image(root, seed, plan, scene, pose, ts, intrinsics, maps, width, height) -> None:
    """Render the enlarged pinhole view once: its centre is the label map (undistorted geometry),
    its (bicubic) remap through the inverse distortion is the raw image, stored as a gbrg mosaic."""
    map_x, map_y, (mx, my) = maps
    K_big = _rc_K(intrinsics, (mx, my))
    rng = np.random.default_rng([int(seed), plan["index"], int(ts) % (1 << 31)])
    rgb, _, labels = render.render(scene, pose @ G_CAMERA_IMAGE, K_big, width + 2 * mx, height + 2 * my,
                                   plan["night"], rng)
    raw_rgb = cv2.remap(rgb, map_x, map_y, interpolation=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    run_dir = os.path.join(root, plan["run"])
    _write_png(os.path.join(run_dir, "stereo", "centre", f"{ts}.png"), _rc_bayer_gbrg(raw_rgb))
    labels = np.ascontiguousarray(labels[my:my + height, mx:mx + width])
    _write_png(os.path.join(run_dir, "labels", f"{ts}.png"), labels)


def _rc_write_run(root, seed, plan, intrinsics, maps, width, height, bar) -> dict:
    """Everything of one run: timestamps, images and labels, vo.csv, lms_front scans."""
    from pipeline.datasets.robotcar import build_se3_transform

    run_dir = os.path.join(root, plan["run"])
    for sub in ("stereo/centre", "labels", "vo", "lms_front"):
        os.makedirs(os.path.join(run_dir, sub), exist_ok=True)
    scene = render.make_scene(plan["scene_seed"], plan["length_m"])
    _rc_write_timestamps(os.path.join(run_dir, "stereo.timestamps"), plan["images"])
    _rc_write_timestamps(os.path.join(run_dir, "lms_front.timestamps"), plan["lms"])
    stereo_poses = _rc_world_vehicle(scene, plan, plan["stereo"])
    with open(os.path.join(run_dir, "vo", "vo.csv"), "w") as f:
        f.write(_rc_vo_text(plan["stereo"].tolist(), stereo_poses))
    for ts, pose in zip(plan["images"].tolist(), _rc_world_vehicle(scene, plan, plan["images"])):
        _rc_render_image(root, seed, plan, scene, pose, ts, intrinsics, maps, width, height)
        bar.update(1)
    T_lms = build_se3_transform(LMS_FRONT_EXTRINSICS)
    n_points = 0
    for b in range(0, len(plan["lms"]), _LMS_BATCH):
        stamps = plan["lms"][b:b + _LMS_BATCH]
        for ts, scan in zip(stamps.tolist(), _rc_lms_scans(scene, _rc_world_vehicle(scene, plan, stamps), T_lms)):
            scan.astype("<f8").tofile(os.path.join(run_dir, "lms_front", f"{ts}.bin"))
            n_points += len(scan)
        bar.update(1)
    return {"run": plan["run"], "night": plan["night"], "scene_seed": plan["scene_seed"],
            "length_m": plan["length_m"], "speed": plan["speed"], "traj_seed": plan["traj_seed"],
            "t0_us": plan["t0_us"], "n_frames": len(plan["images"]), "first_frame_us": int(plan["images"][0]),
            "last_frame_us": int(plan["images"][-1]), "n_vo_rows": len(plan["stereo"]) - 1,
            "n_lms_scans": len(plan["lms"]), "n_lms_points": n_points}


def _rc_check_args(width, height, frames_per_run):
    if int(width) < 16 or int(height) < 16 or int(width) % 2 or int(height) % 2:
        raise ValueError(f"write_robotcar_demo: width/height must be even and >= 16 (Bayer 2x2), got {width}x{height}")
    if int(frames_per_run) < 3:
        raise ValueError(f"write_robotcar_demo: frames_per_run must be >= 3, got {frames_per_run}")


def write_robotcar_demo(root, seed: int = 0, frames_per_run: int = 40, width: int = 1280, height: int = 960,
                        progress: bool = True) -> dict:
    """Write the two-run (day, night) Oxford RobotCar-format demo root under `root` (files are overwritten).

    Per run: `frames_per_run` stereo/centre Bayer (gbrg) PNGs at 16 Hz, exact label maps
    `labels/<ts>.png` (Cityscapes train ids, undistorted geometry), and vo.csv + lms_front scans
    covering the images +- 5 s. Deterministic: the same arguments give byte-identical files.
    Returns a summary holding what rebuilds the geometry (`render.make_scene(scene_seed, length_m)`,
    `render.trajectory(scene, (ts - t0_us) / 1e6, speed, traj_seed)` = world <- ego, and
    `T_ego_vehicle`), the intrinsics, counts and the wall time."""
    from tqdm import tqdm

    _rc_check_args(width, height, frames_per_run)
    t0 = time.perf_counter()
    root, width, height, frames = os.fspath(root), int(width), int(height), int(frames_per_run)
    intrinsics = _rc_intrinsics(width, height)
    _rc_write_static(root, intrinsics, width, height, ROBOTCAR_K1)
    maps = _rc_raw_maps(intrinsics, width, height, ROBOTCAR_K1)
    plans = [_rc_plan(seed, i, run, night, frames) for i, (run, night) in enumerate(ROBOTCAR_DEMO_RUNS)]
    total = sum(len(p["images"]) + -(-len(p["lms"]) // _LMS_BATCH) for p in plans)
    with tqdm(total=total, desc="RobotCar demo", unit="step", disable=not progress) as bar:
        runs = [_rc_write_run(root, seed, p, intrinsics, maps, width, height, bar) for p in plans]
    return {"root": root, "seed": int(seed), "width": width, "height": height,
            "intrinsics": list(intrinsics), "k1": ROBOTCAR_K1, "camera_height": ROBOTCAR_CAMERA_HEIGHT,
            "T_ego_vehicle": _rc_T_ego_vehicle().tolist(), "runs": runs,
            "seconds": round(time.perf_counter() - t0, 2)}
