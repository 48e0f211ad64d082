"""Time of one DepthSegNet24 training step against one Monodepth2 training step, measured in the same run.

    python -m benchmarks.train_step [--width 192] [--height 96] [--batch-size 2] [--steps 5] [--device auto]
    python -m benchmarks.train_step --width 576 --height 320 --batch-size 4 --device cuda   # the paper's setting

A step = forward + loss + backward + Adam update, on a random batch of the given size:
- DepthSegNet24: `pipeline.train.training_step` with every switch on (light net, real day + synthetic night
  + real night + synthetic day through the network, PoseNet on the real day and night pairs, eq. 1-18);
- Monodepth2: ResNet-18 depth encoder + depth decoder + PoseNet on one day triplet, self-supervised loss
  only (eq. 4-8), built from the same `pipeline.model` / `pipeline.losses` pieces.
Both use the same optimiser (`pipeline.train.make_optimizer`). Reported: mean and median seconds per step
over --steps timed steps after one warm-up step, and their ratios."""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn

from pipeline.devices import resolve_device
from pipeline.geometry import K3_to_K4
from pipeline.losses import self_supervised_loss
from pipeline.model import DepthDecoder, PoseNet, ResnetEncoder, build_model
from pipeline.train import freeze_unused, make_optimizer, training_step


def random_batch(batch: int, height: int, width: int, device, k: int = 3, num_classes: int = 19) -> dict:
    """A training batch with every key `training_step` reads (random images and labels, plausible K)."""
    g = torch.Generator().manual_seed(0)

    def img():
        return torch.rand(batch, 3, height, width, generator=g)

    K = torch.tensor([[0.58 * width, 0, width / 2], [0, 1.92 * height, height / 2], [0, 0, 1]]).repeat(batch, 1, 1)
    depth = 1 + 20 * torch.rand(batch, 1, height, width, generator=g)
    out = {"day_K": K, "night_K": K.clone(), "day_teacher_depth": depth}
    for side in ("day", "night"):
        for key in (side, f"{side}_prev", f"{side}_next"):
            out[key] = img()
        shape = (batch, k, height, width)
        out[f"{side}_topk_class"] = torch.randint(0, num_classes, shape, generator=g, dtype=torch.uint8)
        out[f"{side}_topk_prob"] = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
    out["syn_night"], out["syn_day"] = img(), img()
    return {key: v.to(device) for key, v in out.items()}


class Monodepth2(nn.Module):
    """Monodepth2's training networks: depth encoder + decoder, separate pose network."""

    def __init__(self):
        super().__init__()
        self.encoder = ResnetEncoder(18)
        self.depth_decoder = DepthDecoder(self.encoder.num_ch_enc)
        self.pose = PoseNet(18)


def monodepth2_loss(batch: dict, net: Monodepth2) -> torch.Tensor:
    """Monodepth2's self-supervised loss on the day triplet (frame ids 0, -1, +1)."""
    disps = net.depth_decoder(net.encoder(batch["day"]))
    poses = [net.pose.transform(batch["day"], batch["day_prev"], True),
             net.pose.transform(batch["day"], batch["day_next"], False)]
    K = K3_to_K4(batch["day_K"])
    return self_supervised_loss(batch["day"], [batch["day_prev"], batch["day_next"]], disps, poses, K,
                                torch.linalg.inv(K))


def time_steps(loss_fn, params_model: nn.Module, steps: int, device) -> list[float]:
    """Seconds per (forward, loss, backward, Adam) step; one warm-up step first."""
    opt = make_optimizer(params_model, 2.5e-4)
    times = []
    for i in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=192, help="multiple of 32 (paper: 576)")
    ap.add_argument("--height", type=int, default=96, help="multiple of 32 (paper: 320)")
    ap.add_argument("--batch-size", type=int, default=2, help="paper: 4")
    ap.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up)")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    batch = random_batch(args.batch_size, args.height, args.width, device)

    student = build_model({"model": {"width": args.width, "height": args.height}}).to(device).train()
    freeze_unused(student, use_light=True)
    ours = time_steps(lambda: training_step(batch, student)["total"], student, args.steps, device)
    del student

    md2 = Monodepth2().to(device).train()
    for m in (md2.encoder.encoder.fc, md2.pose.encoder.encoder.fc):
        m.requires_grad_(False)
    theirs = time_steps(lambda: monodepth2_loss(batch, md2), md2, args.steps, device)

    print(f"one training step, {args.width}x{args.height}, batch {args.batch_size}, {device}, "
          f"{torch.get_num_threads()} CPU threads, {args.steps} timed steps")
    print(f"{'model':<26}{'mean s':>10}{'median s':>10}")
    for name, t in (("DepthSegNet24 (eq. 1-18)", ours), ("Monodepth2 (eq. 4-8)", theirs)):
        print(f"{name:<26}{statistics.mean(t):>10.3f}{statistics.median(t):>10.3f}")
    print(f"ratio DepthSegNet24 / Monodepth2: {statistics.mean(ours) / statistics.mean(theirs):.2f}x (means), "
          f"{statistics.median(ours) / statistics.median(theirs):.2f}x (medians: robust on a shared CPU)")


if __name__ == "__main__":
    main()
