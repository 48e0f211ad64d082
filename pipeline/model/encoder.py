"""ResNet encoder, state-dict compatible with Monodepth2's `ResnetEncoder` (keys `encoder.*`, incl. `encoder.fc.*`)."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torchvision.models as models

_RESNETS = {18: models.resnet18, 34: models.resnet34, 50: models.resnet50,
            101: models.resnet101, 152: models.resnet152}


def load_torchvision_state(path: str | Path, num_input_images: int = 1) -> dict:
    """Read a local torchvision ResNet state dict (.pth); for n stacked images, conv1 is repeated n times
    along the input channels and divided by n (Monodepth2's `resnet_multiimage_input`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained encoder weights not found: {path} (expected a torchvision ResNet .pth)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "conv1.weight" not in state:
        raise ValueError(f"{path}: expected a torchvision ResNet state dict with key 'conv1.weight'")
    if num_input_images > 1:
        state = dict(state)
        state["conv1.weight"] = torch.cat([state["conv1.weight"]] * num_input_images, 1) / num_input_images
    return state


def _multi_image_conv1(num_input_images: int) -> nn.Conv2d:
    conv = nn.Conv2d(num_input_images * 3, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


class ResnetEncoder(nn.Module):
    """torchvision ResNet in attribute `encoder`; forward returns Monodepth2's 5 feature maps
    (strides 2, 4, 8, 16, 32) of an image in [0, 1], normalised as (x - 0.45) / 0.225."""

    def __init__(self, num_layers: int = 18, pretrained_path: str | Path | None = None, num_input_images: int = 1):
        super().__init__()
        if num_layers not in _RESNETS:
            raise ValueError(f"ResnetEncoder: num_layers must be one of {sorted(_RESNETS)}, got {num_layers}")
        if num_input_images < 1:
            raise ValueError(f"ResnetEncoder: num_input_images must be >= 1, got {num_input_images}")
        self.num_input_images = num_input_images
        self.encoder = _RESNETS[num_layers](weights=None)
        if num_input_images > 1:
            self.encoder.conv1 = _multi_image_conv1(num_input_images)
        self.num_ch_enc = [64, 64, 128, 256, 512] if num_layers <= 34 else [64, 256, 512, 1024, 2048]
        if pretrained_path is not None:
            self.encoder.load_state_dict(load_torchvision_state(pretrained_path, num_input_images))

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        if image.dim() != 4 or image.shape[1] != 3 * self.num_input_images:
            raise ValueError(f"ResnetEncoder: expected (B, {3 * self.num_input_images}, H, W), got {tuple(image.shape)}")
        e = self.encoder
        x = (image - 0.45) / 0.225
        f0 = e.relu(e.bn1(e.conv1(x)))
        f1 = e.layer1(e.maxpool(f0))
        f2 = e.layer2(f1)
        f3 = e.layer3(f2)
        f4 = e.layer4(f3)
        return [f0, f1, f2, f3, f4]
