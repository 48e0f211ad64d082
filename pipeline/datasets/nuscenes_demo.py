"""The nuScenes-format writer of the embedded demo (`write_nuscenes_demo`).

`write_nuscenes_demo` renders six short scenes (real v1.0-mini scene names, so the
devkit's official mini_train / mini_val splits assign them) by day and by night and
writes a nuScenes dataroot that `nuscenes.nuscenes.NuScenes` loads unmodified
(formats/nuscenes.md): 13 JSON tables, CAM_FRONT key frames and sweeps, LIDAR_TOP key
frames (.pcd.bin), map placeholders, plus exact ground truth the real dataset lacks:
`labels/CAM_FRONT/<image basename>.png` (uint8 Cityscapes train ids).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import time
from dataclasses import dataclass

import numpy as np

from pipeline.datasets import render
from pipeline.datasets.images import CropResize, write_jpeg, write_png


@dataclass(frozen=True)
class DemoScene:
    name: str           # a real v1.0-mini scene name
    description: str    # 'night' in description.lower() marks a night scene
    night: bool
    split: str          # the devkit's official split holding `name`
    logfile: str
    location: str


def _scenes(split: str, rows) -> tuple[DemoScene, ...]:
    """DemoScenes of one official split from (name, description, logfile, location) rows."""
    return tuple(DemoScene(name, description, "night" in description.lower(), split, logfile, location)
                 for name, description, logfile, location in rows)


DEMO_SCENES = _scenes("mini_train", (
    ("scene-0061", "Day, parked cars, sidewalk, street lamps", "n015-2018-07-24-11-22-45+0800", "singapore-onenorth"),
    ("scene-0553", "Day, buildings, trees, lane markings", "n008-2018-08-28-16-43-51-0400", "boston-seaport"),
    ("scene-1077", "Night, street lamps, parked cars, lit windows", "n015-2018-11-21-19-38-26+0800",
     "singapore-hollandvillage"),
    ("scene-1094", "Night, buildings, trees, headlights", "n015-2018-11-21-19-58-31+0800", "singapore-hollandvillage"),
)) + _scenes("mini_val", (
    ("scene-0103", "Day, parked cars, trees, traffic sign", "n008-2018-08-01-15-16-36-0400", "boston-seaport"),
    ("scene-0916", "Night, parked cars, sidewalk, street lamps", "n015-2018-10-08-19-52-04+0800",
     "singapore-queenstown"),
))

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
    K = CropResize.resize(CAM_FRONT_SIZE, (width, height)).intrinsics(CAM_FRONT_K)
    return K.astype(np.float32).astype(np.float64)  # rounded through float32, as the demo has always written it


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


# ----------------------------------------------------------------------------- the plan


def _scene_plan(seed: int, index: int, spec: DemoScene, keyframes: int, sweeps: int, copy: int = 0) -> dict:
    """Timestamps (us), geometry parameters and tokens of one demo scene, before rendering. Copy c > 0 of a
    scene (`scene_copies`): its own geometry and tokens (key `name~c`), the same name, 1000 s later per copy."""
    rng = np.random.default_rng([int(seed), index, 11])
    speed = float(rng.uniform(6.0, 10.0))
    sweep_us = KEYFRAME_US // (sweeps + 1)
    start = _logfile_start_us(spec.logfile) + 20_000_000 + index * 1_000_000 + copy * 1_000_000_000
    lidar_ts = [start + 1_000_000 + k * KEYFRAME_US + int(rng.integers(-500, 500)) for k in range(keyframes)]
    cam_key = [ts + int(rng.integers(5_000, 15_000)) for ts in lidar_ts]
    cams = [(cam_key[0] - sweep_us, False, 0)]                  # (timestamp, key?, sample index)
    for k, ts in enumerate(cam_key):
        cams.append((ts, True, k))
        last = k == keyframes - 1
        for j in range(1, (1 if last else sweeps) + 1):
            cams.append((ts + j * sweep_us, False, k if last else k + 1))
    duration = (cams[-1][0] - start) / 1e6
    return dict(spec=spec, index=index, key=spec.name if copy == 0 else f"{spec.name}~{copy}", start_us=start,
                speed=speed,
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
        if any(log["token"] == tok for log in logs):  # a copy of a scene of this log (scene_copies)
            continue
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
    name = plan["key"]
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
    spec, name = plan["spec"], plan["key"]
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
             "name": spec.name, "description": spec.description}
    frames = [("CAM_FRONT", r) for r in cams] + [("LIDAR_TOP", r) for r in lidars]
    return scene, samples, cams + lidars, poses, frames


# ----------------------------------------------------------------------------- rendering


def _render_frame(root, seed, plan, scene, channel, record, K, width, height, render_scale):
    """Render one sample_data record to disk; returns its ego_pose record fields."""
    T_world_ego = _ego_pose(scene, plan, record["timestamp"])
    path = os.path.join(root, record["filename"])
    if channel == "CAM_FRONT":
        T_world_cam = T_world_ego @ pose_matrix(CAM_FRONT_TRANSLATION, CAM_FRONT_ROTATION)
        rng = np.random.default_rng([int(seed), plan["index"], record["timestamp"] % (1 << 31)])
        rgb, _, labels = render.render_scaled(scene, T_world_cam, K, width, height, plan["spec"].night, rng,
                                             render_scale)
        write_jpeg(path, rgb, JPEG_QUALITY)
        base = os.path.basename(record["filename"]).rsplit(".", 1)[0]
        write_png(os.path.join(root, "labels", "CAM_FRONT", base + ".png"), labels)
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
                        width: int = 1600, height: int = 900, render_scale: float = 1.0,
                        progress: bool = True, scene_copies: int = 1) -> dict:
    """Write the six-scene nuScenes-format demo dataroot under `root` (files are overwritten).

    `scene_copies` = c renders each scene c times (copies: own geometry, same name and split; for
    benchmarks/scale.py: more scenes than v1.0-mini's names); 1 = the demo.
    `render_scale` < 1 traces that many fewer rays per side and upsamples (`render.render_scaled`).
    Deterministic: the same arguments give byte-identical files. Returns a summary with
    per-scene `scene_seed`, `length_m`, `speed`, `traj_seed`, `start_us` (to rebuild the
    geometry with `render.make_scene(scene_seed, length_m)`), counts and the wall time."""
    _check_args(width, height, keyframes_per_scene, sweeps_between)
    t0 = time.perf_counter()
    root = os.fspath(root)
    K = camera_intrinsics(int(width), int(height))
    if int(scene_copies) < 1:
        raise ValueError(f"write_nuscenes_demo: scene_copies must be >= 1, got {scene_copies}")
    plans = [_scene_plan(seed, c * len(DEMO_SCENES) + i, s, int(keyframes_per_scene), int(sweeps_between), c)
             for c in range(int(scene_copies)) for i, s in enumerate(DEMO_SCENES)]
    tables = _static_tables(seed, plans)
    tables.update(calibrated_sensor=[], scene=[], sample=[], sample_data=[], ego_pose=[])
    jobs = []
    for plan in plans:
        cal_cam, cal_lidar = _calibrations(seed, plan, tables["sensor"], K)
        log_token = _token(seed, "log", plan["spec"].logfile)
        scene, samples, data, poses, frames = _scene_tables(seed, plan, cal_cam, cal_lidar, log_token,
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
    _render_all(root, seed, jobs, K, int(width), int(height), float(render_scale), progress)
    for m in tables["map"]:
        write_png(os.path.join(root, m["filename"]), np.zeros((64, 64), np.uint8))
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


def _render_all(root, seed, jobs, K, width, height, render_scale, progress):
    """Render every frame (scene geometry built once per scene) and fill in the ego poses."""
    from pipeline.progress import progress_bar

    scenes = {}
    for plan, channel, record, pose in progress_bar(jobs, desc="nuScenes demo", unit="frame", disable=not progress):
        key = plan["index"]
        if key not in scenes:
            scenes = {key: render.make_scene(plan["scene_seed"], plan["length_m"])}
        pose.update(_render_frame(root, seed, plan, scenes[key], channel, record, K, width, height, render_scale))
