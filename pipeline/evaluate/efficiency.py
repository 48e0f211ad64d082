"""Paper Table 4: parameters, MACs and latency of the inference model, beside Monodepth2.

Parameters exclude ResNet's unused `fc` (as the paper). MACs are counted on the "meta" device in
two named conventions (`pipeline.model.complexity`): "thop" (the paper's counter) and
"flop_counter" (torch's FlopCounterMode, FLOPs / 2). Latency: seconds per image (batch 1) of the
inference forward pass (light net on, no PoseNet) in eval mode under torch.inference_mode, mean of
`runs` timed passes after `warmup` untimed ones; on the CPU always, and on the GPU when the
requested device is CUDA. Monodepth2 = the teacher's own network without its pose network
(`pipeline.teachers.monodepth2.Monodepth2(18, pose=False)`: ResNet-18 encoder + depth decoder),
measured the same way.
"""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn as nn

from pipeline.model import build_model, count_macs, count_parameters
from pipeline.teachers.monodepth2 import Monodepth2

CONVENTIONS = {"thop": "gmacs_thop", "flop_counter": "gmacs_flop_counter"}


def module_costs(module: nn.Module, inputs: tuple) -> dict:
    """{params_m, gmacs_thop, gmacs_flop_counter} of one module called as module(*inputs)."""
    row = {"params_m": count_parameters(module) / 1e6}
    for convention, key in CONVENTIONS.items():
        row[key] = count_macs(module, inputs, convention) / 1e9
    return row


def with_total(rows: dict) -> dict:
    """Add a "total" row: the sum of every column over the modules."""
    keys = next(iter(rows.values())).keys()
    return {**rows, "total": {k: sum(r[k] for r in rows.values()) for k in keys}}


def student_costs(model_cfg: dict, width: int, height: int) -> dict:
    """Per-module costs of the student's inference modules (light when enabled, encoder, both decoders)."""
    model = build_model({"model": model_cfg}).to("meta")
    x = torch.empty(1, 3, height, width, device="meta")
    feats = model.encoder(x)
    inputs = {"light": (x,), "encoder": (x,), "depth_decoder": (feats,), "seg_decoder": (feats,)}
    rows = {name: module_costs(getattr(model, name), args) for name, args in inputs.items()
            if getattr(model, name) is not None}
    return with_total(rows)


def monodepth2_costs(width: int, height: int, num_layers: int = 18) -> dict:
    """Per-module costs of Monodepth2 (encoder + depth decoder)."""
    model = Monodepth2(num_layers, pose=False).to("meta")
    x = torch.empty(1, 3, height, width, device="meta")
    feats = model.encoder(x)
    return with_total({"encoder": module_costs(model.encoder, (x,)),
                       "depth_decoder": module_costs(model.depth_decoder, (feats,))})


def latency_s(model: nn.Module, width: int, height: int, device, runs: int = 20, warmup: int = 3) -> float:
    """Mean seconds per forward pass of one (1, 3, height, width) image on `device`."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"latency: runs must be >= 1 and warmup >= 0, got {runs}, {warmup}")
    device = torch.device(device)
    model = model.to(device).eval()
    image = torch.rand(1, 3, height, width, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            sync()
            t0 = time.perf_counter()
            model(image)
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return statistics.mean(times)


def latencies(model: nn.Module, width: int, height: int, device, runs: int, warmup: int) -> dict:
    """{"cpu": s, "cuda": s or None}: the CPU always, the GPU when `device` is CUDA."""
    device = torch.device(device)
    out = {"cpu": latency_s(model, width, height, "cpu", runs, warmup), "cuda": None}
    if device.type == "cuda":
        out["cuda"] = latency_s(model, width, height, device, runs, warmup)
    return out


def run_efficiency(checkpoint, width: int, height: int, device, runs: int = 20, warmup: int = 3) -> dict:
    """The `efficiency` verb's record: costs and latency of the checkpoint's student and of Monodepth2."""
    from pipeline.evaluate.inference import inference_model_config, load_student
    from pipeline.shards import file_sha256

    if width % 32 or height % 32 or width <= 0 or height <= 0:
        raise ValueError(f"efficiency: width and height must be positive multiples of 32, got {width}x{height}")
    student, settings = load_student(checkpoint, "cpu")
    model_cfg = inference_model_config(settings["model"])
    return {
        "schema_version": 1,
        "width": int(width),
        "height": int(height),
        "device": str(device),
        "gpu_name": torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else None,
        "cpu_threads": torch.get_num_threads(),
        "runs": int(runs),
        "warmup": int(warmup),
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": file_sha256(checkpoint),
        "conventions": {"gmacs_thop": "thop.profile (the paper's counter)",
                        "gmacs_flop_counter": "torch FlopCounterMode FLOPs / 2"},
        "models": {
            "ours": {"modules": student_costs(model_cfg, width, height),
                     "latency_s": latencies(student, width, height, device, runs, warmup)},
            "monodepth2": {"modules": monodepth2_costs(width, height),
                           "latency_s": latencies(Monodepth2(18, pose=False), width, height, device, runs, warmup)},
        },
    }
