"""Tests of the Oxford RobotCar reader on small hand-made files (formats/robotcar.md)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.datasets import robotcar as rc

R, G, B = 200, 100, 50
VO_HEADER = "source_timestamp,destination_timestamp,x,y,z,roll,pitch,yaw\n"
T0 = 1_418_000_000_000_000  # a realistic unix time in microseconds
STEP = 100_000  # VO rows every 0.1 s


def gbrg_mosaic(h: int, w: int, r: int = R, g: int = G, b: int = B) -> np.ndarray:
    """Flat colour laid out in gbrg: row 0 = G B G B, row 1 = R G R G."""
    raw = np.full((h, w), g, dtype=np.uint8)
    raw[0::2, 1::2] = b
    raw[1::2, 0::2] = r
    return raw


def write_png(path, raw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(raw, mode="L").save(path)
    return path


def write_model(models_dir, name, fx, fy, cx, cy, lut=None):
    models_dir.mkdir(parents=True, exist_ok=True)
    G_rows = "0 0 1 0\n1 0 0 0\n0 1 0 0\n0 0 0 1\n"
    (models_dir / f"{name}.txt").write_text(f"{fx} {fy} {cx} {cy}\n{G_rows}")
    if lut is not None:
        np.asarray(lut, dtype="<f8").tofile(models_dir / f"{name}_distortion_lut.bin")


def shift_lut(h, w, dx=1.0):
    """LUT whose output pixel (r, c) samples the raw image at (r, c + dx)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.stack([xx + dx, yy])


def write_vo(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [VO_HEADER] + [f"{s},{d}," + ",".join(repr(float(v)) for v in xyzrpy) + "\n" for s, d, xyzrpy in rows]
    path.write_text("".join(lines))


def forward_vo_rows(n, dx=1.0, yaw=0.0):
    """n VO rows at T0 + k*STEP, each moving dx forward (and turning by yaw) since the previous."""
    return [(T0 + k * STEP, T0 + (k - 1) * STEP, [dx, 0, 0, 0, 0, yaw]) for k in range(n)]


# --------------------------------------------------------------------------- demosaicing

def test_demosaic_exact_flat_gbrg_interior_and_border():
    rgb = rc.demosaic_exact(gbrg_mosaic(4, 4), "gbrg")
    assert rgb.shape == (4, 4, 3) and rgb.dtype == np.float64
    np.testing.assert_array_equal(rgb[1:-1, 1:-1], np.broadcast_to([R, G, B], (2, 2, 3)))
    # (0, 0) is a G pixel: G gain 6/4 (two reflected G neighbours), R from (1, 0) with weights
    # 1 + 2 (reflected row -1 -> row 0 has no R), B from (0, 1) with weights 1 + 2.
    np.testing.assert_allclose(rgb[0, 0], [200 * 3 / 4, 100 * 6 / 4, 50 * 3 / 4])
    # (3, 0) is an R pixel in a corner: gain (4 + 2 + 2 + 1) / 4 = 2.25 -> 450, above 255.
    assert rgb[3, 0, 0] == pytest.approx(450.0)


def test_to_uint8_truncates_and_clips():
    out = rc.to_uint8(np.array([[[37.5, 450.0, 254.99]]]))
    np.testing.assert_array_equal(out, [[[37, 255, 254]]])


def test_demosaic_rggb_places_red_at_origin():
    raw = np.full((4, 4), G, dtype=np.uint8)
    raw[0::2, 0::2] = R
    raw[1::2, 1::2] = B
    rgb = rc.demosaic_exact(raw, "rggb")
    np.testing.assert_array_equal(rgb[1:-1, 1:-1], np.broadcast_to([R, G, B], (2, 2, 3)))
    np.testing.assert_array_equal(rc.demosaic_fast(raw, "rggb")[1:-1, 1:-1], np.broadcast_to([R, G, B], (2, 2, 3)))


def test_demosaic_fast_matches_exact_within_1dn_in_interior():
    flat = rc.demosaic_fast(gbrg_mosaic(4, 4), "gbrg")
    assert flat.dtype == np.uint8 and flat.shape == (4, 4, 3)
    np.testing.assert_array_equal(flat[1:-1, 1:-1], np.broadcast_to([R, G, B], (2, 2, 3)))
    raw = np.random.default_rng(0).integers(0, 256, (24, 32), dtype=np.uint8)
    exact = rc.to_uint8(rc.demosaic_exact(raw, "gbrg")).astype(int)
    fast = rc.demosaic_fast(raw, "gbrg").astype(int)
    assert np.abs(exact - fast)[1:-1, 1:-1].max() <= 1


def test_bad_bayer_pattern():
    with pytest.raises(ValueError, match="pattern"):
        rc.demosaic_exact(np.zeros((4, 4), np.uint8), "grgr")


# --------------------------------------------------------------------------- undistortion

def test_undistort_shift_by_one_column():
    img = np.arange(4 * 5 * 3, dtype=np.float64).reshape(4, 5, 3)
    lut = shift_lut(4, 5)
    out = rc.undistort_exact(img, lut)
    np.testing.assert_array_equal(out[:, :-1], img[:, 1:])
    np.testing.assert_array_equal(out[:, -1], 0)  # x = W is outside the image -> 0
    fast = rc.undistort_fast(img.astype(np.uint8), lut)
    np.testing.assert_array_equal(fast[:, :-1], img[:, 1:].astype(np.uint8))
    np.testing.assert_array_equal(fast[:, -1], 0)


def test_undistort_bilinear_half_pixel_and_shape_check():
    img = np.zeros((2, 3, 1))
    img[0, :, 0] = [0, 10, 20]
    lut = shift_lut(2, 3, dx=0.5)
    out = rc.undistort_exact(img, lut)
    np.testing.assert_allclose(out[0, :2, 0], [5, 15])
    assert out[0, 2, 0] == 0  # x = 2.5 > W - 1
    with pytest.raises(ValueError, match="LUT shape"):
        rc.undistort_exact(np.zeros((3, 3, 3)), lut)


def test_load_image_end_to_end_with_model(tmp_path):
    raw = gbrg_mosaic(4, 6)
    png = write_png(tmp_path / "run" / "stereo" / "centre" / f"{T0}.png", raw)
    write_model(tmp_path / "models", "stereo_narrow_left", 10, 10, 3, 2, shift_lut(4, 6))
    expected = rc.to_uint8(rc.demosaic_exact(raw, "gbrg"))
    plain = rc.load_image(png)
    np.testing.assert_array_equal(plain, expected)
    assert plain[0, 0].tolist() == [150, 150, 37]
    assert plain[3, 0, 0] == 255  # 450 clipped (the SDK would wrap it to 194)
    undist = rc.load_image(png, tmp_path / "models")
    assert undist.dtype == np.uint8 and undist.shape == (4, 6, 3)
    np.testing.assert_array_equal(undist[:, :-1], expected[:, 1:])
    np.testing.assert_array_equal(undist[:, -1], 0)
    fast = rc.load_image(png, tmp_path / "models", exact=False)
    assert np.abs(fast.astype(int) - undist.astype(int))[1:-1, 1:-2].max() <= 1


def test_model_name_and_pattern_from_path():
    assert rc.model_name_for("/d/run/stereo/centre/1.png") == "stereo_narrow_left"
    assert rc.model_name_for("/d/run/stereo/left/1.png") == "stereo_wide_left"
    assert rc.model_name_for("/d/run/stereo/right/1.png") == "stereo_wide_right"
    assert rc.model_name_for("/d/run/mono_rear/1.png") == "mono_rear"
    assert rc.bayer_pattern_for("/d/run/stereo/centre/1.png") == "gbrg"
    assert rc.bayer_pattern_for("/d/stereo_runs/run/mono_left/1.png") == "rggb"
    with pytest.raises(ValueError, match="cannot tell the camera"):
        rc.bayer_pattern_for("/d/run/front/1.png")


# --------------------------------------------------------------------------- models, extrinsics

def test_camera_model_and_lut(tmp_path):
    lut = shift_lut(3, 4)
    write_model(tmp_path, "stereo_narrow_left", 964.828979, 964.828979, 643.788025, 484.407990, lut)
    model = rc.load_camera_model(tmp_path, "stereo_narrow_left", height=3, width=4)
    np.testing.assert_allclose(model.K, [[964.828979, 0, 643.788025], [0, 964.828979, 484.407990], [0, 0, 1]])
    np.testing.assert_array_equal(model.G_camera_image @ [1, 2, 3, 1], [3, 1, 2, 1])
    np.testing.assert_array_equal(model.lut, lut)
    default = rc.load_camera_model(tmp_path, "stereo_narrow_left")
    assert (default.height, default.width) == (960, 1280)


def test_lut_of_wrong_size_names_file(tmp_path):
    write_model(tmp_path, "mono_left", 400, 400, 2, 2, shift_lut(3, 4))
    model = rc.load_camera_model(tmp_path, "mono_left", height=4, width=4)
    with pytest.raises(ValueError, match=r"mono_left_distortion_lut\.bin.*192 bytes; expected.*256"):
        model.lut


def test_bad_model_file(tmp_path):
    (tmp_path / "mono_left.txt").write_text("1 2 3\n")
    with pytest.raises(ValueError, match="mono_left.txt"):
        rc.load_camera_model(tmp_path, "mono_left")
    with pytest.raises(FileNotFoundError, match="mono_rear.txt"):
        rc.load_camera_model(tmp_path, "mono_rear")


def test_se3_transform_and_inverse(tmp_path):
    T = rc.build_se3_transform([1, 2, 3, 0, 0, np.pi / 2])
    np.testing.assert_allclose(T @ [1, 0, 0, 1], [1, 3, 3, 1], atol=1e-12)  # yaw 90 deg: x -> y
    T = rc.build_se3_transform([0, 0, 0, np.pi / 2, 0, 0])
    np.testing.assert_allclose(T @ [0, 1, 0, 1], [0, 0, 1, 1], atol=1e-12)  # roll 90 deg: y -> z
    T = rc.build_se3_transform([0, 0, 0, 0, np.pi / 2, 0])
    np.testing.assert_allclose(T @ [0, 0, 1, 1], [1, 0, 0, 1], atol=1e-12)  # pitch 90 deg: z -> x
    xyzrpy = np.array([1.7589, 0.2268, 1.0411, -0.0437, -1.4572, 0.0356])
    np.testing.assert_allclose(rc.se3_to_xyzrpy(rc.build_se3_transform(xyzrpy)), xyzrpy, atol=1e-12)
    (tmp_path / "lms_front.txt").write_text("1.7589 0.2268 1.0411 -0.0437 -1.4572 0.0356")
    np.testing.assert_allclose(rc.read_extrinsics(tmp_path / "lms_front.txt"), rc.build_se3_transform(xyzrpy))
    (tmp_path / "bad.txt").write_text("1 2 3\n")
    with pytest.raises(ValueError, match="bad.txt"):
        rc.read_extrinsics(tmp_path / "bad.txt")


# --------------------------------------------------------------------------- poses

def test_read_vo_and_header_check(tmp_path):
    write_vo(tmp_path / "vo.csv", forward_vo_rows(3))
    src, dst, xyzrpy = rc.read_vo(tmp_path / "vo.csv")
    assert src.dtype == np.int64 and src.tolist() == [T0, T0 + STEP, T0 + 2 * STEP]
    assert dst.tolist() == [T0 - STEP, T0, T0 + STEP]
    np.testing.assert_array_equal(xyzrpy[:, 0], 1.0)
    (tmp_path / "bad.csv").write_text("source,destination,x,y,z,roll,pitch,yaw\n")
    with pytest.raises(ValueError, match="bad.csv.*header"):
        rc.read_vo(tmp_path / "bad.csv")


def test_vo_chain_and_halfway_interpolation():
    rows = forward_vo_rows(6)
    src = np.array([r[0] for r in rows])
    xyzrpy = np.array([r[2] for r in rows], dtype=np.float64)
    pose_ts, poses = rc.vo_absolute_poses(src, xyzrpy, T0 + 150_000, T0 + 250_000)
    assert pose_ts.tolist() == [T0 + STEP, T0 + 2 * STEP, T0 + 3 * STEP]  # anchor before, first at/after end
    np.testing.assert_allclose(poses[:, 0, 3], [0, 1, 2])
    requested = [T0 + 150_000, T0 + 275_000]
    rel = rc.interpolate_poses(pose_ts, poses, requested, origin_ts=T0 + 2 * STEP)
    assert requested == [T0 + 150_000, T0 + 275_000]  # the caller's list is not modified
    np.testing.assert_allclose(rel[:, :3, 3], [[-0.5, 0, 0], [0.75, 0, 0]], atol=1e-12)
    np.testing.assert_allclose(rel[:, :3, :3], np.broadcast_to(np.eye(3), (2, 3, 3)), atol=1e-12)
    at_origin = rc.interpolate_poses(pose_ts, poses, [T0 + 150_000], origin_ts=T0 + 150_000)
    np.testing.assert_allclose(at_origin[0], np.eye(4), atol=1e-12)


def test_yaw_interpolates_by_slerp():
    pose_ts = np.array([T0, T0 + STEP])
    poses = np.stack([np.eye(4), rc.build_se3_transform([2, 0, 0, 0, 0, 0.8])])
    rel = rc.interpolate_poses(pose_ts, poses, [T0 + STEP // 4, T0 + STEP], origin_ts=T0)
    np.testing.assert_allclose(rc.se3_to_xyzrpy(rel[0]), [0.5, 0, 0, 0, 0, 0.2], atol=1e-12)
    np.testing.assert_allclose(rel[1], poses[1], atol=1e-12)  # the last pose itself (f = 0 there)
    # dot < 0 (sign flip) still takes the short way: yaw 3.0 -> -3.0 passes through pi, i.e. pi - 3.0 from the origin
    poses = np.stack([rc.build_se3_transform([0] * 5 + [3.0]), rc.build_se3_transform([0] * 5 + [-3.0])])
    mid = rc.interpolate_poses(pose_ts, poses, [T0 + STEP // 2], origin_ts=T0)[0]
    assert abs(rc.se3_to_xyzrpy(mid)[5]) == pytest.approx(np.pi - 3.0, abs=1e-12)


def test_slerp_flips_sign_when_dot_is_negative():
    q0 = np.array([[0.0, 0.0, 0.0, 1.0]])  # identity, scalar last
    q1 = -np.array([[0.0, 0.0, np.sin(0.2), np.cos(0.2)]])  # yaw 0.4, negated quaternion (dot < 0)
    mid = rc.slerp_quaternions(q0, q1, np.array([0.5]))
    np.testing.assert_allclose(np.abs(mid), [[0, 0, np.sin(0.1), np.cos(0.1)]], atol=1e-12)
    same = rc.slerp_quaternions(q0, q0, np.array([0.3]))  # dot = 1: lerp
    np.testing.assert_allclose(same, q0)


def test_vo_must_cover_the_window():
    src = np.array([T0, T0 + STEP, T0 + 2 * STEP])
    xyzrpy = np.zeros((3, 6))
    with pytest.raises(ValueError, match="does not start before"):
        rc.vo_absolute_poses(src, xyzrpy, T0, T0 + STEP)
    with pytest.raises(ValueError, match="does not reach"):
        rc.vo_absolute_poses(src, xyzrpy, T0 + 1, T0 + 2 * STEP + 1)
    with pytest.raises(ValueError, match="outside"):
        rc.interpolate_poses(src, np.tile(np.eye(4), (3, 1, 1)), [T0 + 3 * STEP], origin_ts=T0)


# --------------------------------------------------------------------------- timestamps and frames

def test_timestamps_lookup_and_existing_frames(tmp_path):
    run = tmp_path / "run"
    centre = run / "stereo" / "centre"
    centre.mkdir(parents=True)
    (run / "stereo.timestamps").write_text(f"{T0} 1\n{T0 + 62500} 1\n{T0 + 125000} 2\n")
    (centre / f"{T0}.png").touch()
    (centre / f"{T0 + 125000}.png").touch()
    assert rc.find_timestamps_file(centre) == centre / ".." / ".." / "stereo.timestamps"
    ts, chunks = rc.read_timestamps(run / "stereo.timestamps")
    assert ts.dtype == np.int64 and ts.tolist() == [T0, T0 + 62500, T0 + 125000] and chunks.tolist() == [1, 1, 2]
    assert rc.existing_frames(centre, ts).tolist() == [T0, T0 + 125000]
    assert rc.read_run_frames(run) == [T0, T0 + 125000]
    (run / "stereo" / "stereo.timestamps").write_text(f"{T0} 1\n")  # the first place the SDK looks
    assert rc.find_timestamps_file(centre) == centre / ".." / "stereo.timestamps"
    assert rc.read_run_frames(run) == [T0]


def test_bad_timestamps_line(tmp_path):
    (tmp_path / "lms_front.timestamps").write_text(f"{T0} 1\n{T0}\t1\nnot a line\n")
    with pytest.raises(ValueError, match=r"lms_front\.timestamps:3"):
        rc.read_timestamps(tmp_path / "lms_front.timestamps")


# --------------------------------------------------------------------------- lidar and depth

def write_mini_run(root):
    """models/, extrinsics/, and a run with VO (1 m forward per 0.1 s) and three lms_front scans."""
    width, height = 64, 48
    write_model(root / "models", "stereo_narrow_left", 115, 115, 32, 24)
    (root / "extrinsics").mkdir()
    # laser at (1, 0, -0.5) (0.5 m above the camera), yawed 90 deg: laser (x, y) -> vehicle (-y, x)
    (root / "extrinsics" / "lms_front.txt").write_text(f"1 0 -0.5 0 0 {np.pi / 2!r}\n")
    run = root / "run"
    write_vo(run / "vo" / "vo.csv", forward_vo_rows(10))
    scans = {T0 + 350_000: [[2.0, -10.0, 7.0], [2.0, 5.0, 7.0]],  # second point is behind the camera
             T0 + 400_000: [[2.0, -10.0, 7.0]]}
    (run / "lms_front").mkdir(parents=True)
    for t, points in scans.items():
        np.asarray(points, dtype="<f8").tofile(run / "lms_front" / f"{t}.bin")
    listed = [T0 + 200_000, T0 + 350_000, T0 + 380_000, T0 + 400_000]  # T0+380000 has no file (chunk missing)
    (run / "lms_front.timestamps").write_text("".join(f"{t} 1\n" for t in listed))
    return run, width, height


def test_build_pointcloud_pairs_each_scan_with_its_own_pose(tmp_path):
    run, _, _ = write_mini_run(tmp_path)
    origin = T0 + 300_000
    pc = rc.build_pointcloud(run, tmp_path / "extrinsics", T0 + 300_000, T0 + 450_000, origin)
    # vehicle point of laser (2, -10) is (11, 2, -0.5); +0.5 m (halfway) and +1 m of motion since the origin
    np.testing.assert_allclose(pc.T, [[11.5, 2, -0.5, 1], [-3.5, 2, -0.5, 1], [12, 2, -0.5, 1]], atol=1e-9)


def test_single_lms_point_projects_to_expected_pixel_and_depth(tmp_path):
    run, width, height = write_mini_run(tmp_path)
    image_ts = T0 + 300_000
    model = rc.load_camera_model(tmp_path / "models", "stereo_narrow_left", height, width)
    u, v, depth = rc.project_pointcloud(np.array([[11.5, -3.5], [2, 2], [-0.5, -0.5], [1, 1]]), model, width, height)
    np.testing.assert_allclose(np.stack([u, v, depth]), [[52], [19], [11.5]])  # u = 115*2/11.5 + 32
    gt = rc.gt_depth(run, tmp_path / "models", tmp_path / "extrinsics", image_ts, width=width, height=height,
                     window_us=150_000)
    assert gt.shape == (height, width) and gt.dtype == np.float32
    # scan 1: (u, v) = (52, 19), depth 11.5; scan 2: (51.17, 19.21) -> pixel (19, 51), depth 12
    assert np.count_nonzero(gt) == 2
    assert gt[19, 52] == pytest.approx(11.5) and gt[19, 51] == pytest.approx(12.0)


def test_read_lms_scan(tmp_path):
    np.arange(6, dtype="<f8").tofile(tmp_path / "ok.bin")
    np.testing.assert_array_equal(rc.read_lms_scan(tmp_path / "ok.bin"), [[0, 1, 2], [3, 4, 5]])
    (tmp_path / "bad.bin").write_bytes(b"\0" * 30)
    with pytest.raises(ValueError, match=r"bad\.bin.*multiple of 24"):
        rc.read_lms_scan(tmp_path / "bad.bin")


# --------------------------------------------------------------------------- errors naming the file

def test_truncated_png_names_file(tmp_path):
    png = write_png(tmp_path / "run" / "stereo" / "centre" / f"{T0}.png",
                    np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8))
    data = png.read_bytes()
    png.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"{T0}.png"):
        rc.load_image(png)


def test_non_bayer_png_names_file(tmp_path):
    png = tmp_path / "stereo" / "centre" / "rgb.png"
    png.parent.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(png)
    with pytest.raises(ValueError, match="rgb.png.*mode L"):
        rc.load_image(png)


def test_missing_stereo_timestamps_names_file(tmp_path):
    (tmp_path / "run" / "stereo" / "centre").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="stereo.timestamps"):
        rc.read_run_frames(tmp_path / "run")


def test_missing_run_folder_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_run"):
        rc.read_run_frames(tmp_path / "no_such_run")
