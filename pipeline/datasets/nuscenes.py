"""nuScenes through nuscenes-devkit: splits by scene description, CAM_FRONT frame tables, LiDAR GT depth.

Frame ids are CAM_FRONT `sample_data` tokens. Targets of every split are key frames (only they
have LIDAR_TOP sweeps aligned to samples); their t-1/t+1 sources are the adjacent CAM_FRONT
records in the sample_data prev/next chain (sweeps) or the adjacent key frames.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline.datasets.frames import SPLITS, FrameTable, build_table
from pipeline.datasets.images import crop_resize, crop_resize_transform, read_gray
from pipeline.geometry import rasterize_depth

log = logging.getLogger(__name__)

CAMERA = "CAM_FRONT"
LIDAR = "LIDAR_TOP"
TABLES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose",
          "log", "scene", "sample", "sample_data", "sample_annotation", "map")
# official scene lists per version: (train, test). The paper (like md4all) tests on the validation scenes.
VERSION_SPLITS = {"v1.0-mini": ("mini_train", "mini_val"), "v1.0-trainval": ("train", "val")}


def open_nuscenes(root: str | Path, version: str):
    """Load the devkit's NuScenes after checking the folder, with errors that name what is missing."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"nuScenes root not found: {root} (config key datasets.nuscenes.root)")
    table_dir = root / version
    if not table_dir.is_dir():
        raise FileNotFoundError(f"nuScenes version folder not found: {table_dir} "
                                f"(config keys datasets.nuscenes.root / datasets.nuscenes.version)")
    missing = [t for t in TABLES if not (table_dir / f"{t}.json").is_file()]
    if missing:
        raise FileNotFoundError(f"nuScenes tables missing in {table_dir}: {', '.join(t + '.json' for t in missing)}")
    from nuscenes.nuscenes import NuScenes

    return NuScenes(version=version, dataroot=str(root), verbose=False)


def scene_condition(description: str) -> str:
    """'night' | 'rain' | 'day-clear' by case-insensitive substring of the scene description (md4all, RNW)."""
    d = description.lower()
    if "night" in d:
        return "night"
    if "rain" in d:
        return "rain"
    return "day-clear"


def derive_splits(nusc, version: str, day_clear_only: bool = True) -> dict[str, list[str]]:
    """Split name -> CAM_FRONT key-frame sample_data tokens, in scene then time order.

    train/test scenes come from the devkit's official lists for the version; day vs night from the
    scene description. With day_clear_only, rain scenes are left out of the day splits."""
    from nuscenes.utils.splits import create_splits_scenes

    if version not in VERSION_SPLITS:
        raise ValueError(f"no official train/test scene split for nuScenes version {version!r} "
                         f"(known: {sorted(VERSION_SPLITS)}); give datasets.nuscenes.split_files instead")
    official = create_splits_scenes()
    train_names, test_names = (set(official[k]) for k in VERSION_SPLITS[version])
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for scene in sorted(nusc.scene, key=lambda s: s["name"]):
        part = "train" if scene["name"] in train_names else "test" if scene["name"] in test_names else None
        if part is None:
            continue
        cond = scene_condition(scene["description"])
        if cond == "night":
            light = "night"
        elif cond == "day-clear" or not day_clear_only:
            light = "day"
        else:
            continue
        out[f"{part}_{light}"].extend(_scene_keyframes(nusc, scene))
    return out


def _scene_keyframes(nusc, scene) -> list[str]:
    tokens = []
    sample_token = scene["first_sample_token"]
    while sample_token:
        sample = nusc.get("sample", sample_token)
        tokens.append(sample["data"][CAMERA])
        sample_token = sample["next"]
    return tokens


def frame_table(nusc, target_tokens: list[str], neighbours: str = "sweeps") -> FrameTable:
    """Target rows for the given CAM_FRONT tokens plus their t-1/t+1 neighbours.

    neighbours='sweeps': the adjacent records in the CAM_FRONT sample_data chain;
    'keyframes': the CAM_FRONT records of the previous/next sample; 'none': no sources."""
    if neighbours not in ("sweeps", "keyframes", "none"):
        raise ValueError(f"datasets.nuscenes.neighbours must be sweeps, keyframes or none, got {neighbours!r}")
    scene_index = {s["token"]: i for i, s in enumerate(sorted(nusc.scene, key=lambda s: s["name"]))}
    records: dict[str, dict] = {}
    sizes = set()

    def add(token: str) -> dict:
        if token not in records:
            sd = nusc.get("sample_data", token)
            if sd["channel"] != CAMERA:
                raise ValueError(f"frame id {token} is a {sd['channel']} record, expected {CAMERA}")
            cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
            scene_token = nusc.get("sample", sd["sample_token"])["scene_token"]
            sizes.add((sd["width"], sd["height"]))
            records[token] = {"frame_id": token, "source": sd["filename"], "timestamp": sd["timestamp"],
                              "sequence": scene_index[scene_token], "K": np.array(cs["camera_intrinsic"]),
                              "scene": scene_token}
        return records[token]

    for token in target_tokens:
        try:
            rec = add(token)
        except KeyError:
            raise ValueError(f"frame id {token} is not a sample_data token of this nuScenes version") from None
        sd = nusc.get("sample_data", token)
        for side in ("prev", "next"):
            nb = _neighbour(nusc, sd, side, neighbours)
            if nb and nusc.get("sample", nusc.get("sample_data", nb)["sample_token"])["scene_token"] == rec["scene"]:
                add(nb)
                rec[f"{side}_id"] = nb
    if len(sizes) > 1:
        raise ValueError(f"CAM_FRONT images of different sizes in one split: {sorted(sizes)}")
    size = sizes.pop() if sizes else (1600, 900)
    return build_table(list(records.values()), set(target_tokens), size)


def _neighbour(nusc, sd: dict, side: str, mode: str) -> str:
    if mode == "none":
        return ""
    if mode == "sweeps":
        return sd[side]
    sample = nusc.get("sample", sd["sample_token"])
    other = sample[side]
    return nusc.get("sample", other)["data"][CAMERA] if other else ""


def lidar_depth(nusc, cam_token: str, crop, size: tuple[int, int], min_dist: float = 1.0) -> np.ndarray:
    """LIDAR_TOP of the camera's sample projected into the camera by the devkit, rasterised at `size`
    after the frames' crop: col = floor(u' + 0.5), row = floor(v' + 0.5), nearest depth, 0 = none."""
    sd = nusc.get("sample_data", cam_token)
    if not sd["is_key_frame"]:
        raise ValueError(f"frame {cam_token} is not a key frame: only key frames have LIDAR_TOP ground truth")
    lidar_token = nusc.get("sample", sd["sample_token"])["data"][LIDAR]
    points, depth, _ = nusc.explorer.map_pointcloud_to_image(lidar_token, cam_token, min_dist=min_dist)
    sx, sy, left, top = crop_resize_transform(crop, (sd["width"], sd["height"]), size)
    u = (points[0] - left + 0.5) * sx - 0.5
    v = (points[1] - top + 0.5) * sy - 0.5
    return rasterize_depth(u, v, depth, size[1], size[0])


def label_path(root: str | Path, source: str) -> Path:
    """Where a label map for a camera image lives: <root>/labels/<CHANNEL>/<basename>.png (the demo writes
    them; a user can put ground-truth Cityscapes train-id maps there too)."""
    p = Path(source)
    return Path(root) / "labels" / p.parent.name / (p.stem + ".png")


def read_label(root: str | Path, source: str, crop, size: tuple[int, int]) -> np.ndarray | None:
    path = label_path(root, source)
    if not path.exists():
        return None
    return crop_resize(read_gray(path), crop, size, nearest=True)
