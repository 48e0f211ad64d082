"""Monodepth2 day-depth teacher: official weights folder I/O, monocular training, inference.

The networks are the package's own (`pipeline.model`: `ResnetEncoder`, `DepthDecoder`, `PoseNet`)
and the losses `pipeline.losses.self_supervised_loss` (SSIM + L1 reprojection, per-pixel minimum,
auto-masking, smoothness 1e-3 / 2^s); their state dicts use Monodepth2's key names, so an official
weights folder (nianticlabs/monodepth2: `encoder.pth` with extra `height`, `width`, `use_stereo`
entries, `depth.pth`, `pose_encoder.pth`, `pose.pth`) loads strictly, and ours loads there.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from pipeline import checkpoints
from pipeline.checkpoints import TrainingState
from pipeline.datasets.images import CropResize
from pipeline.geometry import K3_to_K4, disp_to_depth, flip_K
from pipeline.losses import self_supervised_loss
from pipeline.model.decoders import DepthDecoder
from pipeline.model.encoder import ResnetEncoder
from pipeline.model.pose import PoseNet
from pipeline.progress import progress_bar
from pipeline.triplets import usable_targets

log = logging.getLogger(__name__)

ENCODER_EXTRAS = ("height", "width", "use_stereo")  # non-tensor entries of the official encoder.pth
WEIGHT_FILES = ("encoder.pth", "depth.pth", "pose_encoder.pth", "pose.pth")
CHECKPOINT_VERSION = 1
FRAMES = ("target", "prev", "next")  # frames 0, -1, +1


# ----------------------------------------------------------------------------- the model
class Monodepth2(nn.Module):
    """Depth `encoder` + `depth_decoder` (forward: image in [0, 1] -> {("disp", s): sigmoid disparity},
    s = 0..3), and optionally the pose network (`pose_encoder`, `pose_decoder`, used in training).
    `height`, `width` are the resolution it was trained at (None when unknown)."""

    def __init__(self, num_layers: int = 18, pose: bool = True, pretrained_path=None,
                 pose_num_layers: int | None = None):
        super().__init__()
        self.encoder = ResnetEncoder(num_layers, pretrained_path)
        self.depth_decoder = DepthDecoder(self.encoder.num_ch_enc, scales=range(4))
        self.pose = PoseNet(pose_num_layers or num_layers, pretrained_path) if pose else None
        self.height: int | None = None
        self.width: int | None = None

    @property
    def pose_encoder(self) -> nn.Module | None:
        return None if self.pose is None else self.pose.encoder

    @property
    def pose_decoder(self) -> nn.Module | None:
        return None if self.pose is None else self.pose.decoder

    def forward(self, image: torch.Tensor) -> dict:
        return self.depth_decoder(self.encoder(image))


# ----------------------------------------------------------------------------- weights folder
def _resnet_depth(state: dict, path: Path) -> int:
    """ResNet depth (18, 34, 50, 101, 152) of an `encoder.*` state dict, from its block counts."""
    blocks = {int(k.split(".")[2]) for k in state if k.startswith("encoder.layer3.")}
    bottleneck = "encoder.layer1.0.conv3.weight" in state
    table = {(2, False): 18, (6, False): 34, (6, True): 50, (23, True): 101, (36, True): 152}
    depth = table.get((len(blocks), bottleneck))
    if depth is None:
        raise ValueError(f"{path}: not a ResNet encoder state dict (expected keys 'encoder.layer3.*'; "
                         f"found {len(blocks)} layer3 blocks)")
    return depth


def _read(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"Monodepth2 weights file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def _load_strict(module: nn.Module, state: dict, path: Path) -> None:
    """load_state_dict(strict) with a ValueError naming the file and the missing/unexpected keys.
    (torch itself fills BatchNorm `num_batches_tracked` absent from files of torch < 0.4.1.)"""
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ValueError(f"{path}: does not fit {type(module).__name__}: {exc}") from None
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{path}: state dict does not match {type(module).__name__}: "
                         f"missing keys {sorted(result.missing_keys)}, "
                         f"unexpected keys {sorted(result.unexpected_keys)}")


def load_weights(folder, device="cpu") -> Monodepth2:
    """Load an official Monodepth2 weights folder strictly: `encoder.pth` (its `height`, `width`,
    `use_stereo` entries removed first and kept as attributes), `depth.pth`, and `pose_encoder.pth` +
    `pose.pth` when present. Returns a `Monodepth2` in eval mode on `device`.

    Raises FileNotFoundError for a missing encoder/depth file and ValueError naming the file and
    listing missing / unexpected keys when a file does not fit."""
    folder = Path(folder)
    enc_path, dep_path = folder / "encoder.pth", folder / "depth.pth"
    pose_enc_path, pose_path = folder / "pose_encoder.pth", folder / "pose.pth"
    enc = _read(enc_path)
    extras = {k: enc.pop(k) for k in ENCODER_EXTRAS if k in enc}
    has_pose = pose_enc_path.exists() or pose_path.exists()
    if has_pose and not (pose_enc_path.exists() and pose_path.exists()):
        missing = pose_path if pose_enc_path.exists() else pose_enc_path
        raise FileNotFoundError(f"{folder}: has one pose file but not {missing.name}; need both or neither")
    pose_enc = _read(pose_enc_path) if has_pose else None
    model = Monodepth2(_resnet_depth(enc, enc_path), pose=has_pose,
                       pose_num_layers=_resnet_depth(pose_enc, pose_enc_path) if has_pose else None)
    _load_strict(model.encoder, enc, enc_path)
    _load_strict(model.depth_decoder, _read(dep_path), dep_path)
    if has_pose:
        _load_strict(model.pose_encoder, pose_enc, pose_enc_path)
        _load_strict(model.pose_decoder, _read(pose_path), pose_path)
    model.height = int(extras["height"]) if "height" in extras else None
    model.width = int(extras["width"]) if "width" in extras else None
    model.use_stereo = bool(extras.get("use_stereo", False))
    return model.to(torch.device(device)).eval()


def _cpu_state(module: nn.Module) -> dict:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def save_weights(model: Monodepth2, folder, height: int, width: int) -> list[Path]:
    """Write the official layout: encoder.pth (ResNet keys incl. the unused fc, plus `height`,
    `width`, `use_stereo`=False), depth.pth, and pose_encoder.pth + pose.pth when the model has pose."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"encoder.pth": {**_cpu_state(model.encoder), "height": int(height), "width": int(width),
                             "use_stereo": False},
             "depth.pth": _cpu_state(model.depth_decoder)}
    if model.pose is not None:
        files["pose_encoder.pth"] = _cpu_state(model.pose_encoder)
        files["pose.pth"] = _cpu_state(model.pose_decoder)
    for name, state in files.items():
        checkpoints.save(state, folder / name)
    return [folder / n for n in files]


# ----------------------------------------------------------------------------- data
def _to_float(images_uint8: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images_uint8)).permute(0, 3, 1, 2).float() / 255.0


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def load_batch(frames, rows: np.ndarray, height: int, width: int, rng: np.random.Generator | None = None,
               color_aug: bool = True) -> dict[str, torch.Tensor]:
    """Frames 0, -1, +1 of `rows` at (height, width) in [0, 1], their intrinsics (B, 3, 3), and the
    network inputs ("aug_*"). With `rng`: each sample is mirrored with p = 0.5 (K adjusted) and, with
    `color_aug`, colour-jittered with p = 0.5 (brightness, contrast, saturation 0.2, hue 0.1; the same
    jitter on its three frames, network inputs only), as Monodepth2's loader."""
    images, prev, nxt = frames["image"], frames["prev"], frames["next"]
    ids = {"target": np.asarray(rows), "prev": np.array([int(prev[int(r)]) for r in rows]),
           "next": np.array([int(nxt[int(r)]) for r in rows])}
    src_hw = tuple(images.shape[1:3])
    batch = {k: _resize(_to_float(np.stack([images[int(i)] for i in v])), (height, width)) for k, v in ids.items()}
    K = torch.from_numpy(np.stack([np.asarray(frames["K"][int(r)], np.float32) for r in rows]))
    batch["K"] = CropResize.resize(src_hw[::-1], (width, height)).intrinsics(K)
    if rng is None:
        batch.update({f"aug_{k}": batch[k] for k in FRAMES})
        return batch
    for b in range(len(rows)):
        if rng.uniform() < 0.5:
            for k in FRAMES:
                batch[k][b] = batch[k][b].flip(-1)
            batch["K"][b:b + 1] = flip_K(batch["K"][b:b + 1], width)
    batch.update({f"aug_{k}": batch[k].clone() for k in FRAMES})
    jitter = v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1)
    for b in range(len(rows)):
        if color_aug and rng.uniform() < 0.5:
            trio = jitter(torch.stack([batch[k][b] for k in FRAMES]))  # one jitter for the three frames
            for j, k in enumerate(FRAMES):
                batch[f"aug_{k}"][b] = trio[j]
    return batch


# ----------------------------------------------------------------------------- training
def depth_teacher_loss(model: Monodepth2, batch: dict, min_depth: float, max_depth: float,
                       automask: bool = True) -> torch.Tensor:
    """Monodepth2's monocular loss for one batch (frames 0, -1, +1): disparities at 4 scales from the
    augmented target, poses T_0->-1 (inverted, source first) and T_0->+1 from the pose network on the
    augmented pairs, then `self_supervised_loss` on the un-augmented frames (minimum reprojection,
    auto-masking unless `automask` is False (Monodepth2's --disable_automasking), smoothness 1e-3 / 2^s).
    Networks run under AMP on CUDA; the loss in float32."""
    cuda = batch["target"].device.type == "cuda"
    with torch.autocast(device_type="cuda", enabled=cuda):
        disps = model(batch["aug_target"])
        poses = [model.pose.transform(batch["aug_target"], batch["aug_prev"], source_is_previous=True),
                 model.pose.transform(batch["aug_target"], batch["aug_next"], source_is_previous=False)]
    disps = {k: v.float() for k, v in disps.items()}
    K4 = K3_to_K4(batch["K"].float())
    return self_supervised_loss(batch["target"], [batch["prev"], batch["next"]], disps,
                                [p.float() for p in poses], K4, torch.linalg.inv(K4),
                                min_depth=min_depth, max_depth=max_depth, smooth_weight=1e-3, automask=automask)


def _checkpoint(epoch, settings, model, opt, sched, rng) -> dict:
    return {"version": CHECKPOINT_VERSION, "epoch": epoch, "settings": settings,
            "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "rng": {"data": rng.bit_generator.state, "torch": torch.get_rng_state()}}


def _resume(state: dict, model, opt, sched, rng) -> int:
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"not a depth-teacher training state of version {CHECKPOINT_VERSION}")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    rng.bit_generator.state = state["rng"]["data"]
    torch.set_rng_state(state["rng"]["torch"].cpu())
    return int(state["epoch"])


def _check_size(height: int, width: int) -> None:
    # stride-32 features must be at least 2x2 for the decoder's reflection padding
    if height < 64 or width < 64 or height % 32 or width % 32:
        raise ValueError(f"Monodepth2 needs height and width that are multiples of 32 and at least 64, "
                         f"got {height}x{width}")


def train_depth_teacher(frames_group, *, height: int, width: int, epochs: int = 20, batch_size: int = 12,
                        lr: float = 1e-4, scheduler_step: int = 15, min_depth: float = 0.1, max_depth: float = 100.0,
                        device="cpu", seed: int = 0, out_dir, progress: bool = True, state: TrainingState | None = None,
                        color_aug: bool = True, pretrained_path=None, on_epoch=None,
                        automask: bool = True) -> Monodepth2:
    """Train Monodepth2 (monocular, ResNet-18, frames 0, -1, +1) on the target rows of a frames group
    that have both neighbours; write the official weights folder to `out_dir` and return the model.

    Adam(lr), StepLR(scheduler_step, 0.1) per epoch; random flips and (with `color_aug`) colour jitter;
    `automask=False` is Monodepth2's --disable_automasking (the photometric minimum over the warped
    sources only).
    `pretrained_path`: an optional local torchvision ResNet-18 .pth for both encoders (Monodepth2 starts
    from ImageNet). With `state` (a `pipeline.checkpoints.TrainingState` keyed by the run's settings and
    inputs), the training state is saved after every epoch and the newest saved epoch resumed from.
    `on_epoch(epoch, scalars)`, if given, receives after each epoch (1-based) the mean loss over its steps
    and the learning rate the epoch ran with (the training curves)."""
    _check_size(height, width)
    rows = usable_targets(frames_group)
    if len(rows) == 0:
        raise ValueError("frames group has no target rows with both a previous and a next frame (prev, next >= 0)")
    device = torch.device(device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = Monodepth2(18, pose=True, pretrained_path=pretrained_path).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, scheduler_step, 0.1)
    settings = {"height": height, "width": width, "batch_size": batch_size, "lr": lr, "scheduler_step": scheduler_step,
                "min_depth": min_depth, "max_depth": max_depth, "seed": seed, "color_aug": color_aug,
                "automask": automask, "rows": len(rows)}
    saved = state.latest(epochs) if state is not None else None
    start = _resume(saved, model, opt, sched, rng) if saved is not None else 0
    steps = math.ceil(len(rows) / batch_size)
    for epoch in range(start, epochs):
        model.train()
        order = rng.permutation(rows)
        total = 0.0
        for step in progress_bar(range(steps), desc=f"depth teacher epoch {epoch + 1}/{epochs}", disable=not progress,
                         leave=False):
            batch = load_batch(frames_group, order[step * batch_size:(step + 1) * batch_size], height, width,
                               rng, color_aug)
            loss = depth_teacher_loss(model, {k: v.to(device) for k, v in batch.items()}, min_depth, max_depth,
                                      automask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
        epoch_lr = opt.param_groups[0]["lr"]
        sched.step()
        log.info("depth teacher epoch %d/%d loss %.5f lr %.2e", epoch + 1, epochs, total / steps,
                 opt.param_groups[0]["lr"])
        if on_epoch is not None:
            on_epoch(epoch + 1, {"loss": total / steps, "lr": epoch_lr})
        if state is not None and state.due():
            state.save(epoch + 1, _checkpoint(epoch + 1, settings, model, opt, sched, rng))
    save_weights(model, out_dir, height, width)
    model.height, model.width = height, width
    return model.eval()


# ----------------------------------------------------------------------------- inference
def _feed_size(model: Monodepth2, h: int, w: int) -> tuple[int, int]:
    """The trained resolution when known, else the image size rounded to multiples of 32 (at least 64)."""
    if getattr(model, "height", None) and getattr(model, "width", None):
        return int(model.height), int(model.width)
    return max(64, round(h / 32) * 32), max(64, round(w / 32) * 32)


@torch.no_grad()
def predict_depth(model: Monodepth2, images, batch_size: int = 8, device="cpu", min_depth: float = 0.1,
                  max_depth: float = 100.0, progress: bool = False) -> np.ndarray:
    """Depth float32 (N, H, W) of uint8 (N, H, W, 3) images: each batch is resized to the model's
    trained size (as Monodepth2's test_simple), the scale-0 disparity is resized back bilinearly and
    converted with disp_to_depth, so values lie in [min_depth, max_depth]. AMP (fp16) on CUDA only."""
    shape = tuple(images.shape)
    if len(shape) != 4 or shape[3] != 3 or np.dtype(images.dtype) != np.uint8:
        raise ValueError(f"predict_depth: expected uint8 images (N, H, W, 3), got {np.dtype(images.dtype)} {shape}")
    device = torch.device(device)
    model = model.to(device).eval()
    n, h, w = shape[:3]
    feed = _feed_size(model, h, w)
    out = np.empty((n, h, w), np.float32)
    for start in progress_bar(range(0, n, batch_size), desc="depth", disable=not progress):
        x = _resize(_to_float(np.asarray(images[start:start + batch_size])), feed).to(device)
        with torch.autocast(device_type="cuda", enabled=device.type == "cuda"):
            disp = model(x)[("disp", 0)]
        disp = F.interpolate(disp.float(), size=(h, w), mode="bilinear", align_corners=False)
        _, depth = disp_to_depth(disp, min_depth, max_depth)
        out[start:start + len(x)] = depth[:, 0].cpu().numpy()
    return out
