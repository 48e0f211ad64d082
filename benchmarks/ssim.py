"""SSIM's 3x3 mean on the CPU: `pipeline.boxfilter.mean3x3` against `F.avg_pool2d(x, 3, 1)`, measured in
the same run, alone and inside whole training steps.

    python -m benchmarks.ssim [--width 192] [--height 96] [--batch-size 2] [--steps 5] [--threads 1]

Prints, for each of (a) the mean of one (B, 3, H+2, W+2) image forward + backward, (b) one DepthSegNet24
training step (`pipeline.train.training_step`, every switch on) and (c) one Monodepth2 training step
(`benchmarks.train_step`): the median seconds with PyTorch's pooling (the baseline, patched into
`pipeline.losses` for the run) and with `mean3x3`, their ratio, and whether the loss and every
parameter after the steps are bit-identical (they must be: `mean3x3` reproduces the pooling's
rounding). Runs alternate between the two, so a machine slowing down mid-run hurts both alike.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import pipeline.losses as losses
from benchmarks.train_step import Monodepth2, monodepth2_loss, random_batch
from pipeline.boxfilter import mean3x3
from pipeline.model import build_model
from pipeline.train import freeze_unused, make_optimizer, training_step

IMPLEMENTATIONS = {"F.avg_pool2d": lambda x: F.avg_pool2d(x, 3, 1), "mean3x3": mean3x3}


def time_pool(pool, x: torch.Tensor, grad: torch.Tensor, reps: int) -> float:
    """Median seconds of pool(x).backward(grad)."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        pool(x).backward(grad)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_steps(kind: str, batch: dict, steps: int) -> tuple[list[float], float, bytes]:
    """Seconds of `steps` training steps after a warm-up, the last loss, the parameters' bytes."""
    torch.manual_seed(0)
    if kind == "student":
        net = build_model({"model": {"width": batch["day"].shape[-1], "height": batch["day"].shape[-2]}}).train()
        freeze_unused(net, use_light=True)

        def loss_fn():
            return training_step(batch, net)["total"]
    else:
        net = Monodepth2().train()
        for m in (net.encoder.encoder.fc, net.pose.encoder.encoder.fc):
            m.requires_grad_(False)

        def loss_fn():
            return monodepth2_loss(batch, net)
    opt = make_optimizer(net, 2.5e-4)
    times, loss = [], None
    for i in range(steps + 1):
        t0 = time.perf_counter()
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    params = b"".join(p.detach().numpy().tobytes() for p in net.state_dict().values())
    return times, float(loss.detach()), params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=192, help="multiple of 32 (paper: 576)")
    ap.add_argument("--height", type=int, default=96, help="multiple of 32 (paper: 320)")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5, help="timed training steps per run (after one warm-up)")
    ap.add_argument("--runs", type=int, default=2, help="runs of each implementation, alternating")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (a demo job has 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch_size, 3, args.height + 2, args.width + 2, generator=g, requires_grad=True)
    grad = torch.rand(args.batch_size, 3, args.height, args.width, generator=g)
    batch = random_batch(args.batch_size, args.height, args.width, torch.device("cpu"))

    rows = []
    pool_s = {name: time_pool(fn, x, grad, 50) for name, fn in IMPLEMENTATIONS.items()}
    pool_same = torch.equal(F.avg_pool2d(x, 3, 1), mean3x3(x))
    rows.append(("3x3 mean, forward + backward", pool_s["F.avg_pool2d"], pool_s["mean3x3"], pool_same))
    for kind, label in (("student", "DepthSegNet24 training step"), ("monodepth2", "Monodepth2 training step")):
        times = {name: [] for name in IMPLEMENTATIONS}
        results = {}
        try:
            for _ in range(args.runs):
                for name, fn in IMPLEMENTATIONS.items():
                    losses.mean3x3 = fn
                    t, loss, params = run_steps(kind, batch, args.steps)
                    times[name] += t
                    results[name] = (loss, params)
        finally:
            losses.mean3x3 = mean3x3
        same = results["F.avg_pool2d"] == results["mean3x3"]
        rows.append((label, statistics.median(times["F.avg_pool2d"]), statistics.median(times["mean3x3"]), same))

    print(f"SSIM's 3x3 mean, {args.width}x{args.height}, batch {args.batch_size}, {torch.get_num_threads()} CPU "
          f"thread(s); median seconds ({args.runs} x {args.steps} steps per implementation)")
    print(f"{'':<32}{'F.avg_pool2d':>14}{'mean3x3':>10}{'ratio':>8}  bit-identical")
    for label, base, new, same in rows:
        print(f"{label:<32}{base:>14.4f}{new:>10.4f}{new / base:>8.2f}  {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
