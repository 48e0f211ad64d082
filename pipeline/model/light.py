"""Light enhancement module (paper section 3.1, DANNet's relighting net slimmed to Table 4's size).

Conventions: the input image I is RGB float in [0, 1], (B, 3, H, W), H and W even. The network
outputs the light map r = tanh(...) in [-1, 1]; the enhanced image is I + r, NOT clamped (as DANNet
and DESIGN.md: clamping would zero the gradient wherever I + r leaves [0, 1]); see `enhance`.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class LightNet(nn.Module):
    """ResNet-generator stem without residual blocks: one stride-2 conv down, one transposed conv up.

    Layout (DESIGN.md): pad 3 + 7x7 conv 3->C (no bias) + BN + ReLU; 3x3/2 conv C->2C + BN + ReLU;
    3x3/2 transposed conv 2C->C (output_padding 1) + BN + ReLU; pad 3 + 7x7 conv C->3 (bias) + tanh.
    166,787 parameters for C = 64. Keys `model.{i}.*` as DANNet's `ResnetGenerator`.

    The last conv starts at zero, so r = 0 and I + r = I at step 0: the module starts as the identity
    and learns from there (the paper gives no initialisation). PyTorch's default initialisation there
    gives a light map of mean |r| 0.33 on images in [0, 1], which scrambles the encoder's input until
    the light loss (weight 0.01) has pulled it back. On the demo, with the default initialisation the
    RobotCar student ended worse than a constant depth by night for 3 seeds in 5 at lr 2.5e-4, and by
    day and night for both seeds tried at 5e-4 (README, "Why the light map starts at zero")."""

    def __init__(self, base_channels: int = 64):
        super().__init__()
        c = int(base_channels)
        if c <= 0:
            raise ValueError(f"LightNet: base_channels must be a positive int, got {base_channels}")
        self.model = nn.Sequential(
            nn.ReflectionPad2d(3),
            nn.Conv2d(3, c, kernel_size=7, padding=0, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(True),
            nn.Conv2d(c, 2 * c, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * c),
            nn.ReLU(True),
            nn.ConvTranspose2d(2 * c, c, kernel_size=3, stride=2, padding=1, output_padding=1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(True),
            nn.ReflectionPad2d(3),
            nn.Conv2d(c, 3, kernel_size=7, padding=0),
            nn.Tanh(),
        )
        last = self.model[-2]
        nn.init.zeros_(last.weight)  # r = tanh(0) = 0 at step 0 (after the default init: the RNG draws are unchanged)
        nn.init.zeros_(last.bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) image in [0, 1] -> light map r (B, 3, H, W) in [-1, 1]."""
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"LightNet: expected a (B, 3, H, W) image, got {tuple(image.shape)}")
        if image.shape[2] % 2 or image.shape[3] % 2:
            raise ValueError(f"LightNet: H and W must be even, got {tuple(image.shape[2:])}")
        return self.model(image)


def enhance(image: torch.Tensor, light_map: torch.Tensor) -> torch.Tensor:
    """Enhanced image I + r (no clamp)."""
    return image + light_map
