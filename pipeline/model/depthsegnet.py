"""DepthSegNet24: light enhancement -> shared encoder -> depth and segmentation decoders (paper Fig. 2)."""
from __future__ import annotations

import torch
import torch.nn as nn

from pipeline.geometry import disp_to_depth
from pipeline.model.light import enhance


class DepthSegNet(nn.Module):
    """Submodules `light` (None = no light enhancement), `encoder`, `depth_decoder`, `seg_decoder`, `pose`
    (None at inference). `min_depth`, `max_depth` convert disparities to depth (`disp_to_depth`)."""

    def __init__(self, light: nn.Module | None, encoder: nn.Module, depth_decoder: nn.Module,
                 seg_decoder: nn.Module, pose_net: nn.Module | None, min_depth: float = 0.1,
                 max_depth: float = 100.0):
        super().__init__()
        if not 0 < min_depth < max_depth:
            raise ValueError(f"DepthSegNet: expected 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
        self.light = light
        self.encoder = encoder
        self.depth_decoder = depth_decoder
        self.seg_decoder = seg_decoder
        self.pose = pose_net
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)

    def forward(self, image: torch.Tensor, use_light: bool = True) -> dict:
        """(B, 3, H, W) image in [0, 1] -> dict with "light_map" (r, or None when the light net is off),
        "enhanced" (I + r, or the input), ("disp", s) sigmoid disparities and ("seg", s) logits, s = 0..3."""
        light_map = self.light(image) if (use_light and self.light is not None) else None
        enhanced = image if light_map is None else enhance(image, light_map)
        features = self.encoder(enhanced)
        out = {"light_map": light_map, "enhanced": enhanced}
        out.update(self.depth_decoder(features))
        out.update(self.seg_decoder(features))
        return out

    def depth(self, disp: torch.Tensor) -> torch.Tensor:
        """Sigmoid disparity -> depth in [min_depth, max_depth]."""
        return disp_to_depth(disp, self.min_depth, self.max_depth)[1]
