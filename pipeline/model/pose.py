"""Monodepth2's pose network: a separate ResNet encoder on two stacked frames + `PoseDecoder`.

`PoseDecoder` keys are Monodepth2's: `net.0` (squeeze 1x1), `net.1`, `net.2` (3x3), `net.3` (1x1 -> 6 per frame)."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from pipeline.geometry import transformation_from_parameters
from pipeline.model.encoder import ResnetEncoder


class PoseDecoder(nn.Module):
    """Features of the stacked pair -> axis-angle and translation, each (B, F, 1, 3), scaled by 0.01."""

    def __init__(self, num_ch_enc, num_input_features: int = 1, num_frames_to_predict_for: int | None = 2,
                 stride: int = 1):
        super().__init__()
        self.num_input_features = num_input_features
        if num_frames_to_predict_for is None:
            num_frames_to_predict_for = num_input_features - 1
        self.num_frames_to_predict_for = num_frames_to_predict_for
        squeeze = nn.Conv2d(int(num_ch_enc[-1]), 256, 1)
        pose_0 = nn.Conv2d(num_input_features * 256, 256, 3, stride, 1)
        pose_1 = nn.Conv2d(256, 256, 3, stride, 1)
        pose_2 = nn.Conv2d(256, 6 * num_frames_to_predict_for, 1)
        self.net = nn.ModuleList([squeeze, pose_0, pose_1, pose_2])
        self.relu = nn.ReLU()

    def forward(self, input_features: list[list[torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """`input_features`: one feature list per input feature set (Monodepth2 passes `[encoder(pair)]`)."""
        if len(input_features) != self.num_input_features:
            raise ValueError(f"PoseDecoder: expected {self.num_input_features} feature lists, got {len(input_features)}")
        squeeze, pose_0, pose_1, pose_2 = self.net
        x = torch.cat([self.relu(squeeze(f[-1])) for f in input_features], 1)
        x = self.relu(pose_0(x))
        x = self.relu(pose_1(x))
        x = pose_2(x).mean(3).mean(2)
        x = 0.01 * x.view(-1, self.num_frames_to_predict_for, 1, 6)
        return x[..., :3], x[..., 3:]


class PoseNet(nn.Module):
    """Pose encoder (2 stacked images, keys as Monodepth2's pose_encoder.pth) + decoder (pose.pth)."""

    def __init__(self, num_layers: int = 18, pretrained_path: str | Path | None = None):
        super().__init__()
        self.encoder = ResnetEncoder(num_layers, pretrained_path, num_input_images=2)
        self.decoder = PoseDecoder(self.encoder.num_ch_enc, num_input_features=1, num_frames_to_predict_for=2)

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two temporally ordered frames (earlier first) -> (axisangle, translation), each (B, 2, 1, 3)."""
        return self.decoder([self.encoder(torch.cat([first, second], 1))])

    def transform(self, target: torch.Tensor, source: torch.Tensor, source_is_previous: bool) -> torch.Tensor:
        """eq. (5): T_t->s (B, 4, 4), as Monodepth2's predict_poses: frames fed in time order, and the
        matrix inverted when the source precedes the target."""
        # eq. (5)
        pair = (source, target) if source_is_previous else (target, source)
        axisangle, translation = self(*pair)
        return transformation_from_parameters(axisangle[:, 0], translation[:, 0], invert=source_is_previous)
