"""Torch geometry (Monodepth2 layers): hand-computed values."""
import math

import pytest
import torch

from pipeline.geometry import (BackprojectDepth, K3_to_K4, Project3D, backproject, disp_to_depth,
                               get_translation_matrix, rot_from_axisangle, transformation_from_parameters,
                               warp_image)

H, W = 5, 7
FX, CX, CY = 10.0, 3.0, 2.0


def _K():
    K3 = torch.tensor([[FX, 0, CX], [0, FX, CY], [0, 0, 1]], dtype=torch.float32)
    K = K3_to_K4(K3)
    return K, torch.linalg.inv(K)


def test_disp_to_depth_values():
    scaled, depth = disp_to_depth(torch.tensor([0.0, 0.5, 1.0]), 0.1, 100.0)
    # min_disp = 0.01, max_disp = 10
    assert torch.allclose(scaled, torch.tensor([0.01, 5.005, 10.0]))
    assert torch.allclose(depth, torch.tensor([100.0, 1 / 5.005, 0.1]))
    with pytest.raises(ValueError):
        disp_to_depth(torch.tensor([0.5]), 1.0, 0.5)


def test_K3_to_K4():
    K, _ = _K()
    assert K.shape == (1, 4, 4)
    assert torch.equal(K[0], torch.tensor([[FX, 0, CX, 0], [0, FX, CY, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    assert K3_to_K4(torch.eye(3).repeat(2, 1, 1)).shape == (2, 4, 4)
    with pytest.raises(ValueError):
        K3_to_K4(torch.eye(4))


def test_zero_parameters_give_identity():
    zero = torch.zeros(2, 1, 3)
    for invert in (False, True):
        T = transformation_from_parameters(zero, zero, invert=invert)
        assert torch.allclose(T, torch.eye(4).repeat(2, 1, 1))


def test_rotation_about_z_by_90_degrees():
    R = rot_from_axisangle(torch.tensor([[[0.0, 0.0, math.pi / 2]]]))[0]
    expected = torch.tensor([[0.0, -1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    assert torch.allclose(R, expected, atol=1e-6)


def test_invert_gives_the_inverse_transform():
    a = torch.tensor([[[0.1, -0.2, 0.3]]])
    t = torch.tensor([[[0.5, 1.0, -2.0]]])
    M = transformation_from_parameters(a, t)
    Minv = transformation_from_parameters(a, t, invert=True)
    assert torch.allclose(M @ Minv, torch.eye(4)[None], atol=1e-6)
    assert torch.allclose(M[0, :3, 3], t[0, 0])  # T @ R: translation applied after rotation
    assert torch.allclose(get_translation_matrix(t)[0, :3, 3], t[0, 0])


def test_backproject_values():
    K, inv_K = _K()
    depth = torch.full((1, 1, H, W), 4.0)
    pts = BackprojectDepth(1, H, W)(depth, inv_K)
    assert pts.shape == (1, 4, H * W)
    u, v = 6, 3  # pixel (row 3, col 6)
    p = pts[0, :, v * W + u]
    assert torch.allclose(p, torch.tensor([4 * (u - CX) / FX, 4 * (v - CY) / FX, 4.0, 1.0]))
    assert torch.equal(backproject(depth, inv_K), pts)


def test_known_translation_projects_one_pixel_right():
    # depth 10, fx 10: a camera translation of +1 along x (T_t->s) moves every point one pixel right
    K, inv_K = _K()
    depth = torch.full((1, 1, H, W), 10.0)
    T = get_translation_matrix(torch.tensor([[1.0, 0.0, 0.0]]))
    grid = Project3D(1, H, W)(BackprojectDepth(1, H, W)(depth, inv_K), K, T)
    assert grid.shape == (1, H, W, 2)
    u = torch.arange(W, dtype=torch.float32)
    v = torch.arange(H, dtype=torch.float32)
    assert torch.allclose(grid[0, :, :, 0], ((u + 1) / (W - 1) * 2 - 1).expand(H, W), atol=1e-5)
    assert torch.allclose(grid[0, :, :, 1], (v / (H - 1) * 2 - 1)[:, None].expand(H, W), atol=1e-5)


def test_warp_image_with_known_translation_and_border_padding():
    K, inv_K = _K()
    depth = torch.full((1, 1, H, W), 10.0)
    T = get_translation_matrix(torch.tensor([[1.0, 0.0, 0.0]]))
    src = torch.arange(W, dtype=torch.float32).expand(1, 1, H, W).contiguous()
    warped = warp_image(src, depth, T, K, inv_K)
    expected = torch.clamp(torch.arange(W, dtype=torch.float32) + 1, max=W - 1)  # border padding
    assert torch.allclose(warped[0, 0], expected.expand(H, W), atol=1e-4)
    with pytest.raises(ValueError):
        warp_image(src, depth[..., :-1], T, K, inv_K)
