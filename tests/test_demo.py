"""Procedural renderer (pipeline.datasets.render) and the nuScenes-format demo writer (nuscenes_demo)."""
from __future__ import annotations

import glob
import os

import cv2
import numpy as np
import pytest

from pipeline.datasets import nuscenes_demo as demo
from pipeline.datasets import render

W, H, KEYFRAMES, SWEEPS = 320, 180, 2, 1


# ----------------------------------------------------------------------------- renderer


def _scene(prims, road_half_width=4.5):
    """A hand-made scene from (kind, geom6, label) tuples."""
    kind = np.array([p[0] for p in prims], np.int8)
    geom = np.array([p[1] for p in prims], np.float32)
    aabb = []
    for k, g in zip(kind, geom):
        if k == render.BOX:
            aabb.append(g)
        elif k == render.CYLINDER:
            aabb.append([g[0] - g[2], g[1] - g[2], g[3], g[0] + g[2], g[1] + g[2], g[4]])
        else:
            aabb.append([g[0] - g[3], g[1] - g[3], g[2] - g[3], g[0] + g[3], g[1] + g[3], g[2] + g[3]])
    n = len(prims)
    return render.Scene(seed=0, length_m=100.0, road_half_width=road_half_width, sidewalk_width=2.0,
                        kind=kind, geom=geom, aabb=np.array(aabb, np.float32),
                        label=np.array([p[2] for p in prims], np.uint8),
                        material=np.full(n, render.M_WALL, np.int8), color=np.full((n, 3), 0.5, np.float32),
                        aux=np.zeros((n, 4), np.float32), lights=np.zeros((0, 3), np.float32))


HAND = _scene([
    (render.BOX, [10, -1, 0, 12, 1, 2], render.BUILDING),
    (render.CYLINDER, [0, 20, 0.5, 0, 3, 0], render.POLE),
    (render.SPHERE, [0, -30, 1, 1, 0, 0], render.VEGETATION),
])
# camera at (0, 0, 1) looking along +x: camera x -> world -y, camera y -> world -z, z -> +x
T_LOOK_X = np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 1], [0, 0, 0, 1]], np.float64)
K_SMALL = np.array([[50.0, 0, 31.0], [0, 50.0, 23.0], [0, 0, 1]])


def test_cast_rays_hand_computed_distances_and_labels():
    o = np.array([[0, 0, 1], [0, 0, 1], [0, 0, 1], [0, 0, 2], [0, 0, 1], [0, 0, 1], [0, 6, 1]], np.float32)
    d = np.array([[1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, -1], [0, 0, 1], [3, 0, 0], [0, 0, -1]], np.float32)
    t, lab = render.cast_rays(HAND, o, d)
    np.testing.assert_allclose(t[:4], [10.0, 19.5, 29.0, 2.0], rtol=1e-6)
    assert np.isinf(t[4])
    assert t[5] == pytest.approx(10.0)               # distance along the UNIT direction
    assert lab.tolist() == [render.BUILDING, render.POLE, render.VEGETATION, render.ROAD, render.SKY,
                            render.BUILDING, render.TERRAIN]
    t, _ = render.cast_rays(HAND, o[:1], d[:1], max_dist=9.0)
    assert np.isinf(t[0])


def test_cast_rays_rejects_bad_shapes():
    with pytest.raises(ValueError, match="origins and directions"):
        render.cast_rays(HAND, np.zeros((3, 2)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="non-zero"):
        render.cast_rays(HAND, np.zeros((1, 3)), np.zeros((1, 3)))


def test_render_depth_is_z_depth_hand_computed():
    rgb, depth, labels = render.render(HAND, T_LOOK_X, K_SMALL, 63, 47)
    assert rgb.shape == (47, 63, 3) and rgb.dtype == np.uint8
    assert depth.dtype == np.float32 and labels.dtype == np.uint8
    # the box face x = 10 spans y in [-1, 1], z in [0, 2]: fronto-parallel, so z-depth is 10
    assert labels[23, 31] == render.BUILDING
    face = labels == render.BUILDING
    np.testing.assert_allclose(depth[face], 10.0, rtol=1e-5)
    # 2 m wide at 10 m with f = 50: 10 px wide, columns 26..36 around cx = 31
    assert face[23].sum() in (10, 11)
    # ground below the horizon row cy = 23: depth = fy * height / (v - cy)
    v = np.arange(40, 47)
    np.testing.assert_allclose(depth[v, 5], 50.0 / (v - 23.0), rtol=1e-5)
    assert np.all(labels[40:, 5] == render.ROAD)
    # above the horizon and off the box: sky at infinity
    assert np.isinf(depth[2, 2]) and labels[2, 2] == render.SKY


def test_render_rejects_bad_camera():
    with pytest.raises(ValueError, match="K must be"):
        render.render(HAND, T_LOOK_X, np.eye(2), 8, 8)
    with pytest.raises(ValueError, match="T_world_cam"):
        render.render(HAND, np.eye(3), K_SMALL, 8, 8)


def test_make_scene_and_trajectory():
    a, b = render.make_scene(5, 200.0), render.make_scene(5, 200.0)
    assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("kind", "geom", "label", "color"))
    other = render.make_scene(6, 200.0)
    assert not (other.geom.shape == a.geom.shape and np.array_equal(other.geom, a.geom))
    assert {render.SIDEWALK, render.BUILDING, render.POLE, render.VEGETATION, render.CAR} <= set(a.label.tolist())
    assert len(a.lights) > 0
    times = np.array([0.0, 0.5, 1.0])
    poses = render.trajectory(a, times, speed_mps=8.0, seed=1)
    assert len(poses) == 3 and all(p.shape == (4, 4) for p in poses)
    assert all(p[2, 3] == 0.0 for p in poses)
    dx = np.diff([p[0, 3] for p in poses])
    np.testing.assert_allclose(dx, 4.0, rtol=1e-9)
    yaw = [np.degrees(np.arctan2(p[1, 0], p[0, 0])) for p in poses]
    assert max(abs(y) for y in yaw) < 3.0
    assert np.array_equal(poses[1], render.trajectory(a, [0.5], 8.0, 1)[0])
    with pytest.raises(ValueError, match="length_m"):
        render.make_scene(0, -1.0)


def test_render_matches_cast_rays_and_day_night():
    scene = render.make_scene(2, 150.0)
    T = render.trajectory(scene, [1.0], 8.0, 0)[0] @ demo.pose_matrix(demo.CAM_FRONT_TRANSLATION,
                                                                       demo.CAM_FRONT_ROTATION)
    K = demo.camera_intrinsics(W, H)
    rgb, depth, labels = render.render(scene, T, K, W, H, night=False)
    rng = np.random.default_rng(3)
    rows, cols = rng.integers(0, H, 300), rng.integers(0, W, 300)
    dirs_cam = np.stack([(cols - K[0, 2]) / K[0, 0], (rows - K[1, 2]) / K[1, 1], np.ones(300)], 1)
    dirs = dirs_cam @ T[:3, :3].T
    t, lab = render.cast_rays(scene, np.broadcast_to(T[:3, 3], dirs.shape), dirs)
    z = t / np.linalg.norm(dirs_cam, axis=1)              # distance along the ray -> z-depth
    finite = np.isfinite(depth[rows, cols])
    assert np.array_equal(np.isfinite(z), finite)
    np.testing.assert_allclose(z[finite], depth[rows, cols][finite], rtol=1e-4)
    assert np.mean(lab == labels[rows, cols]) > 0.99
    night, _, night_labels = render.render(scene, T, K, W, H, night=True, rng=np.random.default_rng(1))
    again, _, _ = render.render(scene, T, K, W, H, night=True, rng=np.random.default_rng(1))
    assert np.array_equal(night, again) and np.array_equal(night_labels, labels)
    assert night.mean() < 0.7 * rgb.mean()
    sky = labels == render.SKY
    assert rgb[sky].mean() > 150 and night[sky].mean() < 40


def test_render_scaled_traces_every_third_ray_of_the_full_render_and_upsamples():
    """At scale 1/3 the low-resolution ray j is the full-resolution ray 3j + 1 (pixel centres:
    (j + 0.5) * 3 - 0.5), so depth and labels at full pixels (3i + 1, 3j + 1) equal the full render's,
    and nearest-neighbour upsampling puts them back there. A wrong principal-point shift (e.g. cx * s)
    moves every ray by a third of a pixel and breaks the equality."""
    scene = render.make_scene(2, 150.0)
    T = render.trajectory(scene, [1.0], 8.0, 0)[0] @ demo.pose_matrix(demo.CAM_FRONT_TRANSLATION,
                                                                       demo.CAM_FRONT_ROTATION)
    w, h = 96, 48
    K = demo.camera_intrinsics(w, h)
    rgb, depth, labels = render.render(scene, T, K, w, h)
    srgb, sdepth, slabels = render.render_scaled(scene, T, K, w, h, scale=1 / 3)
    assert srgb.shape == rgb.shape and sdepth.shape == depth.shape and slabels.shape == labels.shape
    rows, cols = np.meshgrid(np.arange(1, h, 3), np.arange(1, w, 3), indexing="ij")
    a, b = depth[rows, cols], sdepth[rows, cols]
    assert np.array_equal(np.isfinite(a), np.isfinite(b))
    np.testing.assert_allclose(b[np.isfinite(a)], a[np.isfinite(a)], rtol=1e-4)   # float32 rays
    assert np.array_equal(slabels[rows, cols], labels[rows, cols])
    assert np.mean(slabels == labels) > 0.9                       # upsampled labels mostly agree elsewhere
    assert np.abs(srgb.astype(int) - rgb).mean() < 20
    same = render.render_scaled(scene, T, K, w, h, scale=1.0)
    assert all(np.array_equal(x, y) for x, y in zip(same, (rgb, depth, labels)))
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="scale"):
            render.render_scaled(scene, T, K, w, h, scale=bad)


# ----------------------------------------------------------------------------- nuScenes demo


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("nuscenes_demo")
    summary = demo.write_nuscenes_demo(root, seed=0, keyframes_per_scene=KEYFRAMES, sweeps_between=SWEEPS,
                                       width=W, height=H, progress=False)
    return str(root), summary


@pytest.fixture(scope="module")
def nusc(written):
    from nuscenes.nuscenes import NuScenes

    return NuScenes(version="v1.0-mini", dataroot=written[0], verbose=False)


def test_scenes_splits_and_day_night(nusc):
    from nuscenes.utils.splits import create_splits_scenes

    splits = create_splits_scenes()
    assert len(nusc.scene) == 6
    specs = {s.name: s for s in demo.DEMO_SCENES}
    for sc in nusc.scene:
        spec = specs[sc["name"]]
        assert sc["name"] in splits[spec.split]
        d = sc["description"].lower()
        assert ("night" in d) == spec.night and "rain" not in d
        assert sc["nbr_samples"] == KEYFRAMES
    nights = {s.split: 0 for s in specs.values()}
    for s in specs.values():
        nights[s.split] += s.night
    assert nights == {"mini_train": 2, "mini_val": 1}


def test_every_keyframe_has_sweep_neighbours(nusc):
    for sample in nusc.sample:
        cam = nusc.get("sample_data", sample["data"]["CAM_FRONT"])
        prev, nxt = nusc.get("sample_data", cam["prev"]), nusc.get("sample_data", cam["next"])
        assert not prev["is_key_frame"] and not nxt["is_key_frame"]
        assert prev["timestamp"] < cam["timestamp"] < nxt["timestamp"]
        assert prev["filename"].startswith("sweeps/CAM_FRONT/")
        assert 5_000 <= cam["timestamp"] - sample["timestamp"] <= 15_000      # a few ms after the lidar
        lidar = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        assert lidar["timestamp"] == sample["timestamp"]
        assert nusc.get("ego_pose", lidar["ego_pose_token"])["translation"] != \
            nusc.get("ego_pose", cam["ego_pose_token"])["translation"]
    for sc in nusc.scene:                        # the whole CAM_FRONT chain of one scene
        first = nusc.get("sample", sc["first_sample_token"])
        sd = nusc.get("sample_data", first["data"]["CAM_FRONT"])
        while sd["prev"]:
            sd = nusc.get("sample_data", sd["prev"])
        chain = [sd]
        while sd["next"]:
            sd = nusc.get("sample_data", sd["next"])
            chain.append(sd)
        assert len(chain) == KEYFRAMES + (KEYFRAMES - 1) * SWEEPS + 2
        stamps = [c["timestamp"] for c in chain]
        assert stamps == sorted(stamps)
        # a sweep belongs to the following sample; the trailing sweep to the last one
        order = [nusc.get("sample", c["sample_token"])["timestamp"] for c in chain]
        assert order[0] == order[1] and order[-1] == order[-2] and order == sorted(order)
        assert chain[-1]["sample_token"] == sc["last_sample_token"]
        for sweep in (chain[0], chain[-1]):      # the devkit resolves the edge sweeps too
            path, boxes, K = nusc.get_sample_data(sweep["token"])
            assert os.path.exists(path) and boxes == [] and K.shape == (3, 3)


def test_file_counts_and_sizes(written, nusc):
    root, summary = written
    n_key, n_sweep = 6 * KEYFRAMES, 6 * ((KEYFRAMES - 1) * SWEEPS + 2)
    assert len(glob.glob(f"{root}/samples/CAM_FRONT/*.jpg")) == n_key
    assert len(glob.glob(f"{root}/sweeps/CAM_FRONT/*.jpg")) == n_sweep
    assert len(glob.glob(f"{root}/samples/LIDAR_TOP/*.pcd.bin")) == n_key
    assert len(glob.glob(f"{root}/labels/CAM_FRONT/*.png")) == n_key + n_sweep
    assert len(glob.glob(f"{root}/v1.0-mini/*.json")) == 13
    assert all(os.path.exists(os.path.join(root, m["filename"])) for m in nusc.map)
    assert (summary["n_cam_keyframes"], summary["n_cam_sweeps"], summary["n_lidar"]) == (n_key, n_sweep, n_key)
    for sd in nusc.sample_data:
        assert os.path.exists(os.path.join(root, sd["filename"]))
        if sd["channel"] == "CAM_FRONT":
            assert cv2.imread(os.path.join(root, sd["filename"])).shape == (H, W, 3)
    cs = nusc.get("calibrated_sensor", nusc.sample_data[0]["calibrated_sensor_token"])
    np.testing.assert_allclose(np.array(cs["camera_intrinsic"])[0, 0], 1266.417203046554 * W / 1600)


def test_lidar_file_format(written, nusc):
    root, _ = written
    sd = nusc.get("sample_data", nusc.sample[0]["data"]["LIDAR_TOP"])
    raw = np.fromfile(os.path.join(root, sd["filename"]), dtype=np.float32)
    assert raw.size % 5 == 0
    pts = raw.reshape(-1, 5)
    assert len(pts) > 5000
    rng_m = np.linalg.norm(pts[:, :3], axis=1)
    assert rng_m.max() <= demo.LIDAR_MAX_RANGE + 1e-3 and rng_m.min() >= 1.0 - 1e-3
    ring = pts[:, 4]
    assert np.array_equal(ring, np.round(ring)) and ring.min() >= 0 and ring.max() <= 31
    elev = np.degrees(np.arcsin(pts[:, 2] / rng_m))
    np.testing.assert_allclose(elev, demo.LIDAR_RINGS[ring.astype(int)], atol=1e-2)
    assert pts[:, 3].min() >= 0 and pts[:, 3].max() <= 255
    # the ground in front of the car: lidar frame y forward, z up, mounted 1.84 m high
    ahead = (pts[:, 1] > 5) & (np.abs(pts[:, 0]) < 1) & (pts[:, 4] < 8)
    np.testing.assert_allclose(pts[ahead, 2], -1.84, atol=0.1)


def _exact_camera(nusc, summary, cam_token):
    cam = nusc.get("sample_data", cam_token)
    ep = nusc.get("ego_pose", cam["ego_pose_token"])
    cs = nusc.get("calibrated_sensor", cam["calibrated_sensor_token"])
    T = demo.pose_matrix(ep["translation"], ep["rotation"]) @ demo.pose_matrix(cs["translation"], cs["rotation"])
    sc = nusc.get("scene", nusc.get("sample", cam["sample_token"])["scene_token"])
    info = next(s for s in summary["scenes"] if s["name"] == sc["name"])
    scene = render.make_scene(info["scene_seed"], info["length_m"])
    return render.render(scene, T, np.array(cs["camera_intrinsic"]), cam["width"], cam["height"],
                         night=info["night"])


@pytest.mark.parametrize("scene_index", [0, 5])            # a day and a night scene
def test_lidar_projection_agrees_with_exact_depth(written, nusc, scene_index):
    sample = nusc.get("sample", nusc.scene[scene_index]["first_sample_token"])
    cam_token = sample["data"]["CAM_FRONT"]
    points, depth, image = nusc.explorer.map_pointcloud_to_image(sample["data"]["LIDAR_TOP"], cam_token)
    assert image.size == (W, H) and len(depth) > 500
    _, exact, _ = _exact_camera(nusc, written[1], cam_token)
    col, row = np.floor(points[0] + 0.5).astype(int), np.floor(points[1] + 0.5).astype(int)
    ref = exact[row, col]
    finite = np.isfinite(ref)
    assert finite.mean() > 0.98
    rel = np.abs(depth[finite] - ref[finite]) / ref[finite]
    assert np.median(rel) < 0.01
    assert np.mean(rel < 0.05) > 0.9


def test_label_pngs_are_exact_ground_truth(written, nusc):
    root, summary = written
    for sd in nusc.sample_data:
        if sd["channel"] != "CAM_FRONT":
            continue
        base = os.path.basename(sd["filename"])[:-4]
        lab = cv2.imread(os.path.join(root, "labels", "CAM_FRONT", base + ".png"), cv2.IMREAD_UNCHANGED)
        assert lab.shape == (H, W) and lab.dtype == np.uint8
        assert lab.max() < 19 and render.SKY in lab and render.ROAD in lab
    sample = nusc.get("sample", nusc.scene[2]["first_sample_token"])
    cam = nusc.get("sample_data", sample["data"]["CAM_FRONT"])
    _, _, exact = _exact_camera(nusc, summary, cam["token"])
    base = os.path.basename(cam["filename"])[:-4]
    lab = cv2.imread(os.path.join(root, "labels", "CAM_FRONT", base + ".png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(lab, exact)


def test_day_and_night_images(written, nusc):
    root, _ = written
    means = {True: [], False: []}
    for sc in nusc.scene:
        sample = nusc.get("sample", sc["first_sample_token"])
        filename = nusc.get("sample_data", sample["data"]["CAM_FRONT"])["filename"]
        img = cv2.imread(os.path.join(root, filename))                      # BGR
        night = "night" in sc["description"].lower()
        means[night].append(img.mean())
        if not night:                           # channel order on disk: a blue day sky
            lab = cv2.imread(os.path.join(root, "labels", "CAM_FRONT", os.path.basename(filename)[:-4] + ".png"),
                             cv2.IMREAD_UNCHANGED)
            sky = img[lab == render.SKY].astype(float).mean(0)
            assert sky[0] > sky[2] + 20
    assert max(means[True]) < min(means[False])


def test_same_seed_gives_identical_bytes(written, tmp_path):
    root, _ = written
    demo.write_nuscenes_demo(tmp_path, seed=0, keyframes_per_scene=KEYFRAMES, sweeps_between=SWEEPS,
                             width=W, height=H, progress=False)
    files = sorted(os.path.relpath(p, root) for p in glob.glob(f"{root}/**/*.*", recursive=True)
                   if os.path.isfile(p))
    again = sorted(os.path.relpath(p, tmp_path) for p in glob.glob(f"{tmp_path}/**/*.*", recursive=True)
                   if os.path.isfile(p))
    assert len(files) == 12 + 18 + 12 + 30 + 13 + 4
    assert files == again
    jpg = next(f for f in files if f.endswith(".jpg"))
    pcd = next(f for f in files if f.endswith(".pcd.bin"))
    for rel in [jpg, pcd] + files:
        with open(os.path.join(root, rel), "rb") as a, open(os.path.join(tmp_path, rel), "rb") as b:
            assert a.read() == b.read(), rel


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="keyframes_per_scene"):
        demo.write_nuscenes_demo(tmp_path, keyframes_per_scene=0, progress=False)
    with pytest.raises(ValueError, match="width/height"):
        demo.write_nuscenes_demo(tmp_path, width=8, height=8, progress=False)
    with pytest.raises(ValueError, match="sweeps_between"):
        demo.write_nuscenes_demo(tmp_path, sweeps_between=-1, progress=False)
