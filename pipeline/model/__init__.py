"""The student network (paper section 3.1) and its builder from the merged config."""
from __future__ import annotations

from pipeline.model.complexity import count_macs, count_parameters
from pipeline.model.decoders import DepthDecoder, SegDecoder
from pipeline.model.depthsegnet import DepthSegNet
from pipeline.model.encoder import ResnetEncoder
from pipeline.model.light import LightNet
from pipeline.model.pose import PoseDecoder, PoseNet

__all__ = ["build_model", "DepthSegNet", "LightNet", "ResnetEncoder", "DepthDecoder", "SegDecoder",
           "PoseDecoder", "PoseNet", "count_parameters", "count_macs"]

def build_model(cfg: dict) -> DepthSegNet:
    """The student from the whole merged config (validated by the schema, which fills in every default:
    `pipeline.config.validated`; errors name the key).

    `model.encoder.pretrained` (a local torchvision ResNet .pth, or null) initialises both the shared
    encoder and the pose encoder, as Monodepth2 does. The input size is kept as `model.width/height`."""
    from pipeline.config import validated

    s = validated(cfg)["model"]
    pretrained = s["encoder"]["pretrained"]
    num_layers = s["encoder"]["num_layers"]
    try:
        encoder = ResnetEncoder(num_layers, pretrained)
        pose = PoseNet(num_layers, pretrained)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"config key 'model.encoder.pretrained': {e}") from e
    light = LightNet(s["light"]["base_channels"]) if s["light"]["enabled"] else None
    model = DepthSegNet(
        light=light,
        encoder=encoder,
        depth_decoder=DepthDecoder(encoder.num_ch_enc),
        seg_decoder=SegDecoder(encoder.num_ch_enc, num_classes=s["num_classes"]),
        pose_net=pose,
        min_depth=float(s["min_depth"]),
        max_depth=float(s["max_depth"]),
    )
    model.width, model.height = s["width"], s["height"]
    return model
