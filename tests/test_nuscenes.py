"""nuScenes through the devkit: splits, frame tables, extraction, GT depth against the devkit, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline import shards
from pipeline.cli import main
from pipeline.datasets import ground_truth
from pipeline.datasets import nuscenes as ns
from pipeline.datasets import nuscenes_demo
from pipeline.datasets.adapter import open_dataset
from pipeline.datasets.frames import read_split_file
from pipeline.projection import rasterize_depth

W, H = 320, 180
VERSION = "v1.0-mini"
SPLIT_OPTIONS = json.dumps({"version": VERSION, "day_clear_only": True})
FRAME_OPTIONS = json.dumps({"version": VERSION, "neighbours": "sweeps"})
GT_OPTIONS = json.dumps({"version": VERSION})


def _splits(root, out, split_files="{}", options=SPLIT_OPTIONS):
    return main(["splits", "--dataset", "nuscenes", "--root", str(root), "--options", options,
                 "--split-files", split_files, "--out-dir", str(out)])


def _extract(root, split_file, out, width=W, height=H, crop=(0, 0, 0, 0), rows_per_shard=64, threads=1):
    return main(["extract-frames", "--dataset", "nuscenes", "--root", str(root), "--options", FRAME_OPTIONS,
                 "--split-file", str(split_file), "--out", str(out), "--crop", *map(str, crop),
                 "--width", str(width), "--height", str(height), "--threads", str(threads),
                 "--rows-per-shard", str(rows_per_shard), "--part", "0/1"])


def _gt(root, frames, out, threads=1):
    return main(["gt-depth", "--dataset", "nuscenes", "--root", str(root), "--options", GT_OPTIONS,
                 "--frames", str(frames), "--out", str(out), "--eval-width", str(W), "--eval-height", str(H),
                 "--threads", str(threads)])


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("nus") / "nuscenes"
    nuscenes_demo.write_nuscenes_demo(root, seed=3, keyframes_per_scene=3, sweeps_between=1, width=W, height=H,
                                      progress=False)
    return root


@pytest.fixture(scope="module")
def dataset(root):
    return open_dataset("nuscenes", root, {"version": VERSION, "neighbours": "sweeps"})


@pytest.fixture(scope="module")
def nusc(dataset):
    return dataset.nusc


@pytest.fixture(scope="module")
def split_dir(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("splits")
    assert _splits(root, out) == 0
    return out


def test_derived_splits_follow_official_scenes_and_descriptions(nusc, split_dir):
    splits = {s: read_split_file(split_dir / f"{s}.txt") for s in ("train_day", "train_night", "test_day", "test_night")}
    # demo: mini_train has 2 day + 2 night scenes, mini_val 1 + 1; 3 key frames each
    assert {k: len(v) for k, v in splits.items()} == {"train_day": 6, "train_night": 6, "test_day": 3, "test_night": 3}
    for split, ids in splits.items():
        for token in ids:
            sd = nusc.get("sample_data", token)
            assert sd["is_key_frame"] and sd["channel"] == "CAM_FRONT"
            scene = nusc.get("scene", nusc.get("sample", sd["sample_token"])["scene_token"])
            assert ("night" in scene["description"].lower()) == split.endswith("night")
    assert (split_dir / "test_day.txt").read_text().startswith("# test_day: derived")


def test_scene_condition_substrings():
    assert ns.scene_condition("Night, big street, bus stop") == "night"
    assert ns.scene_condition("Rain, parked cars") == "rain"
    assert ns.scene_condition("Parked cars, peds") == "day-clear"


def test_frame_table_neighbours(root, dataset, nusc, split_dir):
    ids = read_split_file(split_dir / "train_day.txt")
    table = dataset.frame_table(ids)
    assert table.target.sum() == len(ids)
    # 2 day scenes x 3 key frames; sweeps: one before, one between each pair, one after = 4 per scene
    assert len(table) == len(ids) + 2 * 4
    for i in np.flatnonzero(table.target):
        sd = nusc.get("sample_data", table.frame_id[i])
        assert table.frame_id[table.prev[i]] == sd["prev"] and table.frame_id[table.next[i]] == sd["next"]
        assert table.timestamp[table.prev[i]] < table.timestamp[i] < table.timestamp[table.next[i]]
    kf = open_dataset("nuscenes", root, {"version": VERSION, "neighbours": "keyframes"}).frame_table(ids)
    assert len(kf) == len(ids) and all(kf.target)  # neighbours of a key frame are key frames of the split


def test_extract_frames_and_gt_equal_devkit_projection(root, nusc, split_dir, tmp_path):
    frames = tmp_path / "frames.zarr"
    assert _extract(root, split_dir / "test_day.txt", frames, rows_per_shard=4) == 0
    g = shards.open_shard(frames)
    assert g["image"].shape[1:] == (H, W, 3) and g["image"].shards[0] == 4
    gt = tmp_path / "gt.zarr"
    assert _gt(root, frames, gt) == 0
    d = shards.open_shard(gt)
    rows = np.flatnonzero(g["target"][:])
    assert len(rows) == 3
    for i in rows:
        token = str(g["frame_id"][i])
        lidar = nusc.get("sample", nusc.get("sample_data", token)["sample_token"])["data"]["LIDAR_TOP"]
        pts, depth, _ = nusc.explorer.map_pointcloud_to_image(lidar, token)
        expected = rasterize_depth(pts[0], pts[1], depth, H, W)
        np.testing.assert_array_equal(d["depth"][i], expected)
        assert (expected > 0).sum() > 500
        np.testing.assert_allclose(d["K"][i], nusc.get("calibrated_sensor", nusc.get(
            "sample_data", token)["calibrated_sensor_token"])["camera_intrinsic"], rtol=1e-6)
    assert not d["depth"][np.flatnonzero(~g["target"][:])].any(), "non-target rows carry no ground truth"
    assert set(np.unique(d["labels"][rows[0]])) <= set(range(19)) | {255}


def test_threads_give_the_serial_bytes(root, dataset, split_dir, tmp_path):
    """extract_frames (decoding a shard ahead) and gt_depth (a few frames ahead) on 2 threads write what 1
    thread writes, and the frames are the crop + resize of `read_rgb` (load_frame converts colours after
    resizing)."""
    from pipeline.datasets.images import CropResize, read_rgb

    crop = (0, 20, 30, 0)
    out = {}
    for threads in (1, 2):
        frames = tmp_path / f"frames{threads}.zarr"
        assert _extract(root, split_dir / "train_day.txt", frames, crop=crop, width=W // 2, height=(H - 20) // 2,
                        rows_per_shard=2, threads=threads) == 0
        gt = tmp_path / f"gt{threads}.zarr"
        assert _gt(root, frames, gt, threads=threads) == 0
        out[threads] = shards.open_shard(frames), shards.open_shard(gt)
    (f1, g1), (f2, g2) = out[1], out[2]
    assert f1["image"].shape[0] > 2 * 2                    # several shards: the decode-ahead path ran
    np.testing.assert_array_equal(f1["image"][:], f2["image"][:])
    assert f1.attrs["checksums"] == f2.attrs["checksums"]
    for name in ("depth", "labels"):
        np.testing.assert_array_equal(g1[name][:], g2[name][:])
    assert g1.attrs["checksums"] == g2.attrs["checksums"] and g1["depth"][:].any()
    mapping = CropResize(crop, (W, H), (W // 2, (H - 20) // 2))
    for i in (0, f1["image"].shape[0] - 1):
        np.testing.assert_array_equal(f1["image"][i], mapping.image(read_rgb(root / str(f1["source"][i]))))


def test_scene_copies_are_more_scenes_of_the_same_names(tmp_path):
    """scene_copies (benchmarks/scale.py): each scene again with its own tokens, geometry and times; the
    devkit loads it and its official splits assign the copies like the originals."""
    copies = tmp_path / "copies"
    nuscenes_demo.write_nuscenes_demo(copies, seed=3, keyframes_per_scene=2, sweeps_between=1, width=64, height=36,
                                      progress=False, scene_copies=2)
    ds = open_dataset("nuscenes", copies, {"version": VERSION, "day_clear_only": True, "neighbours": "sweeps"})
    scenes = ds.nusc.scene
    assert len(scenes) == 12 and len({s["token"] for s in scenes}) == 12
    assert sorted(s["name"] for s in scenes) == sorted(2 * [s.name for s in nuscenes_demo.DEMO_SCENES])
    assert len(ds.nusc.log) == 6 and len(ds.nusc.sample) == 24
    splits, _ = ds.derive_splits()
    assert {k: len(v) for k, v in splits.items()} == {"train_day": 8, "train_night": 8, "test_day": 4,
                                                      "test_night": 4}
    stamps = [sd["timestamp"] for sd in ds.nusc.sample_data]
    assert len(set(stamps)) == len(stamps)
    with pytest.raises(ValueError, match="scene_copies"):
        nuscenes_demo.write_nuscenes_demo(tmp_path / "bad", scene_copies=0, width=64, height=36, progress=False)


def test_crop_and_resize_map_points_consistently(dataset, nusc, split_dir):
    token = read_split_file(split_dir / "test_night.txt")[0]
    source = nusc.get("sample_data", token)["filename"]
    full, full_labels = dataset.ground_truth(token, source, crop=(0, 0, 0, 0), size=(W, H))
    half, half_labels = dataset.ground_truth(token, source, crop=(0, 20, 0, 0), size=(W // 2, (H - 20) // 2))
    # label maps go through the same mapping: nearest neighbour of the cropped full-size map
    np.testing.assert_array_equal(half_labels, full_labels[20::2, ::2])
    # every point of the cropped half-size map lands in the matching 2x2 block of the full map; where that
    # block holds exactly one point the depths agree (rounding of the two rasters may split other blocks)
    assert (half > 0).sum() > 100
    hits = agree = 0
    for r, c in zip(*np.nonzero(half)):
        block = full[20 + 2 * r: 22 + 2 * r, max(0, 2 * c - 1): 2 * c + 3]
        hits += (block > 0).any()
        if (block > 0).sum() == 1:
            agree += np.isclose(half[r, c], block[block > 0][0], rtol=1e-5)
    assert hits >= 0.95 * (half > 0).sum() and agree > 50


def test_user_split_file_overrides(root, tmp_path, split_dir):
    ids = read_split_file(split_dir / "test_day.txt")[:2]
    user = tmp_path / "mine.txt"
    user.write_text("# my test frames\n" + "\n".join(ids) + "\n")
    out = tmp_path / "splits"
    assert _splits(root, out, split_files=json.dumps({"test_day": str(user)})) == 0
    assert read_split_file(out / "test_day.txt") == ids
    assert len(read_split_file(out / "train_day.txt")) == 6


def test_missing_root_names_the_path(tmp_path, capsys):
    missing = tmp_path / "no_such_nuscenes"
    assert _splits(missing, tmp_path / "s") == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "datasets.nuscenes.root" in err
    assert not (tmp_path / "s").exists()


def test_unknown_frame_id_is_named(root, tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("not-a-token\n")
    assert _extract(root, bad, tmp_path / "f.zarr", width=64, height=32) == 2
    assert "not-a-token" in capsys.readouterr().err


def test_truncated_image_names_the_file_and_writes_nothing(root, split_dir, tmp_path, capsys):
    import shutil

    copy = tmp_path / "nus"
    shutil.copytree(root, copy)
    token = read_split_file(split_dir / "test_day.txt")[1]
    victim = copy / open_dataset("nuscenes", copy, {"version": VERSION}).nusc.get("sample_data", token)["filename"]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    out = tmp_path / "frames.zarr"
    assert _extract(copy, split_dir / "test_day.txt", out, width=64, height=32) == 2
    err = capsys.readouterr().err
    assert "truncated JPEG" in err and victim.name in err
    assert not out.exists() and not list(tmp_path.glob(".frames.zarr.tmp-*"))


def test_options_name_their_config_keys(root, tmp_path, capsys):
    assert _splits(root, tmp_path / "s", options=json.dumps({"version": VERSION})) == 2
    assert "datasets.nuscenes.day_clear_only" in capsys.readouterr().err
    assert _splits(root, tmp_path / "s", options=json.dumps({"day_clear_only": True})) == 2
    assert "datasets.nuscenes.version" in capsys.readouterr().err
    assert _splits(root, tmp_path / "s", options=json.dumps({"version": VERSION, "day_clear_only": True,
                                                              "neighbors": "sweeps"})) == 2
    err = capsys.readouterr().err
    assert "neighbors" in err and "datasets.nuscenes.neighbours" in err
    assert not (tmp_path / "s").exists()
    with pytest.raises(ValueError, match="unknown dataset 'kitti'"):
        open_dataset("kitti", root, {})


def test_gt_written_shard_by_shard_equals_the_adapter(root, dataset, split_dir, tmp_path):
    frames = tmp_path / "frames.zarr"
    assert _extract(root, split_dir / "train_night.txt", frames, crop=(0, 20, 0, 0), width=W // 2,
                    height=(H - 20) // 2) == 0
    g = shards.open_shard(frames)
    out = tmp_path / "gt.zarr"
    stats = ground_truth.write(dataset, g, out, crop=(0, 20, 0, 0), size=(W // 4, (H - 20) // 4), attrs={},
                               rows_per_shard=3, progress=False)
    d = shards.open_shard(out)
    assert d["depth"].shards[0] == 3 and d["labels"].shards[0] == 3 and len(g["target"]) > 3 * 3
    assert shards.verify(out) == {}
    target = g["target"][:]
    assert stats["labels"] and stats["targets"] == target.sum() == 6
    for i in range(len(target)):
        if target[i]:
            depth, labels = dataset.ground_truth(str(g["frame_id"][i]), str(g["source"][i]), crop=(0, 20, 0, 0),
                                                 size=(W // 4, (H - 20) // 4))
            np.testing.assert_array_equal(d["depth"][i], depth)
            np.testing.assert_array_equal(d["labels"][i], labels)
        else:
            assert not d["depth"][i].any() and (d["labels"][i] == ground_truth.IGNORE).all()
    assert stats["depth_pixels"] == np.count_nonzero(d["depth"][:])
    # K at the eval size: the frames' K resized by another factor 1/2 (pixel-centre convention)
    K = g["K"][:].astype(np.float64)
    np.testing.assert_allclose(d["K"][:, 0, 0], K[:, 0, 0] / 2, rtol=1e-6)
    np.testing.assert_allclose(d["K"][:, 1, 2], (K[:, 1, 2] + 0.5) / 2 - 0.5, rtol=1e-6)


def test_label_maps_are_all_or_none(root, split_dir, tmp_path, capsys):
    import shutil

    copy = tmp_path / "nus"
    shutil.copytree(root, copy)
    frames = tmp_path / "frames.zarr"
    assert _extract(copy, split_dir / "test_day.txt", frames, width=64, height=32) == 0
    g = shards.open_shard(frames)
    last = np.flatnonzero(g["target"][:])[-1]
    ns.label_path(copy, str(g["source"][last])).unlink()
    out = tmp_path / "gt.zarr"
    assert _gt(copy, frames, out) == 2
    err = capsys.readouterr().err
    assert "label maps" in err and str(g["frame_id"][last]) in err
    assert not out.exists() and not list(tmp_path.glob(".gt.zarr.tmp-*"))
    shutil.rmtree(copy / "labels")                      # none at all: a group without labels
    assert _gt(copy, frames, out) == 0
    assert "labels" not in shards.open_shard(out) and "depth" in shards.open_shard(out)
