"""The RobotCar-format demo writer (pipeline.datasets.robotcar_demo) against our reader and the RobotCar adapter."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from pipeline import shards
from pipeline.cli import main
from pipeline.datasets import render
from pipeline.datasets import robotcar as rc
from pipeline.datasets import robotcar_demo as demo
from pipeline.datasets import robotcar_dataset as rs
from pipeline.datasets.adapter import open_dataset

W, H, FRAMES, SEED = 320, 240, 12, 3
WINDOW_US = 4_000_000
DAY, NIGHT = (run for run, _ in demo.DEMO_RUNS)
RUNS = {"day": [DAY], "night": [NIGHT]}
SPLIT_OPTIONS = {"runs": RUNS, "test_every": 5, "test_fraction": 0.3, "lidar_window_us": WINDOW_US}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("robotcar_demo")
    summary = demo.write_robotcar_demo(root, seed=SEED, frames_per_run=FRAMES, width=W, height=H, progress=False)
    return root, summary


@pytest.fixture(scope="module")
def splits(written):
    root, _ = written
    splits, _ = open_dataset("robotcar", root, SPLIT_OPTIONS).derive_splits()
    return splits


def _run_info(summary, run):
    return next(r for r in summary["runs"] if r["run"] == run)


def _rerender(root, summary, run, ts):
    """The renderer's undistorted (rgb, z-depth, labels) of frame `ts`, rebuilt from the summary."""
    info = _run_info(summary, run)
    scene = render.make_scene(info["scene_seed"], info["length_m"])
    T_world_ego = render.trajectory(scene, [(ts - info["t0_us"]) / 1e6], info["speed"], info["traj_seed"])[0]
    model = rc.load_camera_model(root / "models", "stereo_narrow_left", H, W)
    T_world_cam = T_world_ego @ np.array(summary["T_ego_vehicle"]) @ model.G_camera_image
    return render.render(scene, T_world_cam, model.K, W, H, info["night"])


def _image(root, run, ts):
    return root / run / "stereo" / "centre" / f"{ts}.png"


# ----------------------------------------------------------------------------- layout


def test_models_and_extrinsics(written):
    root, summary = written
    model = rc.load_camera_model(root / "models", "stereo_narrow_left", H, W)
    # the real stereo_narrow_left scaled from 1280x960 (pixel-centre convention), 6 decimals
    np.testing.assert_allclose([model.fx, model.fy], [964.828979 / 4] * 2, atol=1e-6)
    np.testing.assert_allclose([model.cx, model.cy], [(643.788025 + 0.5) / 4 - 0.5, (484.40799 + 0.5) / 4 - 0.5],
                               atol=1e-6)
    np.testing.assert_array_equal(model.G_camera_image, [[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
    lut = model.lut
    assert lut.shape == (2, H, W)
    assert (root / "models" / "stereo_narrow_left_distortion_lut.bin").stat().st_size == 2 * H * W * 8
    # barrel distortion: the centre stays, the undistorted corners sample inside the raw image
    assert lut[0, 0, 0] > 0.5 and lut[1, 0, 0] > 0.5 and lut[0, -1, -1] < W - 1.5 and lut[1, -1, -1] < H - 1.5
    cx, cy = int(round(model.cx)), int(round(model.cy))
    assert abs(lut[0, cy, cx] - cx) < 0.01 and abs(lut[1, cy, cx] - cy) < 0.01
    np.testing.assert_array_equal(rc.read_extrinsics(root / "extrinsics" / "stereo.txt"), np.eye(4))
    np.testing.assert_allclose(rc.read_extrinsics(root / "extrinsics" / "lms_front.txt"),
                               rc.build_se3_transform([1.7589, 0.2268, 1.0411, -0.0437, -1.4572, 0.0356]))
    assert summary["width"] == W and [r["night"] for r in summary["runs"]] == [False, True]


def test_inverse_distortion_inverts_the_lut():
    intrinsics = demo._intrinsics(W, H)
    lut = demo._distortion_lut(intrinsics, W, H, demo.K1)
    u, v = demo._undistort_points(lut[0], lut[1], intrinsics, demo.K1)
    grid_v, grid_u = np.mgrid[0:H, 0:W]
    np.testing.assert_allclose(u, grid_u, atol=1e-9)
    np.testing.assert_allclose(v, grid_v, atol=1e-9)


def test_timestamps_images_vo_and_scans(written):
    root, summary = written
    for run in (DAY, NIGHT):
        frames = rc.read_run_frames(root / run)
        assert len(frames) == FRAMES
        assert np.all(np.abs(np.diff(frames) - 62_500) <= 600)                  # 16 Hz
        with Image.open(_image(root, run, frames[0])) as im:
            assert im.mode == "L" and im.size == (W, H)
        label = np.array(Image.open(root / run / "labels" / f"{frames[0]}.png"))
        assert label.shape == (H, W) and label.max() <= 18
        src, dst, xyzrpy = rc.read_vo(root / run / "vo" / "vo.csv")
        np.testing.assert_array_equal(dst[1:], src[:-1])
        assert dst[0] <= frames[0] - 5_000_000 + 1_000 and src[-1] >= frames[-1] + 5_000_000 - 1_000
        assert np.all(xyzrpy[:, 0] > 0.3) and np.all(np.abs(xyzrpy[:, 1:3]) < 0.05)   # forward = +x
        lms, _ = rc.read_timestamps(root / run / "lms_front.timestamps")
        assert np.all(np.abs(np.diff(lms) - 20_000) <= 300)                       # 50 Hz
        assert lms[0] >= dst[0] and lms[-1] <= src[-1]
        scan = rc.read_lms_scan(root / run / "lms_front" / f"{lms[len(lms) // 2]}.bin")
        ranges = np.hypot(scan[:, 0], scan[:, 1])
        assert 100 < len(scan) <= 541 and ranges.max() <= 50.0 and ranges.min() >= 0.5
        info = _run_info(summary, run)
        assert info["n_lms_scans"] == len(lms) and info["n_vo_rows"] == len(src)


def test_vo_chain_matches_renderer_poses(written):
    """Chained VO (the reader's fixed interpolation) = the renderer's relative vehicle poses."""
    root, summary = written
    info = _run_info(summary, DAY)
    frames = np.array(rc.read_run_frames(root / DAY))
    src, _, xyzrpy = rc.read_vo(root / DAY / "vo" / "vo.csv")
    pose_ts, poses = rc.vo_absolute_poses(src, xyzrpy, int(frames[0]), int(frames[-1]))
    rel = rc.interpolate_poses(pose_ts, poses, frames, int(frames[0]))
    scene = render.make_scene(info["scene_seed"], info["length_m"])
    ego = render.trajectory(scene, (frames - info["t0_us"]) / 1e6, info["speed"], info["traj_seed"])
    vehicle = np.stack(ego) @ np.array(summary["T_ego_vehicle"])
    np.testing.assert_allclose(rel, np.linalg.inv(vehicle[0]) @ vehicle, atol=1e-9)
    assert rel[-1][0, 3] == pytest.approx(info["speed"] * (frames[-1] - frames[0]) / 1e6, rel=0.01)


# ----------------------------------------------------------------------------- acceptance


def test_load_image_agrees_with_render(written):
    root, summary = written
    frames = rc.read_run_frames(root / DAY)
    ts = frames[len(frames) // 2]
    img = rc.load_image(_image(root, DAY, ts), root / "models")
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    rgb, _, labels = _rerender(root, summary, DAY, ts)
    m = 4
    mae = np.abs(img[m:-m, m:-m].astype(np.float64) - rgb[m:-m, m:-m]).mean()
    print(f"RGB mean abs error (interior, day, {W}x{H}): {mae:.2f} DN")
    assert mae < 6.0
    # a wrong Bayer pattern (R and B swapped) is clearly worse
    assert np.abs(img[m:-m, m:-m, ::-1].astype(np.float64) - rgb[m:-m, m:-m]).mean() > mae + 2
    stored = np.array(Image.open(root / DAY / "labels" / f"{ts}.png"))
    assert (stored == labels).mean() >= 0.999


@pytest.mark.parametrize("light", ["day", "night"])
def test_gt_depth_agrees_with_exact_depth(written, splits, light):
    root, summary = written
    fid = splits[f"test_{light}"][0]
    run, ts = rs.parse_frame_id(fid)
    gt, labels = open_dataset("robotcar", root, {"lidar_window_us": WINDOW_US}).ground_truth(
        fid, rs.source_of(run, ts), crop=(0, 0, 0, 0), size=(W, H))
    # the adapter (run tables read once) gives the reader's own one-shot result
    np.testing.assert_array_equal(gt, rc.gt_depth(root / run, root / "models", root / "extrinsics", ts, width=W,
                                                   height=H, window_us=WINDOW_US))
    np.testing.assert_array_equal(labels, np.array(Image.open(root / run / "labels" / f"{ts}.png")))
    _, depth, _ = _rerender(root, summary, run, ts)
    hit = gt > 0
    exact = depth[hit].astype(np.float64)
    rel = np.full(exact.shape, np.inf)
    finite = np.isfinite(exact)
    rel[finite] = np.abs(gt[hit][finite] - exact[finite]) / exact[finite]
    median = float(np.median(rel))
    print(f"{light} {fid}: {hit.sum()} GT pixels, median rel error {median:.4%}, > 5 %: {(rel > 0.05).mean():.1%}")
    assert hit.sum() > 0.05 * W * H
    assert median < 0.01


def test_derive_splits_and_frame_table(written, splits):
    root, _ = written
    for light, run in (("day", DAY), ("night", NIGHT)):
        train, test = splits[f"train_{light}"], splits[f"test_{light}"]
        assert train and test and not set(train) & set(test)
        assert all(f.startswith(run + "/") for f in train + test)
    dataset = open_dataset("robotcar", root, {})
    table = dataset.frame_table(splits["train_day"])
    targets = np.nonzero(table.target)[0]
    assert len(targets) == len(splits["train_day"])
    assert np.all(table.prev[targets] >= 0) and np.all(table.next[targets] >= 0)
    img = dataset.load_rgb(table.source[targets[0]])
    assert img.shape == (H, W, 3) and img.dtype == np.uint8


def test_load_frame_undistorts_only_the_crop_box_and_threads_give_the_serial_bytes(written, splits, tmp_path):
    """load_frame (remap of the crop box only, cached fixed-point maps) = crop + resize of load_rgb (the full
    undistortion), byte for byte; extract_frames on 2 threads writes what 1 thread writes."""
    from pipeline.datasets import frames as fr
    from pipeline.datasets.images import CropResize

    root, _ = written
    dataset = open_dataset("robotcar", root, {})
    table = dataset.frame_table(splits["train_day"])
    mapping = CropResize((8, 40, 24, 40), (W, H), (96, 48))
    for source in table.source[:3]:
        full = dataset.load_rgb(source)
        np.testing.assert_array_equal(dataset.load_frame(source, mapping), mapping.image(full))
        box = rc.load_image(root / source, root / "models", exact=False, box=mapping.box)
        np.testing.assert_array_equal(box, full[40:H - 40, 8:W - 24])
    with pytest.raises(ValueError, match="box"):
        rc.load_image(root / table.source[0], root / "models", exact=False, box=(0, 0, W + 1, H))
    out = {}
    for threads in (1, 2):
        fr.extract_frames(table, dataset.load_frame, tmp_path / f"f{threads}.zarr", crop=mapping.crop, size=(96, 48),
                          attrs={}, threads=threads, rows_per_shard=3, progress=False)
        out[threads] = shards.open_shard(tmp_path / f"f{threads}.zarr")
    assert out[1]["image"].shape[0] == len(table) > 3
    np.testing.assert_array_equal(out[1]["image"][:], out[2]["image"][:])
    assert out[1].attrs["checksums"] == out[2].attrs["checksums"]
    assert shards.verify(tmp_path / "f2.zarr") == {}


def test_verbs_splits_frames_gt_with_crop(written, tmp_path):
    """The three data verbs as the rules call them; gt rows = the adapter's per-frame ground truth."""
    root, _ = written
    common = ["--dataset", "robotcar", "--root", str(root)]
    assert main(["splits", *common, "--options", json.dumps(SPLIT_OPTIONS), "--split-files", "{}",
                 "--out-dir", str(tmp_path / "splits")]) == 0
    crop, size = (0, 40, 0, 40), (160, 80)
    frames = tmp_path / "frames.zarr"
    assert main(["extract-frames", *common, "--options", "{}",
                 "--split-file", str(tmp_path / "splits" / "test_day.txt"), "--out", str(frames), "--crop", *map(str, crop), "--width", str(size[0]), "--height", str(size[1]),
                 "--threads", "1", "--rows-per-shard", "2", "--part", "0/1"]) == 0
    gt = tmp_path / "gt.zarr"
    assert main(["gt-depth", *common, "--options", json.dumps({"lidar_window_us": WINDOW_US}), "--frames", str(frames),
                 "--out", str(gt), "--eval-width", "80", "--eval-height", "40", "--threads", "2"]) == 0
    g, d = shards.open_shard(frames), shards.open_shard(gt)
    dataset = open_dataset("robotcar", root, {"lidar_window_us": WINDOW_US})
    rows = np.flatnonzero(g["target"][:])
    assert len(rows) == 1 and len(g["target"]) == 3                       # one test frame and its neighbours
    assert not d["depth"][np.flatnonzero(~g["target"][:])].any()
    for i in rows:
        depth, labels = dataset.ground_truth(str(g["frame_id"][i]), str(g["source"][i]), crop=crop, size=(80, 40))
        np.testing.assert_array_equal(d["depth"][i], depth)
        np.testing.assert_array_equal(d["labels"][i], labels)
        assert (depth > 0).sum() > 0.05 * 80 * 40
    # frames K (160x80 after the crop) and gt K (80x40): both the model's K through the one mapping
    model = rc.load_camera_model(root / "models", "stereo_narrow_left", H, W)
    fy_frames = model.fy * size[1] / (H - 80)
    np.testing.assert_allclose(g["K"][rows[0]][1, 1], fy_frames, rtol=1e-6)
    np.testing.assert_allclose(g["K"][rows[0]][1, 2], (model.cy - 40 + 0.5) * size[1] / (H - 80) - 0.5, rtol=1e-6)
    np.testing.assert_allclose(d["K"][rows[0]][1, 1], fy_frames / 2, rtol=1e-6)


def test_options_and_root_errors_name_config_keys(written, tmp_path):
    root, _ = written
    with pytest.raises(FileNotFoundError, match="datasets.robotcar.root"):
        open_dataset("robotcar", tmp_path / "nowhere", {})
    with pytest.raises(ValueError, match="datasets.robotcar.lidar_window_us"):
        open_dataset("robotcar", root, {k: v for k, v in SPLIT_OPTIONS.items() if k != "lidar_window_us"}
                     ).derive_splits()
    with pytest.raises(ValueError, match="datasets.robotcar.lidar_window_us"):
        open_dataset("robotcar", root, {}).ground_truth(f"{DAY}/1", "x", crop=(0, 0, 0, 0), size=(8, 8))
    with pytest.raises(ValueError, match="version"):
        open_dataset("robotcar", root, {"version": "v1.0-mini"})


# ----------------------------------------------------------------------------- errors


def _minimal_root(src_root, dst_root, run):
    """models/, extrinsics/ and one run's stereo/ folder (no timestamps file) copied to dst_root."""
    for sub in ("models", "extrinsics"):
        shutil.copytree(src_root / sub, dst_root / sub)
    shutil.copytree(src_root / run / "stereo", dst_root / run / "stereo")
    return dst_root


def test_truncated_png_names_the_file(written, tmp_path):
    root, _ = written
    ts = rc.read_run_frames(root / DAY)[0]
    bad = tmp_path / DAY / "stereo" / "centre" / f"{ts}.png"
    bad.parent.mkdir(parents=True)
    data = _image(root, DAY, ts).read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=str(ts)):
        rc.load_image(bad, root / "models")


def test_missing_timestamps_and_missing_run_name_the_path(written, tmp_path):
    root, _ = written
    small = _minimal_root(root, tmp_path / "root", DAY)
    with pytest.raises(FileNotFoundError, match="stereo.timestamps"):
        rc.read_run_frames(small / DAY)
    with pytest.raises(FileNotFoundError, match="stereo.timestamps"):
        open_dataset("robotcar", small, SPLIT_OPTIONS).derive_splits()
    with pytest.raises(FileNotFoundError, match="2015-01-01-00-00-00"):
        rc.read_run_frames(root / "2015-01-01-00-00-00")
    with pytest.raises(FileNotFoundError, match="2015-01-01-00-00-00"):
        open_dataset("robotcar", root, {**SPLIT_OPTIONS, "runs": {"day": ["2015-01-01-00-00-00"], "night": [NIGHT]}}
                     ).derive_splits()


def test_bad_arguments():
    with pytest.raises(ValueError, match="even"):
        demo.write_robotcar_demo("/nonexistent", width=321, height=240, progress=False)
    with pytest.raises(ValueError, match="frames_per_run"):
        demo.write_robotcar_demo("/nonexistent", frames_per_run=2, width=W, height=H, progress=False)


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes(written, tmp_path):
    root, summary = written
    again = demo.write_robotcar_demo(tmp_path, seed=SEED, frames_per_run=FRAMES, width=W, height=H, progress=False)
    assert again["runs"] == summary["runs"]
    ts = rc.read_run_frames(root / NIGHT)[3]                    # night: includes the sensor noise
    assert (tmp_path / NIGHT / "stereo" / "centre" / f"{ts}.png").read_bytes() == _image(root, NIGHT, ts).read_bytes()
    lms, _ = rc.read_timestamps(root / DAY / "lms_front.timestamps")
    name = f"{lms[100]}.bin"
    assert (tmp_path / DAY / "lms_front" / name).read_bytes() == (root / DAY / "lms_front" / name).read_bytes()
    assert (tmp_path / DAY / "vo" / "vo.csv").read_bytes() == (root / DAY / "vo" / "vo.csv").read_bytes()
