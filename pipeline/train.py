"""Student training (paper sections 3.3 and 4.2): the step, the loop, checkpoints, single process or DDP.

- `training_step(batch, model, ...)` computes every loss term of eq. 1-18 for one batch and returns them
  (no backward): light (eq. 1-3), self-supervised depth (eq. 4-11), consistency (eq. 12-14), day depth
  distillation (eq. 15), segmentation (eq. 16-17), total (eq. 18).
- `train(...)` is the loop around it: Adam, per-epoch shuffling, AMP on CUDA (`train.amp`), DDP under
  torchrun, a resumable state every `checkpoint_every` epochs (`pipeline.checkpoints.TrainingState`),
  `last.pt` only at the end, TensorBoard scalars and images and progress lines on rank 0.

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
- Colour augmentation (`train.color_aug`, Monodepth2's): when the batch holds `aug_<name>` images, the
  networks (depth/seg and PoseNet) see those and every loss target stays the un-augmented image
  (photometric targets and sources, the exposure target's day brightness), as Monodepth2 feeds
  `color_aug` to its networks and computes its losses on `color`. The light loss (eq. 1-2) compares the
  enhanced image with the image the light net enhanced, i.e. the network's (augmented) input.
- Learning rate: Adam at `train.lr` (the paper's "initial learning rate" 2.5e-4), StepLR by
  `train.scheduler_gamma` every `train.scheduler_step` epochs (the paper states no schedule; Monodepth2's
  trainer.py lines 103-104, StepLR(15, 0.1) over 20 epochs), saved and restored with the resumable state.
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

import logging
import math
import os
import random
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from pipeline import checkpoints, distributed
from pipeline.checkpoints import TrainingState
from pipeline.cityscapes import NAMES, colorize
from pipeline.config import TrainSettings, ablation_switches
from pipeline.epoch_log import EPOCH_PREFIX
from pipeline.distributed import DistInfo
from pipeline.progress import progress_bar
from pipeline.geometry import K3_to_K4, disp_to_depth
from pipeline.losses import (DEFAULT_WEIGHTS, consistency_loss, distillation_loss, identity_losses, light_loss,
                             light_loss_total, mean_brightness, self_supervised_loss, seg_loss, sf_loss,
                             thresholded_ce, total_loss)

log = logging.getLogger(__name__)

SKY = NAMES.index("sky")  # Cityscapes train id 10
NUM_SCALES = 4


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
    sw = ablation_switches(switches)
    rn, sn = sw["real_night"], sw["synthetic_night"]
    net = TrainForward(model) if not isinstance(model, (TrainForward, nn.parallel.DistributedDataParallel)) else model
    names = ["day"] + (["syn_night"] if sn else []) + (["night"] if rn else []) + (["syn_day"] if rn and sn else [])
    sides = ["day"] + (["night"] if rn else [])
    _require(batch, names + [f"{s}_{k}" for s in sides for k in ("prev", "next", "K", "topk_class", "topk_prob")]
             + (["day_teacher_depth"] if sw["distillation"] else []))
    b = batch["day"].shape[0]

    def seen(name: str) -> torch.Tensor:
        """What the networks see: the colour-augmented image when the batch has one, else the image."""
        return batch.get(f"aug_{name}", batch[name])

    out, (pose_prev, pose_next) = net(torch.cat([seen(n) for n in names]), sw["light"],
                                      torch.cat([seen(s) for s in sides]),
                                      torch.cat([seen(f"{s}_prev") for s in sides]),
                                      torch.cat([seen(f"{s}_next") for s in sides]))

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
        day_terms = [light_loss(r[n], seen(n), is_night=False) for n in names if n in ("day", "syn_day")]
        night_terms = [light_loss(r[n], seen(n), is_night=True,
                                  day_mean_brightness=mean_brightness(batch[paired_day[n]]))
                       for n in names if n in ("syn_night", "night")]
        terms["light_day"] = sum(day_terms)
        if night_terms:
            terms["light_night"] = sum(night_terms)
        terms["light"] = light_loss_total(terms["light_day"], terms.get("light_night"))

    # self-supervised depth, eq. (4)-(11): real frames and real-frame poses only
    identities: dict[str, torch.Tensor] = {}  # auto-mask losses of a side's unwarped sources (eq. 8 and 10 share day's)

    def sf(target_side: str, disp_name: str):
        K = K3_to_K4(batch[f"{target_side}_K"].float())
        poses = [part(pose_prev, target_side, sides), part(pose_next, target_side, sides)]
        sources = [batch[f"{target_side}_prev"], batch[f"{target_side}_next"]]
        if target_side not in identities:
            identities[target_side] = identity_losses(batch[target_side], sources)
        return self_supervised_loss(batch[target_side], sources, disps[disp_name], [p.float() for p in poses],
                                    K, torch.linalg.inv(K), min_depth, max_depth, identity=identities[target_side])

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

def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: numpy and random seeded from the worker's torch seed."""
    s = torch.initial_seed() % 2 ** 32
    np.random.seed(s)
    random.seed(s)


def _state(model, optimizer, scheduler, scaler, epoch: int, step: int, record: Mapping) -> dict:
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "epoch": epoch, "global_step": step, "rng": checkpoints.rng_state(),
            "settings": dict(record)}


# Settings that do not change the weights of the epochs already run: a run that differs only in these
# resumes (e.g. more epochs).
NOT_IN_RESUME_KEY = ("epochs", "num_workers", "image_every", "keep_checkpoints", "gpus", "variants", "ablations")


def resume_record(record: Mapping) -> dict:
    """The part of a run's record that keys its resumable state (see NOT_IN_RESUME_KEY)."""
    train = {k: v for k, v in dict(record.get("train", {})).items() if k not in NOT_IN_RESUME_KEY}
    return {**dict(record), "train": train}


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
    bar = progress_bar(total=n, desc=f"epoch {epoch + 1}/{s.epochs}", disable=not info.is_main, dynamic_ncols=True)
    running = None
    # per-epoch mean of every term over the steps that computed it (the training curves: pipeline.epoch_log, pipeline.curves)
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
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
                sums[k] = sums.get(k, 0.0) + v.item()
                counts[k] = counts.get(k, 0) + 1
            if step % s.image_every == 0 or step == 1:
                log_images(writer, model, batch, step, s.switches["light"])
    bar.close()
    if writer is not None and sums:
        for k, v in sums.items():
            writer.add_scalar(f"{EPOCH_PREFIX}{k}", v / counts[k], epoch + 1)
        writer.add_scalar(f"{EPOCH_PREFIX}lr", optimizer.param_groups[0]["lr"], epoch + 1)
    return step


def freeze_unused(model: nn.Module, use_light: bool) -> None:
    """No gradient for parameters the step never uses (so DDP needs no find_unused_parameters): the
    ResNets' `fc` layers (kept for Monodepth2's key layout) and, with the light switch off, the light net."""
    for module in (model.encoder.encoder.fc, model.pose.encoder.encoder.fc):
        module.requires_grad_(False)
    if not use_light and model.light is not None:
        model.light.requires_grad_(False)


def make_scheduler(optimizer: torch.optim.Optimizer, step: int, gamma: float) -> torch.optim.lr_scheduler.StepLR:
    """StepLR, stepped once per epoch: the learning rate of epoch k (from 0) is lr * gamma ** (k // step)
    (Monodepth2's schedule, trainer.py lines 103-104 and 196; the paper names only the initial rate)."""
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step, gamma=gamma)


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Adam:
    """Adam (paper: lr 2.5e-4) over the trainable parameters; the fused kernel (CPU and CUDA): the
    default per-tensor loop costs ~0.7 s a step on a CPU for this ~28 M-parameter model, fused ~0.1 s."""
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, fused=True)


def train(model: nn.Module, datasets: Mapping[str, Dataset], last: str | os.PathLike, log_dir: str | os.PathLike,
          state_dir: str | os.PathLike, s: TrainSettings, device: torch.device, info: DistInfo = DistInfo(),
          record: Mapping | None = None, state_every_s: float = 0.0) -> Path:
    """Train `model` (a DepthSegNet) on the datasets; writes the checkpoint `last` at the end.

    Resumes from the newest state in `state_dir` of the same `record` (the run's settings and input
    digests; `resume_record` leaves out what does not change the weights already trained), every
    `checkpoint_every` epochs once `state_every_s` seconds have passed since the last state. Rank 0
    writes the states, `last` and the TensorBoard logs in `log_dir`."""
    record = dict(record if record is not None else {"train": {k: getattr(s, k) for k in s.__dataclass_fields__}})
    state = (TrainingState(state_dir, resume_record(record), keep=s.keep_checkpoints, every_s=state_every_s)
             if info.is_main else None)
    if info.enabled and device.type == "cuda":
        # one BatchNorm over the global batch, as a single process would compute it (the batch of
        # train.batch_size is per process: the global batch is batch_size x processes)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device).train()
    freeze_unused(model, s.switches["light"])
    optimizer = make_optimizer(model, s.lr)
    scheduler = make_scheduler(optimizer, s.scheduler_step, s.scheduler_gamma)
    use_amp = s.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start_epoch, step, rng = 0, 0, None
    # CPU: RNG states must stay CPU tensors; load_state_dict moves the rest
    saved = _broadcast(state.latest(s.epochs) if state is not None else None, info)
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        start_epoch, step, rng = saved["epoch"], saved["global_step"], saved["rng"]
    net = TrainForward(model, amp=use_amp)
    if info.enabled:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    writer = None
    if info.is_main:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(log_dir), purge_step=step or None)
    if rng is not None:
        checkpoints.set_rng_state(rng)  # last: nothing between here and the first batch draws from the RNGs
    try:
        t0 = time.perf_counter()
        for epoch in range(start_epoch, s.epochs):
            loaders = make_loaders(datasets, s, epoch, info, pin_memory=device.type == "cuda")
            step = run_epoch(net, model, loaders, optimizer, scaler, s, device, epoch, step, writer, info)
            scheduler.step()
            if (epoch + 1) % s.checkpoint_every == 0:
                if info.is_main and state.due():
                    state.save(epoch + 1, _state(model, optimizer, scheduler, scaler, epoch + 1, step, record))
                distributed.barrier()
        if info.is_main:
            checkpoints.save(_state(model, optimizer, scheduler, scaler, s.epochs, step, record), last)
            state.clear()
            log.info("training done: %d steps in %.1f s, %s", step, time.perf_counter() - t0, last)
        distributed.barrier()
        return Path(last)
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
