"""Monodepth2's depth decoder and the 19-class segmentation decoder of the same shape.

State-dict layout identical to Monodepth2's `DepthDecoder`: one ModuleList `decoder` holding, in order,
upconv(4,0), upconv(4,1), upconv(3,0), ..., upconv(0,1) (ConvBlock: keys `decoder.{i}.conv.conv.*`), then
one 3x3 head per scale (Conv3x3: keys `decoder.{10+j}.conv.*`)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

NUM_CH_DEC = (16, 32, 64, 128, 256)


class Conv3x3(nn.Module):
    """Reflection pad 1 + 3x3 conv (Monodepth2's `Conv3x3`)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.conv = nn.Conv2d(int(in_channels), int(out_channels), 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad(x))


class ConvBlock(nn.Module):
    """Conv3x3 + ELU (Monodepth2's `ConvBlock`)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = Conv3x3(in_channels, out_channels)
        self.nonlin = nn.ELU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlin(self.conv(x))


def upsample(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour upsampling by 2."""
    return F.interpolate(x, scale_factor=2, mode="nearest")


class MultiScaleDecoder(nn.Module):
    """U-Net decoder over the 5 encoder features, with a 3x3 head of `num_output_channels` at each scale.

    Scale s has 1/2**s of the input resolution. forward returns {s: raw head output}."""

    def __init__(self, num_ch_enc, scales=range(4), num_output_channels: int = 1, use_skips: bool = True):
        super().__init__()
        self.num_ch_enc = [int(c) for c in num_ch_enc]
        if len(self.num_ch_enc) != 5:
            raise ValueError(f"decoder: expected 5 encoder channel counts, got {self.num_ch_enc}")
        self.scales = list(scales)
        if not set(self.scales) <= {0, 1, 2, 3}:
            raise ValueError(f"decoder: scales must be within 0..3, got {self.scales}")
        self.num_output_channels = num_output_channels
        self.use_skips = use_skips
        blocks = []
        for i in range(4, -1, -1):
            ch_in = self.num_ch_enc[-1] if i == 4 else NUM_CH_DEC[i + 1]
            blocks.append(ConvBlock(ch_in, NUM_CH_DEC[i]))
            ch_in = NUM_CH_DEC[i] + (self.num_ch_enc[i - 1] if use_skips and i > 0 else 0)
            blocks.append(ConvBlock(ch_in, NUM_CH_DEC[i]))
        for s in self.scales:
            blocks.append(Conv3x3(NUM_CH_DEC[s], num_output_channels))
        self.decoder = nn.ModuleList(blocks)  # official order: upconvs 4..0, then heads

    def upconv(self, i: int, j: int) -> nn.Module:
        """Monodepth2's ("upconv", i, j) block."""
        return self.decoder[2 * (4 - i) + j]

    def head(self, s: int) -> nn.Module:
        """Monodepth2's ("dispconv", s) head."""
        return self.decoder[10 + self.scales.index(s)]

    def forward(self, features: list[torch.Tensor]) -> dict[int, torch.Tensor]:
        if len(features) != 5:
            raise ValueError(f"decoder: expected the 5 encoder features, got {len(features)}")
        out = {}
        x = features[-1]
        for i in range(4, -1, -1):
            x = [upsample(self.upconv(i, 0)(x))]
            if self.use_skips and i > 0:
                x.append(features[i - 1])
            x = self.upconv(i, 1)(torch.cat(x, 1))
            if i in self.scales:
                out[i] = self.head(i)(x)
        return out


class DepthDecoder(MultiScaleDecoder):
    """Monodepth2's depth decoder: {("disp", s): sigmoid disparity (B, 1, H/2**s, W/2**s)}."""

    def forward(self, features: list[torch.Tensor]) -> dict[tuple[str, int], torch.Tensor]:
        return {("disp", s): torch.sigmoid(x) for s, x in super().forward(features).items()}


class SegDecoder(MultiScaleDecoder):
    """Same decoder with `num_classes` 3x3 heads: {("seg", s): raw logits (B, C, H/2**s, W/2**s)}."""

    def __init__(self, num_ch_enc, scales=range(4), num_classes: int = 19, use_skips: bool = True):
        super().__init__(num_ch_enc, scales, num_classes, use_skips)

    def forward(self, features: list[torch.Tensor]) -> dict[tuple[str, int], torch.Tensor]:
        return {("seg", s): x for s, x in super().forward(features).items()}
