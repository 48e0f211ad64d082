"""Student training (paper sections 3.3 and 4.2): the step, the loop, checkpoints, single process or DDP.

- `training_step(batch, model, ...)` computes every loss term of eq. 1-18 for one batch and returns them
  (no backward): light (eq. 1-3), self-supervised depth (eq. 4-11), consistency (eq. 12-14), day depth
  distillation (eq. 15), segmentation (eq. 16-17), total (eq. 18).
- `train(...)` is the loop around it: Adam, per-epoch shuffling, AMP on CUDA, DDP under torchrun,
  atomic checkpoints every `checkpoint_every` epochs with automatic resume, `last.pt` only at the end,
  TensorBoard scalars and images and a tqdm bar on rank 0.
- `parse_settings(dict)` validates the `--settings` JSON of the `train` verb (errors name the key).

Ablation switches (Table 5), all True by default:
    real_night       RN: real-night triplets and their terms (sf_night, cst_syn, seg_night, light on them)
    synthetic_night  SN: synthetic images (night twins AND day twins) and their terms (sf_syn, cst, seg_syn)
    light            LE: the light enhancement module and the light loss
    distillation     PD: the day depth distillation (eq. 15)

Choices the paper leaves open (documented here, one place):
- Every image of the step goes through the network in ONE forward (day, synthetic night, real night,
  synthetic day stacked), and PoseNet sees the day and night pairs in one batch too: one DDP forward.
- PoseNet sees REAL raw frames only; the network's depth/seg input is the light-enhanced image, the
  photometric targets and sources are the raw real images (eq. 9-10: synthetic-night depth warps the
  real-day frames with the real-day pose).
- Light loss: eq. 1 on every day image (real day, synthetic day), eq. 2 on every night image (synthetic
  night, real night); the exposure target of a night image is the mean brightness of its paired day image
  (synthetic night <- its real-day twin; real night <- its synthetic-day twin, or the batch's real-day
  image when synthetic images are switched off).
- Consistency, distillation use the full-resolution depth (scale 0); the student depth is resized
  (bilinear) to the teacher depth's size when they differ. The eq. 13 sky mask is "teacher top-1 class of
  the real-night frame is not sky", resized (nearest) to the depth size.
- Segmentation (eq. 16-17) is the mean over the decoder's 4 scales of the thresholded CE, logits upsampled
  (bilinear) to the label size, so every head is trained (as the depth heads are by eq. 8).
- Depth from disparity uses the model's min/max depth (the same conversion `DepthSegNet.depth` applies at
  evaluation); the per-dataset `max_depth` of the settings is the evaluation cap and is only recorded.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from pipeline import distributed
from pipeline.cityscapes import NAMES, colorize
from pipeline.distributed import DistInfo
from pipeline.geometry import K3_to_K4, disp_to_depth
from pipeline.losses import (DEFAULT_WEIGHTS, consistency_loss, distillation_loss, light_loss, light_loss_total,
                             mean_brightness, self_supervised_loss, seg_loss, sf_loss, thresholded_ce, total_loss)

log = logging.getLogger(__name__)

SKY = NAMES.index("sky")  # Cityscapes train id 10
SWITCHES = ("real_night", "synthetic_night", "light", "distillation")
NUM_SCALES = 4


# ---------------------------------------------------------------------------------------------
# Settings (validated once, at the CLI edge)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    batch_size: int
    lr: float = 2.5e-4
    num_workers: int = 0
    checkpoint_every: int = 1
    weights: dict = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    night_weight: float = 0.1
    tau: float = 0.1
    max_steps_per_epoch: int | None = None
    amp: bool = True          # only used on CUDA
    image_every: int = 100    # TensorBoard image summaries every N global steps
    flip: bool = True         # horizontal flip augmentation (Monodepth2 practice)
    keep_checkpoints: int = 3  # newest epoch checkpoints kept (0 = all); ~370 MB each for the paper model
    seed: int = 0
    switches: dict = field(default_factory=lambda: {k: True for k in SWITCHES})


# keys of the config's `train` section this verb accepts (datasets/variants/ablations/gpus are read by
# Snakemake and passed along untouched)
_TRAIN_KEYS = {"epochs", "batch_size", "lr", "num_workers", "checkpoint_every", "weights", "night_weight", "tau",
               "max_steps_per_epoch", "amp", "image_every", "flip", "keep_checkpoints",
               "datasets", "variants", "ablations", "gpus"}


def _number(section: Mapping, prefix: str, key: str, default=None, *, integer=False, minimum=None,
            positive=False, optional=False):
    value = section.get(key, default)
    name = f"{prefix}{key}"
    if value is None:
        if optional:
            return None
        raise ValueError(f"settings key '{name}' is required")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise ValueError(f"settings key '{name}' must be {'an integer' if integer else 'a number'}, got {value!r}")
    if not math.isfinite(value) or (positive and value <= 0) or (minimum is not None and value < minimum):
        bound = "> 0" if positive else f">= {minimum}"
        raise ValueError(f"settings key '{name}' must be {bound}, got {value!r}")
    return value if integer else float(value)


def _bool(section: Mapping, name: str, key: str, default: bool) -> bool:
    value = section.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"settings key '{name}{key}' must be true or false, got {value!r}")
    return value


def _mapping(section: Mapping, key: str, prefix: str = "", required: bool = False) -> dict:
    value = section.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"settings key '{prefix}{key}' must be a mapping, got {value!r}")
    return dict(value)


def parse_settings(settings: Mapping, datasets=()) -> TrainSettings:
    """Validate the `train` verb's settings {"model", "train", "variant", "switches", "seed", "datasets"}
    and return the training values. Errors name the offending key."""
    if not isinstance(settings, Mapping):
        raise ValueError(f"--settings must be a JSON object, got {type(settings).__name__}")
    _mapping(settings, "model", required=True)
    t = _mapping(settings, "train", required=True)
    unknown = sorted(set(t) - _TRAIN_KEYS)
    if unknown:
        raise ValueError(f"settings key 'train.{unknown[0]}' is unknown; expected some of {sorted(_TRAIN_KEYS)}")
    p = "train."
    weights = _mapping(t, "weights", p)
    bad = sorted(set(weights) - set(DEFAULT_WEIGHTS))
    if bad:
        raise ValueError(f"settings key 'train.weights.{bad[0]}' is unknown; expected {sorted(DEFAULT_WEIGHTS)}")
    weights = {k: _number(weights, "train.weights.", k, DEFAULT_WEIGHTS[k], minimum=0) for k in DEFAULT_WEIGHTS}
    switches = _mapping(settings, "switches")
    bad = sorted(set(switches) - set(SWITCHES))
    if bad:
        raise ValueError(f"settings key 'switches.{bad[0]}' is unknown; expected some of {list(SWITCHES)}")
    switches = {k: _bool(switches, "switches.", k, True) for k in SWITCHES}
    per_ds = _mapping(settings, "datasets")
    for ds in datasets:
        if ds in per_ds:
            _number(_mapping(per_ds, ds, "datasets."), f"datasets.{ds}.", "max_depth", positive=True)
    tau = _number(t, p, "tau", 0.1, minimum=0)
    if tau >= 1:
        raise ValueError(f"settings key 'train.tau' must be in [0, 1), got {tau!r}")
    return TrainSettings(
        epochs=_number(t, p, "epochs", integer=True, minimum=1),
        batch_size=_number(t, p, "batch_size", integer=True, minimum=1),
        lr=_number(t, p, "lr", 2.5e-4, positive=True),
        num_workers=_number(t, p, "num_workers", 0, integer=True, minimum=0),
        checkpoint_every=_number(t, p, "checkpoint_every", 1, integer=True, minimum=1),
        weights=weights,
        night_weight=_number(t, p, "night_weight", 0.1, minimum=0),
        tau=tau,
        max_steps_per_epoch=_number(t, p, "max_steps_per_epoch", None, integer=True, minimum=1, optional=True),
        amp=_bool(t, p, "amp", True),
        image_every=_number(t, p, "image_every", 100, integer=True, minimum=1),
        flip=_bool(t, p, "flip", True),
        keep_checkpoints=_number(t, p, "keep_checkpoints", 3, integer=True, minimum=0),
        seed=_number(settings, "", "seed", 0, integer=True, minimum=0),
        switches=switches,
    )


def check_switches(switches: Mapping | None) -> dict:
    """Switches over the defaults (all True); raises on an unknown name."""
    switches = dict(switches or {})
    unknown = set(switches) - set(SWITCHES)
    if unknown:
        raise ValueError(f"unknown switches {sorted(unknown)}; expected some of {list(SWITCHES)}")
    return {k: bool(switches.get(k, True)) for k in SWITCHES}


# ---------------------------------------------------------------------------------------------
# The step
# ---------------------------------------------------------------------------------------------

class TrainForward(nn.Module):
    """Everything the step runs through the networks, as ONE forward (what DDP needs): the depth/seg
    network on the stacked images, PoseNet on the (target, previous) and (target, next) pairs.
    `amp` runs it under torch.autocast (CUDA float16)."""

    def __init__(self, model: nn.Module, amp: bool = False):
        super().__init__()
        self.model = model
        self.amp = amp

    def forward(self, images: torch.Tensor, use_light: bool, targets: torch.Tensor, prevs: torch.Tensor,
                nexts: torch.Tensor):
        with torch.autocast(images.device.type, enabled=self.amp):
            out = self.model(images, use_light=use_light)
            pose = self.model.pose
            poses = (pose.transform(targets, prevs, source_is_previous=True),   # eq. (5), T_t->t-1
                     pose.transform(targets, nexts, source_is_previous=False))  # T_t->t+1
        return out, poses


def _require(batch: Mapping, keys) -> None:
    missing = [k for k in keys if k not in batch]
    if missing:
        raise KeyError(f"training_step: the batch has no {missing} (needed by the enabled switches)")


def _resize(x: torch.Tensor, size, mode: str = "bilinear") -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode=mode, **({} if mode == "nearest" else {"align_corners": False}))


def sky_mask(topk_class: torch.Tensor, topk_prob: torch.Tensor, size) -> torch.Tensor:
    """eq. (13) mask M: 1 where the teacher's top-1 class is not sky, (B, 1, *size) float (nearest resize)."""
    top = torch.gather(topk_class.long(), 1, topk_prob.argmax(1, keepdim=True))
    return _resize((top != SKY).float(), size, "nearest")


def _seg_ce(out: dict, part, name: str, topk_class: torch.Tensor, topk_prob: torch.Tensor, tau: float):
    """eq. (16) for one image kind, mean over the decoder scales (logits resized to the label size)."""
    size = topk_class.shape[-2:]
    losses = [thresholded_ce(_resize(part(out[("seg", s)], name).float(), size), topk_class, topk_prob, tau)
              for s in range(NUM_SCALES)]
    return sum(losses) / len(losses)


def training_step(batch: Mapping, model: nn.Module, switches: Mapping | None = None,
                  weights: Mapping | None = None, night_weight: float = 0.1, tau: float = 0.1,
                  min_depth: float = 0.1, max_depth: float = 100.0) -> dict:
    """Loss terms of eq. 1-18 for one batch (already on the model's device); returns a dict of scalar
    tensors with "total" (eq. 18) plus every enabled term: light_day, light_night, light; sf_day, sf_syn,
    sf_night (unweighted; sf applies night_weight), sf; cst_real, cst_syn, cst; ds; seg_day, seg_syn,
    seg_night, seg. Terms switched off are absent.

    `model` is the DepthSegNet, or a (DDP-wrapped) `TrainForward` around it."""
    sw = check_switches(switches)
    rn, sn = sw["real_night"], sw["synthetic_night"]
    net = TrainForward(model) if not isinstance(model, (TrainForward, nn.parallel.DistributedDataParallel)) else model
    names = ["day"] + (["syn_night"] if sn else []) + (["night"] if rn else []) + (["syn_day"] if rn and sn else [])
    sides = ["day"] + (["night"] if rn else [])
    _require(batch, names + [f"{s}_{k}" for s in sides for k in ("prev", "next", "K", "topk_class", "topk_prob")]
             + (["day_teacher_depth"] if sw["distillation"] else []))
    b = batch["day"].shape[0]

    out, (pose_prev, pose_next) = net(torch.cat([batch[n] for n in names]), sw["light"],
                                      torch.cat([batch[s] for s in sides]),
                                      torch.cat([batch[f"{s}_prev"] for s in sides]),
                                      torch.cat([batch[f"{s}_next"] for s in sides]))

    def part(x: torch.Tensor, name: str, order=names) -> torch.Tensor:
        i = order.index(name)
        return x[i * b:(i + 1) * b]

    disps = {n: [part(out[("disp", s)], n).float() for s in range(NUM_SCALES)] for n in names}
    depth = {n: disp_to_depth(disps[n][0], min_depth, max_depth)[1] for n in names}
    terms: dict[str, torch.Tensor] = {}

    # light enhancement, eq. (1)-(3)
    if sw["light"]:
        r = {n: part(out["light_map"], n).float() for n in names}
        paired_day = {"syn_night": "day", "night": "syn_day" if sn else "day"}
        day_terms = [light_loss(r[n], batch[n], is_night=False) for n in names if n in ("day", "syn_day")]
        night_terms = [light_loss(r[n], batch[n], is_night=True,
                                  day_mean_brightness=mean_brightness(batch[paired_day[n]]))
                       for n in names if n in ("syn_night", "night")]
        terms["light_day"] = sum(day_terms)
        if night_terms:
            terms["light_night"] = sum(night_terms)
        terms["light"] = light_loss_total(terms["light_day"], terms.get("light_night"))

    # self-supervised depth, eq. (4)-(11): real frames and real-frame poses only
    def sf(target_side: str, disp_name: str):
        K = K3_to_K4(batch[f"{target_side}_K"].float())
        poses = [part(pose_prev, target_side, sides), part(pose_next, target_side, sides)]
        sources = [batch[f"{target_side}_prev"], batch[f"{target_side}_next"]]
        return self_supervised_loss(batch[target_side], sources, disps[disp_name], [p.float() for p in poses],
                                    K, torch.linalg.inv(K), min_depth, max_depth)

    terms["sf_day"] = sf("day", "day")                  # eq. (8), real day
    if sn:
        terms["sf_syn"] = sf("day", "syn_night")        # eq. (9)-(10): synthetic-night depth, real-day frames
    if rn:
        terms["sf_night"] = sf("night", "night")        # eq. (8), real night
    terms["sf"] = sf_loss(terms["sf_day"], terms.get("sf_syn"), terms.get("sf_night"), night_weight)  # eq. (11)

    # consistency, eq. (12)-(14): day side detached inside the loss functions
    if sn:
        mask = sky_mask(batch["night_topk_class"], batch["night_topk_prob"], depth["night"].shape[-2:]) if rn else None
        pieces = {"cst_real": consistency_loss(depth["day"], depth["syn_night"])}
        if rn:
            pieces["cst_syn"] = consistency_loss(depth_day_syn=depth["syn_day"], depth_night_real=depth["night"],
                                                 sky_mask=mask)
        terms.update(pieces)
        terms["cst"] = sum(pieces.values())

    # day depth distillation, eq. (15)
    if sw["distillation"]:
        teacher = batch["day_teacher_depth"].float()
        terms["ds"] = distillation_loss(_resize(depth["day"], teacher.shape[-2:]), teacher)

    # segmentation, eq. (16)-(17): synthetic night learns from its real-day twin's labels
    day_y = (batch["day_topk_class"], batch["day_topk_prob"])
    terms["seg_day"] = _seg_ce(out, part, "day", *day_y, tau)
    if sn:
        terms["seg_syn"] = _seg_ce(out, part, "syn_night", *day_y, tau)
    if rn:
        terms["seg_night"] = _seg_ce(out, part, "night", batch["night_topk_class"], batch["night_topk_prob"], tau)
    terms["seg"] = seg_loss(terms["seg_day"], terms.get("seg_syn"), terms.get("seg_night"))

    terms["total"] = total_loss({k: terms[k] for k in DEFAULT_WEIGHTS if k in terms}, weights)  # eq. (18)
    return terms


# ---------------------------------------------------------------------------------------------
# Seeds, RNG state, checkpoints
# ---------------------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: numpy and random seeded from the worker's torch seed."""
    s = torch.initial_seed() % 2 ** 32
    np.random.seed(s)
    random.seed(s)


def rng_state() -> dict:
    """Every RNG the run draws from, in a form torch.load(weights_only=True) accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
            "random": random.getstate()}


def set_rng_state(state: Mapping) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["random"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(path: str | os.PathLike, state: Mapping) -> Path:
    """torch.save to a temporary file beside `path`, then os.replace: never a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(dict(state), tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=True)


def epoch_checkpoints(ckpt_dir: Path) -> dict[int, Path]:
    """{epoch: path} of the `epoch_NNN.pt` files in ckpt_dir."""
    out = {}
    for p in Path(ckpt_dir).glob("epoch_*.pt"):
        try:
            out[int(p.stem.split("_", 1)[1])] = p
        except ValueError:
            continue
    return out


def prune_checkpoints(ckpt_dir: Path, keep: int) -> None:
    """Remove all but the `keep` newest epoch checkpoints (keep 0: remove none)."""
    found = epoch_checkpoints(ckpt_dir)
    for n in sorted(found)[:-keep] if keep else []:
        found[n].unlink(missing_ok=True)


def _resume_key(record: Mapping) -> str:
    """The settings that must match to resume: all but those that do not change the trained weights of the
    epochs already run (epoch count, workers, logging, pruning, GPU count, the OTHER variants' switches)."""
    record = json.loads(json.dumps(record, sort_keys=True, default=str))
    for key in ("epochs", "num_workers", "image_every", "keep_checkpoints", "gpus", "variants", "ablations"):
        record.get("train", {}).pop(key, None)
    return json.dumps(record, sort_keys=True)


def find_resume(ckpt_dir: Path, record: Mapping, epochs: int) -> Path | None:
    """Newest epoch checkpoint (<= epochs) written with the same settings. Checkpoints of other settings
    are stale: they are removed (with a warning) so the run starts afresh."""
    found = epoch_checkpoints(ckpt_dir)
    for n in sorted(found, reverse=True):
        state = torch.load(found[n], map_location="cpu", weights_only=True)
        if _resume_key(state.get("settings", {})) != _resume_key(record):
            log.warning("%s was written with other settings: removing it, starting afresh", found[n])
            found[n].unlink()
            continue
        if n <= epochs:
            return found[n]
    return None


def _state(model, optimizer, scaler, epoch: int, step: int, record: Mapping) -> dict:
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "epoch": epoch, "global_step": step, "rng": rng_state(), "settings": dict(record)}


# ---------------------------------------------------------------------------------------------
# Data loading, logging
# ---------------------------------------------------------------------------------------------

def make_loaders(datasets: Mapping[str, Dataset], s: TrainSettings, epoch: int, info: DistInfo,
                 pin_memory: bool) -> list[DataLoader]:
    """One loader per dataset (a batch holds one image size), shuffled per epoch from the seed; under DDP
    each rank reads its own share (DistributedSampler; the same sampler with one replica otherwise)."""
    loaders = []
    for i, (name, ds) in enumerate(datasets.items()):
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(epoch)
        sampler = DistributedSampler(ds, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                     seed=s.seed + 1000 * i)
        sampler.set_epoch(epoch)
        if len(sampler) < s.batch_size:
            raise ValueError(f"dataset {name}: {len(sampler)} training items per process, fewer than "
                             f"train.batch_size {s.batch_size}")
        g = torch.Generator().manual_seed(s.seed * 100_003 + epoch * 101 + i)
        loaders.append(DataLoader(ds, batch_size=s.batch_size, sampler=sampler, num_workers=s.num_workers,
                                  pin_memory=pin_memory, drop_last=True, worker_init_fn=seed_worker, generator=g))
    return loaders


def alternate(loaders):
    """Batches of the loaders in turn (A, B, A, B, ...), continuing with the others once one is exhausted."""
    iters = [iter(ld) for ld in loaders]
    while iters:
        for it in list(iters):
            try:
                yield next(it)
            except StopIteration:
                iters.remove(it)


def to_device(batch: Mapping, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def log_images(writer, model, batch: Mapping, step: int, use_light: bool) -> None:
    """Input, enhanced image, disparity and seg argmax of the first real-day (and real-night) image."""
    was_training = model.training
    model.eval()
    try:
        for side in ("day", "night"):
            if side not in batch:
                continue
            image = batch[side][:1]
            out = model(image, use_light=use_light)
            disp = out[("disp", 0)][0].float()
            seg = out[("seg", 0)][0].argmax(0).cpu().numpy()
            writer.add_image(f"{side}/input", image[0].clamp(0, 1), step)
            writer.add_image(f"{side}/enhanced", out["enhanced"][0].float().clamp(0, 1), step)
            writer.add_image(f"{side}/disp", disp / disp.max().clamp_min(1e-6), step)
            writer.add_image(f"{side}/seg", colorize(seg), step, dataformats="HWC")
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------

def run_epoch(net, model, loaders, optimizer, scaler, s: TrainSettings, device, epoch: int, step: int,
              writer, info: DistInfo) -> int:
    """One epoch of steps over the alternating loaders; returns the new global step."""
    n = sum(len(ld) for ld in loaders)
    n = min(n, s.max_steps_per_epoch) if s.max_steps_per_epoch else n
    bar = tqdm(total=n, desc=f"epoch {epoch + 1}/{s.epochs}", disable=not info.is_main, dynamic_ncols=True)
    running = None
    for i, batch in enumerate(alternate(loaders)):
        if i >= n:
            break
        batch = to_device(batch, device)
        terms = training_step(batch, net, s.switches, s.weights, s.night_weight, s.tau, model.min_depth,
                              model.max_depth)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(terms["total"]).backward()
        scaler.step(optimizer)
        scaler.update()
        step += 1
        loss = terms["total"].item()
        if not math.isfinite(loss):
            raise RuntimeError(f"training diverged: total loss {loss} at epoch {epoch + 1}, step {step}")
        running = loss if running is None else 0.9 * running + 0.1 * loss
        bar.set_postfix(loss=f"{running:.4f}")
        bar.update(1)
        if writer is not None:
            for k, v in terms.items():
                writer.add_scalar(f"loss/{k}", v.item(), step)
            if step % s.image_every == 0 or step == 1:
                log_images(writer, model, batch, step, s.switches["light"])
    bar.close()
    return step


def freeze_unused(model: nn.Module, use_light: bool) -> None:
    """No gradient for parameters the step never uses (so DDP needs no find_unused_parameters): the
    ResNets' `fc` layers (kept for Monodepth2's key layout) and, with the light switch off, the light net."""
    for module in (model.encoder.encoder.fc, model.pose.encoder.encoder.fc):
        module.requires_grad_(False)
    if not use_light and model.light is not None:
        model.light.requires_grad_(False)


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Adam:
    """Adam (paper: lr 2.5e-4) over the trainable parameters; the fused kernel (CPU and CUDA): the
    default per-tensor loop costs ~0.7 s a step on a CPU for this ~28 M-parameter model, fused ~0.1 s."""
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, fused=True)


def train(model: nn.Module, datasets: Mapping[str, Dataset], out_dir: str | os.PathLike, s: TrainSettings,
          device: torch.device, info: DistInfo = DistInfo(), record: Mapping | None = None) -> Path:
    """Train `model` (a DepthSegNet) on the datasets; returns OUT/checkpoints/last.pt.

    Resumes from the newest OUT/checkpoints/epoch_NNN.pt written with the same settings (`record`, the
    settings as given, is stored in every checkpoint). Rank 0 writes checkpoints and TensorBoard logs."""
    record = dict(record if record is not None else {"train": asdict(s)})
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    model.to(device).train()
    freeze_unused(model, s.switches["light"])
    optimizer = make_optimizer(model, s.lr)
    use_amp = s.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start_epoch, step, rng = 0, 0, None
    resume = find_resume(ckpt_dir, record, s.epochs) if info.is_main else None
    resume = _broadcast(resume, info)
    if resume is not None:
        state = load_checkpoint(resume)  # CPU: RNG states must stay CPU tensors; load_state_dict moves the rest
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, step, rng = state["epoch"], state["global_step"], state["rng"]
        if info.is_main:
            log.info("resuming from %s (epoch %d, step %d)", resume, start_epoch, step)
    net = TrainForward(model, amp=use_amp)
    if info.enabled:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    writer = None
    if info.is_main:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=step or None)
    if rng is not None:
        set_rng_state(rng)  # last: nothing between here and the first batch draws from the RNGs
    try:
        t0 = time.perf_counter()
        for epoch in range(start_epoch, s.epochs):
            loaders = make_loaders(datasets, s, epoch, info, pin_memory=device.type == "cuda")
            step = run_epoch(net, model, loaders, optimizer, scaler, s, device, epoch, step, writer, info)
            if (epoch + 1) % s.checkpoint_every == 0:
                if info.is_main:
                    save_checkpoint(ckpt_dir / f"epoch_{epoch + 1:03d}.pt",
                                    _state(model, optimizer, scaler, epoch + 1, step, record))
                    prune_checkpoints(ckpt_dir, s.keep_checkpoints)
                distributed.barrier()
        last = ckpt_dir / "last.pt"
        if info.is_main:
            save_checkpoint(last, _state(model, optimizer, scaler, s.epochs, step, record))
            log.info("training done: %d steps in %.1f s, %s", step, time.perf_counter() - t0, last)
        distributed.barrier()
        return last
    finally:
        if writer is not None:
            writer.close()


def _broadcast(value, info: DistInfo):
    """Rank 0's value on every rank (a no-op in one process)."""
    if not info.enabled:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]
