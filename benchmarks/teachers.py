"""Teacher throughput and seg pseudo-label storage: CycleGAN, Mask2Former, Monodepth2.

    python -m benchmarks.teachers [--width 576] [--height 320] [--n 4] [--batch-size 2]
                                  [--device auto] [--threads N]        (from the repo root)

1. Inference images/s and ms/image of each teacher at --width x --height on random uint8 frames,
   random-init weights (no checkpoints needed; speed does not depend on the weight values):
   CycleGAN `translate` (ResnetGenerator ngf 64, 9 blocks), Mask2Former `predict` with the paper's
   Swin-L Cityscapes-semantic architecture and with the small demo config, Monodepth2 `predict_depth`
   (ResNet-18 encoder + depth decoder). Each is warmed up on one batch first, then timed once.
2. Bytes per frame of the top-k seg pseudo-label shard (uint8 `topk_class` + `topk_prob`, written
   exactly as `write_pseudolabels` writes them) against dense float16 probabilities (19 x 2 B/pixel),
   for k = 1, 2, 3, on smooth softmax probabilities where a few classes dominate each pixel.
3. End-to-end images/s of the `translate` CLI verb on a small frames shard in a temp dir.
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline import cityscapes
from pipeline.devices import resolve_device
from pipeline.shards import ShardWriter, open_shard
from pipeline.synth import cyclegan
from pipeline.teachers import mask2former, monodepth2

# facebook/mask2former-swin-large-cityscapes-semantic: Swin-L backbone (window 12) + the library's
# default Mask2Former head (256-d pixel decoder with 6 deformable encoder layers, 10 decoder layers,
# 8 heads), 19 Cityscapes labels, 100 queries.
SWIN_L = dict(embed_dim=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48], window_size=12,
              drop_path_rate=0.0, out_features=["stage1", "stage2", "stage3", "stage4"])
SWIN_L_HEAD = dict(num_queries=100, feature_size=256, mask_feature_size=256, hidden_dim=256,
                   encoder_feedforward_dim=1024, encoder_layers=6, decoder_layers=10, num_attention_heads=8,
                   dim_feedforward=2048)
GOAL_RATIO = 10.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def report(name: str, n: int, seconds: float, device: torch.device, note: str = "") -> dict:
    row = {"name": name, "n": n, "seconds": seconds, "ips": n / seconds, "ms": seconds / n * 1e3}
    print(f"  {name:42s} {row['ips']:8.3f} images/s  {row['ms']:9.1f} ms/image  "
          f"({n} images, {device}, {torch.get_num_threads()} threads){note}")
    return row


def random_frames(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------- 1. teachers
def bench_cyclegan(images, batch_size, device) -> dict:
    torch.manual_seed(0)
    G = cyclegan.init_weights(cyclegan.ResnetGenerator(ngf=64, n_blocks=9))
    cyclegan.translate(G, images[:batch_size], batch_size, device)  # warm-up
    seconds = timed(lambda: cyclegan.translate(G, images, batch_size, device), device)
    return report("CycleGAN translate (ngf64, 9 blocks)", len(images), seconds, device)


def swin_l_config():
    """Mask2Former with the architecture of facebook/mask2former-swin-large-cityscapes-semantic."""
    return mask2former.demo_config({**SWIN_L_HEAD, "backbone_config": SWIN_L})


def bench_mask2former(name, config, images, batch_size, device, note="") -> dict:
    from transformers import Mask2FormerForUniversalSegmentation

    torch.manual_seed(0)
    model = Mask2FormerForUniversalSegmentation(config).eval().to(device)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    processor = mask2former.demo_processor(*images.shape[1:3])

    def run(batch):
        for _ in mask2former.predict(model, processor, batch, batch_size, device, progress=False):
            pass

    run(images[:min(batch_size, len(images))])  # warm-up
    seconds = timed(lambda: run(images), device)
    return report(f"{name} ({params:.0f} M params)", len(images), seconds, device, note)


def bench_monodepth2(images, batch_size, device) -> dict:
    torch.manual_seed(0)
    model = monodepth2.Monodepth2(18, pose=False)
    monodepth2.predict_depth(model, images[:batch_size], batch_size, device)  # warm-up
    seconds = timed(lambda: monodepth2.predict_depth(model, images, batch_size, device), device)
    return report("Monodepth2 predict_depth (ResNet-18)", len(images), seconds, device)


# ----------------------------------------------------------------------------- 2. shard size
def smooth_probabilities(n: int, height: int, width: int, seed: int = 0, cell: int = 32,
                         scale: float = 6.0) -> torch.Tensor:
    """(n, 19, H, W) softmax of random logits drawn on a coarse grid (one value per `cell` pixels)
    and upsampled bilinearly: smooth regions where one to three classes dominate, as a teacher's."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, cityscapes.NUM_CLASSES, max(2, height // cell), max(2, width // cell), generator=g)
    logits = F.interpolate(coarse * scale, size=(height, width), mode="bicubic", align_corners=False)
    return logits.softmax(dim=1)


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def array_bytes(group_path: Path, name: str) -> int:
    return dir_bytes(group_path / name)


def write_topk_shard(path: Path, probs: torch.Tensor, k: int, compress: bool = False) -> None:
    """`topk_class`, `topk_prob` uint8 (N, H, W, k) written as `mask2former.write_pseudolabels`
    writes them (ShardWriter.create with its default rows per shard, one row per chunk, no
    compression unless `compress`; whole zarr shards at once)."""
    n, _, height, width = probs.shape
    top_class, top_prob = mask2former.topk_labels(probs, k)
    with ShardWriter(path, n, {"k": k, "labels": list(cityscapes.NAMES)}) as w:
        for name, values in (("topk_class", top_class), ("topk_prob", top_prob)):
            w.create(name, (height, width, k), np.uint8, compress=compress)
            step = w.rows_per_shard[name]
            for start in range(0, n, step):
                w.write(name, start, values[start:start + step])


def write_dense_shard(path: Path, probs: torch.Tensor) -> None:
    """Dense float16 (N, H, W, 19) probabilities, blosc-zstd compressed like the depth arrays."""
    n, c, height, width = probs.shape
    dense = probs.permute(0, 2, 3, 1).to(torch.float16).numpy()
    with ShardWriter(path, n) as w:
        w.create("probs", (height, width, c), np.float16, compress=True)
        step = w.rows_per_shard["probs"]
        for start in range(0, n, step):
            w.write("probs", start, dense[start:start + step])


def bench_storage(tmp: Path, n: int, height: int, width: int) -> dict:
    probs = smooth_probabilities(n, height, width)
    pixels = height * width
    dense_raw = cityscapes.NUM_CLASSES * 2 * pixels
    top1 = probs.max(dim=1).values
    print(f"  {n} frames of {width}x{height}; probabilities: mean top-1 {float(top1.mean()):.3f}, "
          f"pixels with top-1 > 0.9: {float((top1 > 0.9).float().mean()) * 100:.1f} %")
    write_dense_shard(tmp / "dense.zarr", probs)
    dense_zstd = array_bytes(tmp / "dense.zarr", "probs") / n
    print(f"  dense float16, uncompressed (19 x 2 B/pixel): {dense_raw / 1024:9.1f} KiB/frame")
    print(f"  dense float16, blosc-zstd on disk:            {dense_zstd / 1024:9.1f} KiB/frame")
    print(f"  {'k':>2s} {'top-k on disk':>14s} {'dense/top-k':>12s} {'in memory':>10s} {'vs zstd dense':>14s} "
          f"{'top-k raw*':>12s} {'dense/raw*':>12s} {'dropped mass':>13s}  goal >= {GOAL_RATIO:.0f}x")
    rows = {}
    for k in (1, 2, 3):
        write_topk_shard(tmp / f"top{k}.zarr", probs, k, compress=True)
        group = open_shard(tmp / f"top{k}.zarr")
        assert group["topk_class"].shape == (n, height, width, k) and group["topk_prob"].dtype == np.uint8
        disk = (array_bytes(tmp / f"top{k}.zarr", "topk_class") + array_bytes(tmp / f"top{k}.zarr", "topk_prob")) / n
        write_topk_shard(tmp / f"top{k}_zstd.zarr", probs, k, compress=False)
        disk_z = (array_bytes(tmp / f"top{k}_zstd.zarr", "topk_class")
                  + array_bytes(tmp / f"top{k}_zstd.zarr", "topk_prob")) / n
        lost = float(mask2former.dropped_mass(probs, k).mean())
        rows[k] = {"bytes": disk, "ratio": dense_raw / disk, "mem_ratio": 38 / (2 * k),
                   "ratio_vs_zstd_dense": dense_zstd / disk, "bytes_raw": disk_z, "ratio_raw": dense_raw / disk_z,
                   "dropped": lost}
        r = rows[k]
        print(f"  {k:2d} {disk / 1024:10.1f} KiB {r['ratio']:11.2f}x {r['mem_ratio']:9.2f}x {r['ratio_vs_zstd_dense']:13.2f}x "
              f"{disk_z / 1024:8.1f} KiB {r['ratio_raw']:11.2f}x {lost:13.5f}  "
              f"{'yes' if r['ratio'] >= GOAL_RATIO else 'NO'}")
    print("  (on disk = sum of file sizes of the two arrays per frame, as the seg-pseudolabels verb writes them: "
          "uint8 with blosc-zstd; in memory = 38 B vs 2k B per pixel; *raw = the same arrays uncompressed; "
          "dropped mass = mean per-pixel mass of classes with "
          "p > 0.1 left out)")
    return {"dense_raw": dense_raw, "dense_zstd": dense_zstd, "topk": rows}


# ----------------------------------------------------------------------------- 3. translate CLI
def write_frames_shard(path: Path, images: np.ndarray) -> Path:
    """A frames shard of uint8 images (N, H, W, 3), every row a target, consecutive rows neighbours."""
    n, height, width = images.shape[:3]
    with ShardWriter(path, n, {"rule": "benchmark"}) as w:
        w.create("image", (height, width, 3), "uint8", rows_per_shard=64)
        w.write("image", 0, images)
        w.write_all("target", np.ones(n, bool))
        w.write_all("prev", np.arange(n) - 1)
        w.write_all("next", np.where(np.arange(n) + 1 < n, np.arange(n) + 1, -1))
    return path


def bench_translate_cli(tmp: Path, images: np.ndarray, batch_size: int, device: torch.device) -> dict:
    from pipeline import cli

    n = len(images)
    frames = write_frames_shard(tmp / "frames.zarr", images)
    torch.manual_seed(0)
    generator = cyclegan.save_generator(cyclegan.init_weights(cyclegan.ResnetGenerator(ngf=64, n_blocks=9)),
                                        tmp / "G.pth")
    out = tmp / "synth.zarr"
    argv = ["translate", "--frames", str(frames), "--generator", str(generator), "--out", str(out),
            "--batch-size", str(batch_size), "--device", str(device), "--part", "0/1", "--rows-per-shard", "64"]
    print(f"  python -m pipeline {' '.join(argv)}")
    t0 = time.perf_counter()
    code = cli.main(argv)
    seconds = time.perf_counter() - t0
    if code != 0:
        raise RuntimeError(f"translate verb exited with {code}")
    written = open_shard(out)["image"]
    assert written.shape == images.shape
    return report("translate verb, end to end", n, seconds, device,
                  " (load generator + read frames + translate + write shard + checksums)")


# ----------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=576)
    ap.add_argument("--height", type=int, default=320)
    ap.add_argument("--n", type=int, default=4, help="images timed per teacher (default 4)")
    ap.add_argument("--n-swin-l", type=int, default=2,
                    help="images timed for the Swin-L Mask2Former (default 2: too slow on a CPU for more)")
    ap.add_argument("--n-translate", type=int, default=4, help="frames in the translate-verb shard (default 4)")
    ap.add_argument("--n-shard", type=int, default=8, help="frames in the pseudo-label shards (default 8)")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    device = resolve_device(args.device)
    if device.type == "cuda":  # the pseudo-label verbs' speed on a GPU: full Swin-L timing is affordable
        args.n_swin_l = max(args.n_swin_l, args.n)
    h, w, bs = args.height, args.width, args.batch_size
    began = time.perf_counter()
    print(f"Teacher benchmark at {w}x{h} (W x H), batch size {bs}, device {device}, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}; random-init weights, "
          f"random uint8 frames; one warm-up batch, then one timed pass")
    print(f"CPU: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start "
          "(other processes on the machine slow every figure below)")

    print(f"\n== 1. Teacher inference at {w}x{h} ==")
    images = random_frames(max(args.n, args.n_swin_l), h, w)
    summary = {"cyclegan": bench_cyclegan(images[:args.n], bs, device)}
    swin_note = "" if args.n_swin_l >= args.n else f" [only {args.n_swin_l} images: Swin-L is slow on {device}]"
    print(f"  Mask2Former Swin-L = facebook/mask2former-swin-large-cityscapes-semantic architecture: Swin-L "
          f"(embed_dim {SWIN_L['embed_dim']}, depths {SWIN_L['depths']}, heads {SWIN_L['num_heads']}, window "
          f"{SWIN_L['window_size']}), {cityscapes.NUM_CLASSES} labels, {SWIN_L_HEAD['num_queries']} queries, "
          f"{SWIN_L_HEAD['decoder_layers']} decoder layers, hidden {SWIN_L_HEAD['hidden_dim']}; processor keeps "
          f"the frame size (demo_processor({h}, {w}))")
    summary["swin_l"] = bench_mask2former("Mask2Former Swin-L predict", swin_l_config(), images[:args.n_swin_l],
                                          bs, device, swin_note)
    summary["demo_m2f"] = bench_mask2former("Mask2Former demo_config predict", mask2former.demo_config(),
                                            images[:args.n], bs, device)
    summary["monodepth2"] = bench_monodepth2(images[:args.n], bs, device)

    with tempfile.TemporaryDirectory(prefix="bench_teachers_") as tmp:
        tmp = Path(tmp)
        print(f"\n== 2. Seg pseudo-label shard size: top-k uint8 vs dense float16 ({w}x{h}) ==")
        storage = bench_storage(tmp, args.n_shard, h, w)
        print(f"\n== 3. translate verb end to end ({args.n_translate} frames of {w}x{h}) ==")
        summary["translate_cli"] = bench_translate_cli(tmp, random_frames(args.n_translate, h, w, seed=1), bs, device)

    print(f"\n== Summary ({w}x{h}, {device}, {torch.get_num_threads()} threads, batch {bs}) ==")
    labels = {"cyclegan": "CycleGAN translate()", "swin_l": "Mask2Former Swin-L", "demo_m2f": "Mask2Former demo",
              "monodepth2": "Monodepth2", "translate_cli": "translate verb (end to end)"}
    for key, label in labels.items():
        r = summary[key]
        print(f"  {label:28s} {r['ips']:8.3f} images/s {r['ms']:9.1f} ms/image  (n={r['n']})")
    for k, r in storage["topk"].items():
        print(f"  top-{k} shard {r['bytes'] / 1024:8.1f} KiB/frame on disk: {r['ratio']:5.2f}x smaller than dense "
              f"float16 ({storage['dense_raw'] / 1024:.0f} KiB), {r['mem_ratio']:5.2f}x in memory; "
              f"goal >= {GOAL_RATIO:.0f}x {'met' if r['ratio'] >= GOAL_RATIO else 'NOT met'}")
    print(f"  total benchmark time {time.perf_counter() - began:.0f} s, load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
