"""nuScenes through nuscenes-devkit (the `Dataset` adapter `NuScenes`): splits by scene description,
CAM_FRONT frame tables, LiDAR GT depth.

Frame ids are CAM_FRONT `sample_data` tokens. Targets of every split are key frames (only they
have LIDAR_TOP sweeps aligned to samples); their t-1/t+1 sources are the adjacent CAM_FRONT
records in the sample_data prev/next chain (sweeps) or the adjacent key frames.

Options (config keys datasets.nuscenes.*): `version` (always), `day_clear_only` (derive_splits),
`neighbours` (frame_table). The devkit's tables are loaded once per adapter (once per job).
"""
from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path

import numpy as np

from pipeline.datasets.adapter import Dataset
from pipeline.datasets.frames import SPLITS, FrameTable, build_table
from pipeline.datasets.images import CropResize, read_gray, read_rgb, read_rgb_frame

log = logging.getLogger(__name__)

CAMERA = "CAM_FRONT"
LIDAR = "LIDAR_TOP"
TABLES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose",
          "log", "scene", "sample", "sample_data", "sample_annotation", "map")
# official scene lists per version: (train, test). The paper (like md4all) tests on the validation scenes.
VERSION_SPLITS = {"v1.0-mini": ("mini_train", "mini_val"), "v1.0-trainval": ("train", "val")}


class NuScenes(Dataset):
    """A nuScenes dataroot through the devkit (loaded on first use, once per adapter)."""

    name = "nuscenes"
    title = "nuScenes"
    OPTIONS = {"version": "all stages", "day_clear_only": "splits", "neighbours": "frames"}

    def __init__(self, root: str | Path, options=None):
        super().__init__(root, options)
        self.version = self.option("version")
        table_dir = self.root / self.version
        if not table_dir.is_dir():
            raise FileNotFoundError(f"nuScenes version folder not found: {table_dir} "
                                    f"(config keys datasets.nuscenes.root / datasets.nuscenes.version)")
        missing = [t for t in TABLES if not (table_dir / f"{t}.json").is_file()]
        if missing:
            raise FileNotFoundError(f"nuScenes tables missing in {table_dir}: "
                                    f"{', '.join(t + '.json' for t in missing)}")

    @cached_property
    def nusc(self):
        """The devkit's NuScenes (its JSON tables are read here, once)."""
        from nuscenes.nuscenes import NuScenes as DevkitNuScenes

        return DevkitNuScenes(version=self.version, dataroot=str(self.root), verbose=False)

    # ------------------------------------------------------------------------- splits
    def derive_splits(self) -> tuple[dict[str, list[str]], str]:
        """Split name -> CAM_FRONT key-frame sample_data tokens, in scene then time order.

        train/test scenes come from the devkit's official lists for the version; day vs night from the
        scene description. With day_clear_only, rain scenes are left out of the day splits."""
        from nuscenes.utils.splits import create_splits_scenes

        day_clear_only = bool(self.option("day_clear_only"))
        if self.version not in VERSION_SPLITS:
            raise ValueError(f"no official train/test scene split for nuScenes version {self.version!r} "
                             f"(known: {sorted(VERSION_SPLITS)}); give datasets.nuscenes.split_files instead")
        official = create_splits_scenes()
        train_names, test_names = (set(official[k]) for k in VERSION_SPLITS[self.version])
        out: dict[str, list[str]] = {s: [] for s in SPLITS}
        for scene in sorted(self.nusc.scene, key=lambda s: s["name"]):
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
            out[f"{part}_{light}"].extend(self._scene_keyframes(scene))
        header = (f"official {VERSION_SPLITS[self.version]} scenes of {self.version}, night by scene description"
                  + (", rain scenes left out of day" if day_clear_only else ""))
        return out, header

    def _scene_keyframes(self, scene) -> list[str]:
        tokens = []
        sample_token = scene["first_sample_token"]
        while sample_token:
            sample = self.nusc.get("sample", sample_token)
            tokens.append(sample["data"][CAMERA])
            sample_token = sample["next"]
        return tokens

    # ------------------------------------------------------------------------- frames
    def frame_table(self, ids) -> FrameTable:
        """Target rows for the given CAM_FRONT tokens plus their t-1/t+1 neighbours.

        neighbours='sweeps': the adjacent records in the CAM_FRONT sample_data chain;
        'keyframes': the CAM_FRONT records of the previous/next sample; 'none': no sources."""
        neighbours = self.option("neighbours")
        if neighbours not in ("sweeps", "keyframes", "none"):
            raise ValueError(f"datasets.nuscenes.neighbours must be sweeps, keyframes or none, got {neighbours!r}")
        nusc = self.nusc
        scene_index = {s["token"]: i for i, s in enumerate(sorted(nusc.scene, key=lambda s: s["name"]))}
        records: dict[str, dict] = {}
        sizes = set()

        def add(token: str) -> dict:
            if token not in records:
                sd = nusc.get("sample_data", token)
                if sd["channel"] != CAMERA:
                    raise ValueError(f"frame id {token} is a {sd['channel']} record, expected {CAMERA}")
                cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
                scene_token = self._scene_of(token)
                sizes.add((sd["width"], sd["height"]))
                records[token] = {"frame_id": token, "source": sd["filename"], "timestamp": sd["timestamp"],
                                  "sequence": scene_index[scene_token], "K": np.array(cs["camera_intrinsic"]),
                                  "scene": scene_token}
            return records[token]

        for token in ids:
            try:
                rec = add(token)
            except KeyError:
                raise ValueError(f"frame id {token} is not a sample_data token of this nuScenes version") from None
            sd = nusc.get("sample_data", token)
            for side in ("prev", "next"):
                nb = self._neighbour(sd, side, neighbours)
                if nb and self._scene_of(nb) == rec["scene"]:
                    add(nb)
                    rec[f"{side}_id"] = nb
        if len(sizes) > 1:
            raise ValueError(f"CAM_FRONT images of different sizes in one split: {sorted(sizes)}")
        size = sizes.pop() if sizes else (1600, 900)
        return build_table(list(records.values()), set(ids), size)

    def _scene_of(self, token: str) -> str:
        return self.nusc.get("sample", self.nusc.get("sample_data", token)["sample_token"])["scene_token"]

    def _neighbour(self, sd: dict, side: str, mode: str) -> str:
        if mode == "none":
            return ""
        if mode == "sweeps":
            return sd[side]
        other = self.nusc.get("sample", sd["sample_token"])[side]
        return self.nusc.get("sample", other)["data"][CAMERA] if other else ""

    def load_rgb(self, source: str) -> np.ndarray:
        return read_rgb(self.root / source)

    def load_frame(self, source: str, mapping: CropResize) -> np.ndarray:
        return read_rgb_frame(self.root / source, mapping)

    # ------------------------------------------------------------------------- ground truth
    def ground_truth(self, frame_id: str, source: str, *, crop, size: tuple[int, int], min_dist: float = 1.0):
        """LIDAR_TOP of the camera's sample projected into the camera by the devkit, rasterised at `size`
        after the crop (CropResize.rasterize: col = floor(u' + 0.5), nearest depth, 0 = none); and the label
        map <root>/labels/CAM_FRONT/<image basename>.png if there is one."""
        nusc = self.nusc
        sd = nusc.get("sample_data", frame_id)
        if not sd["is_key_frame"]:
            raise ValueError(f"frame {frame_id} is not a key frame: only key frames have LIDAR_TOP ground truth")
        lidar_token = nusc.get("sample", sd["sample_token"])["data"][LIDAR]
        points, depth, _ = nusc.explorer.map_pointcloud_to_image(lidar_token, frame_id, min_dist=min_dist)
        mapping = CropResize(crop, (sd["width"], sd["height"]), size)
        label = label_path(self.root, source)
        labels = mapping.image(read_gray(label), nearest=True) if label.exists() else None
        return mapping.rasterize(points[0], points[1], depth), labels


def scene_condition(description: str) -> str:
    """'night' | 'rain' | 'day-clear' by case-insensitive substring of the scene description (md4all, RNW)."""
    d = description.lower()
    if "night" in d:
        return "night"
    if "rain" in d:
        return "rain"
    return "day-clear"


def label_path(root: str | Path, source: str) -> Path:
    """Where a label map for a camera image lives: <root>/labels/<CHANNEL>/<basename>.png (the demo writes
    them; a user can put ground-truth Cityscapes train-id maps there too)."""
    p = Path(source)
    return Path(root) / "labels" / p.parent.name / (p.stem + ".png")
