"""The student network (paper section 3.1) and its builder from the merged config."""
from __future__ import annotations

from pipeline.model.complexity import count_macs, count_parameters
from pipeline.model.decoders import DepthDecoder, SegDecoder
from pipeline.model.depthsegnet import DepthSegNet
from pipeline.model.encoder import ResnetEncoder
from pipeline.model.light import LightNet
from pipeline.model.pose import PoseDecoder, PoseNet

__all__ = ["build_model", "DepthSegNet", "LightNet", "ResnetEncoder", "DepthDecoder", "SegDecoder",
           "PoseDecoder", "PoseNet", "count_parameters", "count_macs", "MODEL_DEFAULTS"]

MODEL_DEFAULTS = {
    "num_classes": 19,
    "light": {"enabled": True, "base_channels": 64},
    "encoder": {"num_layers": 18, "pretrained": None},
    "min_depth": 0.1,
    "max_depth": 100.0,
    "width": 576,
    "height": 320,
}


def _model_settings(cfg: dict) -> dict:
    """cfg["model"] over MODEL_DEFAULTS (one level of nesting), validated; errors name the key."""
    if not isinstance(cfg, dict):
        raise ValueError(f"build_model: expected the whole config as a dict, got {type(cfg).__name__}")
    model_cfg = cfg.get("model") or {}
    if not isinstance(model_cfg, dict):
        raise ValueError("config key 'model' must be a mapping")
    s = {}
    for key, default in MODEL_DEFAULTS.items():
        value = model_cfg.get(key)
        if isinstance(default, dict):
            if value is not None and not isinstance(value, dict):
                raise ValueError(f"config key 'model.{key}' must be a mapping, got {value!r}")
            s[key] = {**default, **{k: v for k, v in (value or {}).items() if v is not None or k == "pretrained"}}
        else:
            s[key] = default if value is None else value
    for key in ("width", "height"):
        v = s[key]
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0 or v % 32:
            raise ValueError(f"config key 'model.{key}' must be a positive multiple of 32, got {v!r}")
    if isinstance(s["num_classes"], bool) or not isinstance(s["num_classes"], int) or s["num_classes"] < 1:
        raise ValueError(f"config key 'model.num_classes' must be a positive int, got {s['num_classes']!r}")
    if not 0 < float(s["min_depth"]) < float(s["max_depth"]):
        raise ValueError("config keys 'model.min_depth' and 'model.max_depth' must satisfy 0 < min < max, "
                         f"got {s['min_depth']!r}, {s['max_depth']!r}")
    if s["encoder"]["num_layers"] not in (18, 34, 50, 101, 152):
        raise ValueError(f"config key 'model.encoder.num_layers' must be 18, 34, 50, 101 or 152, "
                         f"got {s['encoder']['num_layers']!r}")
    return s


def build_model(cfg: dict) -> DepthSegNet:
    """The student from the whole merged config (keys under cfg["model"], MODEL_DEFAULTS where missing).

    `model.encoder.pretrained` (a local torchvision ResNet .pth, or null) initialises both the shared
    encoder and the pose encoder, as Monodepth2 does. The input size is kept as `model.width/height`."""
    s = _model_settings(cfg)
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
