"""The one crop + resize pixel mapping (pipeline.datasets.images.CropResize)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from pipeline.datasets.images import CropResize
from pipeline.projection import project_points

K = np.array([[500.0, 0.0, 319.5], [0.0, 480.0, 241.0], [0.0, 0.0, 1.0]])
MAP = CropResize((10, 40, 30, 20), (640, 480), (300, 210))       # kept 600x420 -> 300x210: sx = sy = 0.5


def test_scale_and_box():
    assert MAP.box == (10, 40, 610, 460) and (MAP.sx, MAP.sy) == (0.5, 0.5) and (MAP.left, MAP.top) == (10, 40)
    # pixel centres: the first kept pixel's centre is (10, 40); in the output it lies a quarter pixel up-left
    np.testing.assert_allclose(MAP.points(10.0, 40.0), (-0.25, -0.25))
    np.testing.assert_allclose(MAP.points(10.5, 40.5), (0.0, 0.0))   # centre of output pixel (0, 0)


def test_points_intrinsics_and_inverses_agree():
    pts = np.random.default_rng(0).uniform([-5, -3, 2], [5, 3, 40], (200, 3)).T
    u, v, _ = project_points(pts, K)
    u2, v2, _ = project_points(pts, MAP.intrinsics(K))
    np.testing.assert_allclose(MAP.points(u, v), (u2, v2), atol=1e-9)
    np.testing.assert_allclose(MAP.points_inverse(u2, v2), (u, v), atol=1e-9)
    np.testing.assert_allclose(MAP.intrinsics_inverse(MAP.intrinsics(K)), K, atol=1e-12)
    batch = np.stack([K, 2 * K])
    batch[1, 2] = [0, 0, 1]
    np.testing.assert_allclose(MAP.intrinsics(batch)[1], MAP.intrinsics(batch[1]))
    assert MAP.intrinsics(K).dtype == np.float64 and K[0, 2] == 319.5          # the input is not modified


def test_torch_intrinsics_match_numpy():
    Kt = torch.tensor(np.stack([K, K]), dtype=torch.float32)
    out = MAP.intrinsics(Kt)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (2, 3, 3)
    np.testing.assert_allclose(out.numpy(), np.stack([MAP.intrinsics(K)] * 2), rtol=1e-6)
    assert torch.equal(Kt[0], torch.tensor(K, dtype=torch.float32))
    plain = CropResize.resize((60, 40), (120, 20))                         # the teachers' plain resize
    np.testing.assert_allclose(plain.intrinsics(K)[:2, :], [[1000, 0, 639.5], [0, 240, 120.25]])


def test_image_and_rasterize():
    img = np.arange(480 * 640, dtype=np.float32).reshape(480, 640)
    out = MAP.image(img)
    assert out.shape == (210, 300)
    # INTER_AREA at 1/2: the mean of the 2x2 block whose centre maps to the output pixel centre
    np.testing.assert_allclose(out[0, 0], img[40:42, 10:12].mean())
    labels = MAP.image(img.astype(np.uint16), nearest=True)
    assert labels[3, 5] == img[40 + 6, 10 + 10]
    # (10.5, 40.5) and (11.4, 40.6) share output pixel (0, 0): the nearest wins; (609.6, 459.6) maps to
    # (299.55, 209.55), i.e. column 300: outside, like (700, 100)
    depth = MAP.rasterize([10.5, 11.4, 609.4, 609.6, 700.0], [40.5, 40.6, 459.4, 459.6, 100.0], [3, 2, 5, 4, 1])
    assert depth.shape == (210, 300) and depth.dtype == np.float32
    assert depth[0, 0] == 2.0 and depth[209, 299] == 5.0 and np.count_nonzero(depth) == 2
    with pytest.raises(ValueError, match="expected 640x480"):
        MAP.image(img[:10])


def test_bad_crop_names_it():
    with pytest.raises(ValueError, match=r"crop \[0, 300, 0, 200\].*640x480"):
        CropResize((0, 300, 0, 200), (640, 480), (64, 48))
    with pytest.raises(ValueError, match="4 margins"):
        CropResize((0, 0, 0), (640, 480), (64, 48))


def test_write_jpeg_keeps_rgb_order(tmp_path):
    from pipeline.datasets.images import write_jpeg

    rgb = np.zeros((16, 24, 3), np.uint8)
    rgb[:, :8, 0] = 250    # red band, green band, blue band
    rgb[:, 8:16, 1] = 250
    rgb[:, 16:, 2] = 250
    write_jpeg(tmp_path / "x.jpg", rgb, 95)
    back = cv2.imread(str(tmp_path / "x.jpg"))[..., ::-1]          # OpenCV reads BGR
    for band, channel in ((slice(0, 8), 0), (slice(8, 16), 1), (slice(16, 24), 2)):
        mean = back[:, band].reshape(-1, 3).mean(0)               # JPEG blurs the band edges, not the means
        assert mean[channel] > 200 and np.delete(mean, channel).max() < 60, (channel, mean)
    with pytest.raises(OSError, match="could not write"):
        write_jpeg(tmp_path / "missing" / "x.jpg", rgb, 95)
