"""The RobotCar-format demo writer (pipeline.datasets.demo.write_robotcar_demo) against our reader."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from pipeline.datasets import demo, render
from pipeline.datasets import robotcar as rc
from pipeline.datasets import robotcar_splits as rs

W, H, FRAMES, SEED = 320, 240, 12, 3
WINDOW_US = 4_000_000
DAY, NIGHT = (run for run, _ in demo.ROBOTCAR_DEMO_RUNS)
RUNS = {"day": [DAY], "night": [NIGHT]}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("robotcar_demo")
    summary = demo.write_robotcar_demo(root, seed=SEED, frames_per_run=FRAMES, width=W, height=H, progress=False)
    return root, summary


@pytest.fixture(scope="module")
def splits(written):
    root, _ = written
    return rs.derive_splits(root, RUNS, window_us=WINDOW_US)


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
    intrinsics = demo._rc_intrinsics(W, H)
    lut = demo._rc_distortion_lut(intrinsics, W, H, demo.ROBOTCAR_K1)
    u, v = demo._rc_undistort_points(lut[0], lut[1], intrinsics, demo.ROBOTCAR_K1)
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
    gt = rs.lidar_depth(root, fid, crop=(0, 0, 0, 0), size=(W, H), window_us=WINDOW_US)
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
    table, load = rs.frame_table(root, splits["train_day"])
    targets = np.nonzero(table.target)[0]
    assert len(targets) == len(splits["train_day"])
    assert np.all(table.prev[targets] >= 0) and np.all(table.next[targets] >= 0)
    img = load(table.source[targets[0]])
    assert img.shape == (H, W, 3) and img.dtype == np.uint8


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
        rs.derive_splits(small, RUNS)
    with pytest.raises(FileNotFoundError, match="2015-01-01-00-00-00"):
        rc.read_run_frames(root / "2015-01-01-00-00-00")
    with pytest.raises(FileNotFoundError, match="2015-01-01-00-00-00"):
        rs.derive_splits(root, {"day": ["2015-01-01-00-00-00"], "night": [NIGHT]})


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
