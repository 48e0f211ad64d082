"""Camera geometry of training (torch): back-projection / projection (Monodepth2's BackprojectDepth and
Project3D), pose vectors <-> matrices, disp_to_depth, intrinsics helpers.

The numpy projection of points and the ground-truth depth rasteriser are `pipeline.projection` (the
data stages import it without torch).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def disp_to_depth(disp: torch.Tensor, min_depth: float, max_depth: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Sigmoid output -> (scaled_disp, depth), as Monodepth2: disparity is mapped
    linearly onto [1/max_depth, 1/min_depth] and depth = 1 / scaled_disp."""
    if not 0 < min_depth < max_depth:
        raise ValueError(f"disp_to_depth: expected 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
    min_disp = 1.0 / max_depth
    max_disp = 1.0 / min_depth
    scaled_disp = min_disp + (max_disp - min_disp) * disp
    return scaled_disp, 1.0 / scaled_disp


def K3_to_K4(K: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) or (3, 3) intrinsics -> (B, 4, 4) homogeneous intrinsics (Monodepth2's layout)."""
    if K.dim() == 2:
        K = K.unsqueeze(0)
    if K.shape[-2:] != (3, 3) or K.dim() != 3:
        raise ValueError(f"K3_to_K4: expected K of shape (B, 3, 3) or (3, 3), got {tuple(K.shape)}")
    K4 = torch.zeros(K.shape[0], 4, 4, dtype=K.dtype, device=K.device)
    K4[:, :3, :3] = K
    K4[:, 3, 3] = 1.0
    return K4


def pixel_grid(height: int, width: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """(1, 3, H*W) homogeneous pixel coordinates (u, v, 1), u along the width, row-major."""
    v, u = torch.meshgrid(torch.arange(height, dtype=dtype, device=device),
                          torch.arange(width, dtype=dtype, device=device), indexing="ij")
    ones = torch.ones_like(u)
    return torch.stack([u.reshape(-1), v.reshape(-1), ones.reshape(-1)], 0).unsqueeze(0)


def backproject(depth: torch.Tensor, inv_K: torch.Tensor, pix_coords: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 1, H, W) depth + (B, 4, 4) inverse intrinsics -> (B, 4, H*W) homogeneous camera points."""
    if depth.dim() != 4 or depth.shape[1] != 1:
        raise ValueError(f"backproject: expected depth of shape (B, 1, H, W), got {tuple(depth.shape)}")
    b, _, h, w = depth.shape
    if pix_coords is None:
        pix_coords = pixel_grid(h, w, depth.dtype, depth.device)
    cam = torch.matmul(inv_K[:, :3, :3], pix_coords) * depth.reshape(b, 1, -1)
    return torch.cat([cam, torch.ones_like(cam[:, :1])], 1)


def project(points: torch.Tensor, K: torch.Tensor, T: torch.Tensor, height: int, width: int,
            eps: float = 1e-7) -> torch.Tensor:
    """(B, 4, N) points, (B, 4, 4) K and T -> (B, H, W, 2) sampling grid in [-1, 1]
    (x by width - 1, y by height - 1: grid_sample with align_corners=True), as Monodepth2."""
    P = torch.matmul(K, T)[:, :3, :]
    cam = torch.matmul(P, points)
    pix = cam[:, :2, :] / (cam[:, 2:3, :] + eps)
    pix = pix.reshape(points.shape[0], 2, height, width).permute(0, 2, 3, 1)
    scale = torch.tensor([width - 1, height - 1], dtype=pix.dtype, device=pix.device)
    return (pix / scale - 0.5) * 2


class BackprojectDepth(nn.Module):
    """Monodepth2's layer: depth image -> point cloud (pixel grid kept as a non-persistent buffer)."""

    def __init__(self, batch_size: int, height: int, width: int):
        super().__init__()
        self.batch_size, self.height, self.width = batch_size, height, width
        self.register_buffer("pix_coords", pixel_grid(height, width), persistent=False)

    def forward(self, depth: torch.Tensor, inv_K: torch.Tensor) -> torch.Tensor:
        if depth.shape[-2:] != (self.height, self.width):
            raise ValueError(f"BackprojectDepth: built for {self.height}x{self.width}, got depth {tuple(depth.shape)}")
        return backproject(depth, inv_K, self.pix_coords.to(depth.dtype))


class Project3D(nn.Module):
    """Monodepth2's layer: points seen from a camera with intrinsics K at pose T -> grid_sample grid."""

    def __init__(self, batch_size: int, height: int, width: int, eps: float = 1e-7):
        super().__init__()
        self.batch_size, self.height, self.width, self.eps = batch_size, height, width, eps

    def forward(self, points: torch.Tensor, K: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
        return project(points, K, T, self.height, self.width, self.eps)


def rot_from_axisangle(vec: torch.Tensor) -> torch.Tensor:
    """(B, 1, 3) axis-angle -> (B, 4, 4) rotation matrix (Rodrigues), as Monodepth2."""
    if vec.dim() != 3 or vec.shape[1:] != (1, 3):
        raise ValueError(f"rot_from_axisangle: expected (B, 1, 3), got {tuple(vec.shape)}")
    angle = torch.norm(vec, 2, 2, True)
    axis = (vec / (angle + 1e-7))[:, 0]
    angle = angle[:, 0, 0]
    ca, sa = torch.cos(angle), torch.sin(angle)
    C = 1 - ca
    x, y, z = axis[:, 0], axis[:, 1], axis[:, 2]
    rot = torch.zeros(vec.shape[0], 4, 4, dtype=vec.dtype, device=vec.device)
    rot[:, 0, 0] = x * x * C + ca
    rot[:, 0, 1] = x * y * C - z * sa
    rot[:, 0, 2] = z * x * C + y * sa
    rot[:, 1, 0] = x * y * C + z * sa
    rot[:, 1, 1] = y * y * C + ca
    rot[:, 1, 2] = y * z * C - x * sa
    rot[:, 2, 0] = z * x * C - y * sa
    rot[:, 2, 1] = y * z * C + x * sa
    rot[:, 2, 2] = z * z * C + ca
    rot[:, 3, 3] = 1
    return rot


def get_translation_matrix(translation: torch.Tensor) -> torch.Tensor:
    """(B, 1, 3) or (B, 3) translation -> (B, 4, 4) homogeneous translation matrix."""
    t = translation.reshape(-1, 3)
    T = torch.eye(4, dtype=t.dtype, device=t.device).repeat(t.shape[0], 1, 1)
    T[:, :3, 3] = t
    return T


def transformation_from_parameters(axisangle: torch.Tensor, translation: torch.Tensor,
                                   invert: bool = False) -> torch.Tensor:
    """PoseNet output -> (B, 4, 4): T @ R, or R^T @ (-t) translation when invert (Monodepth2)."""
    R = rot_from_axisangle(axisangle)
    t = translation.clone()
    if invert:
        R = R.transpose(1, 2)
        t = -t
    T = get_translation_matrix(t)
    return torch.matmul(R, T) if invert else torch.matmul(T, R)


def warp_image(src_img: torch.Tensor, depth: torch.Tensor, T: torch.Tensor, K: torch.Tensor,
               inv_K: torch.Tensor) -> torch.Tensor:
    """eq. (4)/(9) sampling: the source image seen from the target camera, I_s(Proj(D_t, T_t->s, K)).

    src_img (B, C, H, W); depth (B, 1, H, W) of the target; T (B, 4, 4) target->source; K, inv_K (B, 4, 4)
    at this resolution. Bilinear grid_sample, border padding, align_corners=True (Monodepth2)."""
    if src_img.shape[-2:] != depth.shape[-2:]:
        raise ValueError(f"warp_image: source image {tuple(src_img.shape)} and depth {tuple(depth.shape)} "
                         "must have the same H, W")
    # eq. (4) / eq. (9)
    h, w = depth.shape[-2:]
    grid = project(backproject(depth, inv_K), K, T, h, w)
    return F.grid_sample(src_img, grid, mode="bilinear", padding_mode="border", align_corners=True)


def flip_K(K, width: int):
    """Intrinsics of the horizontally mirrored image, (..., 3, 3) or (..., 4, 4): cx -> (width - 1) - cx
    (pixel-centre convention)."""
    K = K.clone()
    K[..., 0, 2] = (width - 1) - K[..., 0, 2]
    return K
