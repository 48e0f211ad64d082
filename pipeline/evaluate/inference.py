"""The student network at inference: load a `train` checkpoint (or rebuild its initialisation), run it.

`predict_batch` is the one place the evaluation calls the network: every prediction that is scored
(the trained student and the untrained baseline) goes through it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.geometry import disp_to_depth


def load_student(path, device) -> tuple[torch.nn.Module, dict]:
    """Student from a `train` checkpoint -> (model in eval mode on `device`, training settings).

    The checkpoint is a dict with the model state dict under "model" and the training settings under
    "settings" (their "model" section builds the network). The pose network is dropped: it is not
    part of the inference model."""
    from pipeline import checkpoints
    from pipeline.model import build_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"student checkpoint not found: {path}")
    ckpt = checkpoints.load(path)
    for key in ("model", "settings"):
        if not isinstance(ckpt, dict) or key not in ckpt:
            raise KeyError(f"{path}: not a student checkpoint (no {key!r} entry)")
    settings = ckpt["settings"]
    if "model" not in settings:
        raise KeyError(f"{path}: checkpoint settings have no 'model' section")
    model = build_model({"model": inference_model_config(settings["model"])})
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise RuntimeError(f"{path}: state dict does not match the model of its settings: {exc}") from exc
    model.pose = None
    return model.eval().to(device), settings


def untrained_student(settings: dict, device) -> torch.nn.Module:
    """The network a `train` run started from: same settings, `seed_everything(settings["seed"])`, then
    `build_model`, as the train verb does. The ImageNet encoder file is not loaded (see
    `inference_model_config`), so with `encoder.pretrained` set this is the random initialisation."""
    from pipeline.model import build_model
    from pipeline.checkpoints import seed_everything

    seed_everything(int(settings.get("seed", 0)))
    model = build_model({"model": inference_model_config(settings["model"])})
    model.pose = None
    return model.eval().to(device)


def inference_model_config(model_cfg: dict) -> dict:
    """The "model" config section with `encoder.pretrained` cleared: the checkpoint holds every weight,
    and the ImageNet file the training run started from need not exist where the model is evaluated."""
    cfg = dict(model_cfg)
    cfg["encoder"] = {**dict(cfg.get("encoder") or {}), "pretrained": None}
    return cfg


def to_tensor(images: np.ndarray, device) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float in [0, 1] on `device`."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected (B, H, W, 3) uint8 images, got {images.shape} {images.dtype}")
    return torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float().div_(255.0)


@torch.inference_mode()
def predict_batch(model, images: np.ndarray, device) -> tuple[np.ndarray, torch.Tensor]:
    """(B, H, W, 3) uint8 images -> (scaled disparity (B, h, w) float32 numpy, seg logits (B, C, h, w) tensor
    on `device`), at the network's input size.

    The single call site of the network in evaluation. Light enhancement on, as at inference;
    scaled disparity = `disp_to_depth(disp, model.min_depth, model.max_depth)[0]` of the scale-0 disparity."""
    out = model(to_tensor(images, device), use_light=True)
    scaled_disp, _ = disp_to_depth(out[("disp", 0)], model.min_depth, model.max_depth)
    return scaled_disp[:, 0].float().cpu().numpy(), out[("seg", 0)]
