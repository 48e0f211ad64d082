"""Mask2Former segmentation teacher (HF transformers): load a local checkpoint, dense per-pixel
class probabilities, top-k soft pseudo-labels, and the demo's small teacher fitted from labels.

The library's semantic scores (softmax over classes without the null class, times sigmoid
masks, summed over queries) sum to 3-5 per pixel; `class_probabilities` normalises them per
pixel so that the stored pseudo-labels are probabilities (DESIGN.md, "Teachers").
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pipeline import cityscapes
from pipeline.atomic import atomic_path
from pipeline.devices import resolve_device
from pipeline.progress import progress_bar
from pipeline.shards import Part, ShardWriter, file_sha256, open_shard

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
SHARDED_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
PROCESSOR_FILE = "preprocessor_config.json"
# transformers 4.x completed a bare `"size": N` (shortest edge) with this longest edge; 5.x does
# not, and its Mask2Former processor then refuses to resize.
LEGACY_LONGEST_EDGE = 1333
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------- checkpoint folder
def weights_files(folder: str | os.PathLike) -> list[Path]:
    """The weight file(s) of a `save_pretrained` folder (single file or the shards of an index)."""
    folder = Path(folder)
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return [folder / name]
    for name in SHARDED_INDEX_FILES:
        index = folder / name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return [folder / s for s in shards]
    return []


def teacher_id(folder: str | os.PathLike) -> dict[str, Any]:
    """`{"checkpoint": folder name, "weights": file names, "sha256": digest}` of a checkpoint folder
    (one weights file: its sha256; several: sha256 over their sha256s)."""
    folder = Path(folder)
    files = weights_files(folder)
    if not files:
        raise FileNotFoundError(f"{folder}: no weights file ({' or '.join(WEIGHT_FILES)})")
    digests = [file_sha256(f) for f in files]
    sha = digests[0] if len(digests) == 1 else hashlib.sha256("".join(digests).encode()).hexdigest()
    return {"checkpoint": folder.name, "weights": [f.name for f in files], "sha256": sha}


def check_checkpoint_folder(folder: str | os.PathLike) -> Path:
    """Raise FileNotFoundError naming the folder unless it holds config.json, weights and a
    preprocessor_config.json (what `save_pretrained` of model and image processor write)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Mask2Former checkpoint folder not found: {folder} (expected a folder written by "
                                f"save_pretrained: config.json, model.safetensors, {PROCESSOR_FILE})")
    missing = [name for name in ("config.json", PROCESSOR_FILE) if not (folder / name).is_file()]
    if not weights_files(folder):
        missing.append(" or ".join(WEIGHT_FILES))
    if missing:
        raise FileNotFoundError(f"Mask2Former checkpoint folder {folder} lacks {', '.join(missing)}")
    return folder


def _check_labels(folder: Path, config) -> None:
    labels = [config.id2label.get(i, f"LABEL_{i}") for i in range(config.num_labels)]
    if config.num_labels != cityscapes.NUM_CLASSES:
        raise ValueError(f"{folder}: expected a Cityscapes semantic Mask2Former with {cityscapes.NUM_CLASSES} labels, "
                         f"found {config.num_labels}: {labels}")
    if all(name == f"LABEL_{i}" for i, name in enumerate(labels)):
        log.warning("%s: config has generic label names; assuming Cityscapes train-id order", folder)
    elif not cityscapes.same_names(labels):
        raise ValueError(f"{folder}: labels are not the Cityscapes train ids in order: found {labels}, "
                         f"expected {list(cityscapes.NAMES)}")


def _load_processor(folder: Path):
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    size = getattr(processor, "size", None)
    if size is not None and size.get("shortest_edge") and not size.get("longest_edge") and not size.get("height"):
        log.warning("%s: processor size has only shortest_edge=%s; completing longest_edge=%d as transformers 4.x did",
                    folder, size["shortest_edge"], LEGACY_LONGEST_EDGE)
        processor = AutoImageProcessor.from_pretrained(
            folder, local_files_only=True,
            size={"shortest_edge": size["shortest_edge"], "longest_edge": LEGACY_LONGEST_EDGE})
    return processor


def _as_device(device) -> torch.device:
    return device if isinstance(device, torch.device) else resolve_device(device)


def load_teacher(checkpoint_dir: str | os.PathLike, device="auto"):
    """Load `(model, processor)` from a LOCAL `save_pretrained` folder (never the hub).

    Checks the folder's files, that the model is a Mask2Former with the 19 Cityscapes labels
    (error naming the folder and the labels found) and that every weight loads. The model is in
    eval mode; fp16 + channels_last on CUDA, fp32 on CPU."""
    from transformers import AutoConfig, Mask2FormerForUniversalSegmentation

    folder = check_checkpoint_folder(checkpoint_dir)
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    if config.model_type != "mask2former":
        raise ValueError(f"{folder}: config.json describes a {config.model_type!r} model, expected 'mask2former'")
    _check_labels(folder, config)
    model, info = Mask2FormerForUniversalSegmentation.from_pretrained(
        folder, config=config, local_files_only=True, output_loading_info=True)
    missing = sorted(info.get("missing_keys") or [])
    mismatched = list(info.get("mismatched_keys") or [])
    if missing or mismatched:
        raise ValueError(f"{folder}: weights do not match the config: missing {missing[:5]} "
                         f"({len(missing)} in all), mismatched {mismatched[:5]}")
    device = _as_device(device)
    model.eval()
    if device.type == "cuda":
        model = model.half().to(device, memory_format=torch.channels_last)
    else:
        model = model.float().to(device)
    return model, _load_processor(folder)


# ----------------------------------------------------------------------------- probabilities
def class_probabilities(class_queries_logits: torch.Tensor, masks_queries_logits: torch.Tensor,
                        out_size: tuple[int, int], pixel_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, Q, C+1) class logits and (B, Q, h, w) mask logits -> (B, C, H, W) float32 probabilities.

    As transformers' `post_process_semantic_segmentation`: softmax over classes, drop the last
    (null) class, sigmoid of the mask logits upsampled (bilinear) to the processed input size,
    einsum "bqc,bqhw->bchw". Then crop each image to its valid (unpadded) region given by
    `pixel_mask` (B, Hp, Wp), resize bilinearly to `out_size` = (H, W), and normalise per pixel
    to sum 1. Without `pixel_mask`, the masks are upsampled straight to `out_size`."""
    classes = class_queries_logits.float().softmax(dim=-1)[..., :-1]
    masks = masks_queries_logits.float()
    size = tuple(pixel_mask.shape[-2:]) if pixel_mask is not None else tuple(out_size)
    masks = F.interpolate(masks, size=size, mode="bilinear", align_corners=False).sigmoid()
    scores = torch.einsum("bqc,bqhw->bchw", classes, masks)
    if pixel_mask is not None:
        scores = torch.cat([_crop_resize(s, m, out_size) for s, m in zip(scores, pixel_mask)])
    return scores / scores.sum(dim=1, keepdim=True).clamp_min(1e-12)


def _crop_resize(scores: torch.Tensor, pixel_mask: torch.Tensor, out_size) -> torch.Tensor:
    """(C, Hp, Wp) scores cropped to the valid top-left region of `pixel_mask`, resized to out_size."""
    valid = pixel_mask.bool()
    height = int(valid.any(dim=1).sum())
    width = int(valid.any(dim=0).sum())
    crop = scores[None, :, :height, :width]
    if (height, width) == tuple(out_size):
        return crop
    return F.interpolate(crop, size=tuple(out_size), mode="bilinear", align_corners=False)


def topk_labels(probs, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, C, H, W) probabilities -> (topk_class uint8 (B, H, W, k), topk_prob uint8 (B, H, W, k)),
    classes in decreasing probability, probabilities stored as round(p * 255)."""
    probs = torch.as_tensor(probs)
    if probs.ndim != 4 or not 1 <= k <= probs.shape[1]:
        raise ValueError(f"topk_labels needs (B, C, H, W) probabilities and 1 <= k <= C, got {tuple(probs.shape)}, k={k}")
    values, classes = probs.float().topk(k, dim=1)
    prob_u8 = (values * 255).round().clamp(0, 255).to(torch.uint8)
    return (classes.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy(),
            prob_u8.permute(0, 2, 3, 1).cpu().numpy())


def dropped_mass(probs, k: int, tau: float = 0.1) -> torch.Tensor:
    """(B, H, W) probability mass of the classes with p > tau that the top-k leaves out."""
    probs = torch.as_tensor(probs).float()
    rest = probs.sort(dim=1, descending=True).values[:, k:]
    return (rest * (rest > tau)).sum(dim=1)


# ----------------------------------------------------------------------------- inference
def contiguous_batches(rows: Sequence[int], batch_size: int,
                       align: int | None = None) -> list[tuple[int, int]]:
    """Split increasing row indices into [start, stop) ranges of consecutive rows, at most batch_size long;
    with `align`, ranges also start at every multiple of it (shard files: the same batches whichever
    jobs write which shards, jobs_per_split)."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size and np.any(np.diff(rows) <= 0):
        raise ValueError("rows must be strictly increasing")
    breaks = np.diff(rows) != 1
    if align:
        breaks |= rows[1:] % align == 0
    out: list[tuple[int, int]] = []
    for run in np.split(rows, np.flatnonzero(breaks) + 1) if rows.size else []:
        for i in range(0, len(run), batch_size):
            piece = run[i:i + batch_size]
            out.append((int(piece[0]), int(piece[-1]) + 1))
    return out


@torch.inference_mode()
def predict(model, processor, images, batch_size: int, device, progress: bool = True,
            rows: Sequence[int] | None = None, align: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield `(start, probs)` over `images` uint8 (N, H, W, 3) (numpy or zarr; frames of one size):
    probs is (B, 19, H, W) float32 on `device` for rows [start, start + B). `rows` (increasing)
    restricts the rows processed; batches never span a gap, nor a multiple of `align`."""
    device = _as_device(device)
    dtype = next(model.parameters()).dtype
    rows = np.arange(len(images)) if rows is None else np.asarray(rows)
    height, width = images.shape[1:3]
    with progress_bar(total=len(rows), disable=not progress, desc="mask2former", unit="frame") as bar:
        for start, stop in contiguous_batches(rows, batch_size, align):
            batch = np.asarray(images[start:stop])
            inputs = processor(images=list(batch), return_tensors="pt", input_data_format="channels_last")
            pixel_values = inputs["pixel_values"].to(device, dtype=dtype)
            if device.type == "cuda":
                pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
            pixel_mask = inputs["pixel_mask"].to(device)
            out = model(pixel_values=pixel_values, pixel_mask=pixel_mask)
            yield start, class_probabilities(out.class_queries_logits, out.masks_queries_logits,
                                             (height, width), pixel_mask=pixel_mask)
            bar.update(stop - start)


def write_pseudolabels(frames_path: str | os.PathLike, out_path: str | os.PathLike, model, processor, *,
                       teacher: Mapping[str, Any], k: int = 3, tau: float = 0.1, batch_size: int = 4,
                       device="auto", attrs: Mapping[str, Any] | None = None, progress: bool = True,
                       part: Part | None = None) -> dict:
    """Write `topk_class`, `topk_prob` uint8 (N, H, W, k) for the target rows of a frames shard
    (other rows 0), with attrs `labels`, `k`, `teacher`, `processor`, `dropped_mass` + `attrs`.
    Returns the dropped-mass report {mean, max, tau, k, pixels}. With `part`, only that part's rows
    (jobs_per_split); batches never span a shard file, so every split into parts gives the same bytes."""
    if not 1 <= k <= cityscapes.NUM_CLASSES:
        raise ValueError(f"top-k must be in [1, {cityscapes.NUM_CLASSES}], got {k}")
    frames = open_shard(frames_path)
    for name in ("image", "target"):
        if name not in frames:
            raise KeyError(f"{frames_path}: frames shard has no `{name}` array")
    images = frames["image"]
    n, height, width = images.shape[:3]
    meta = {**dict(attrs or {}), "labels": list(cityscapes.NAMES), "k": int(k), "teacher": dict(teacher),
            "processor": json.loads(processor.to_json_string())}
    with ShardWriter(out_path, n, meta, part=part) as writer:
        lo, hi = writer.row_range
        rows = np.flatnonzero(np.asarray(frames["target"][lo:hi], dtype=bool)) + lo
        # top-k labels compress ~2.4x with blosc-zstd (benchmarks/teachers.py): 15x smaller than dense float16
        classes_out = writer.rows("topk_class", (height, width, k), np.uint8, compress=True)
        probs_out = writer.rows("topk_prob", (height, width, k), np.uint8, compress=True)
        lost_mass = writer.summary("dropped_mass", count_key="pixels", tau=float(tau), k=int(k))
        for start, probs in predict(model, processor, images, batch_size, device, progress, rows=rows,
                                    align=classes_out.rows_per_shard):
            top_class, top_prob = topk_labels(probs, k)
            classes_out.put(start, top_class)
            probs_out.put(start, top_prob)
            lost = dropped_mass(probs, k, tau)
            lost_mass.add(lost.double().sum(), lost.max(), lost.numel())
        classes_out.close()
        probs_out.close()
        report = lost_mass.report()
    log.info("%s: top-%d drops class mass above tau=%.2f: mean %.5f, max %.4f per pixel over %d pixels (%d frames)",
             out_path, k, tau, report["mean"], report["max"], report["pixels"], len(rows))
    return report


# ----------------------------------------------------------------------------- demo teacher
def resize_labels(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of (N, h, w) uint8 label maps to (N, height, width)."""
    labels = np.asarray(labels, dtype=np.uint8)
    if labels.shape[1:] == (height, width):
        return labels
    return np.stack([cv2.resize(m, (width, height), interpolation=cv2.INTER_NEAREST) for m in labels])


def demo_config(config_overrides: Mapping[str, Any] | None = None):
    """A small Mask2Former config (tiny Swin backbone, 19 Cityscapes labels, 20 queries);
    `config_overrides` update Mask2FormerConfig fields, `backbone_config` (a dict) the Swin fields."""
    from transformers import Mask2FormerConfig, SwinConfig

    overrides = dict(config_overrides or {})
    backbone = dict(embed_dim=24, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8], window_size=4, drop_path_rate=0.0,
                    out_features=["stage1", "stage2", "stage3", "stage4"])
    backbone.update(overrides.pop("backbone_config", {}) or {})
    fields = dict(feature_size=64, mask_feature_size=64, hidden_dim=64, encoder_feedforward_dim=128, encoder_layers=2,
                  decoder_layers=4, num_attention_heads=4, dim_feedforward=128, num_queries=20, train_num_points=2048,
                  id2label=dict(enumerate(cityscapes.NAMES)),
                  label2id={name: i for i, name in enumerate(cityscapes.NAMES)})
    fields.update(overrides)
    return Mask2FormerConfig(backbone_config=SwinConfig(**backbone), **fields)


def demo_processor(height: int, width: int):
    """Image processor keeping frames of (height, width) at their size (rounded up to /32), ImageNet normalisation."""
    from transformers import Mask2FormerImageProcessor

    return Mask2FormerImageProcessor(
        size={"shortest_edge": min(height, width), "longest_edge": max(height, width)}, size_divisor=32,
        do_resize=True, do_rescale=True, do_normalize=True, image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD), ignore_index=cityscapes.IGNORE, do_reduce_labels=False)


def _training_tensors(processor, images: np.ndarray, labels: np.ndarray):
    """Processor outputs for training: pixel values and, per image, one binary mask per present class."""
    keep = [i for i in range(len(labels)) if np.any(labels[i] != cityscapes.IGNORE)]
    if not keep:
        raise ValueError("fit_demo_teacher: every label map is entirely ignore (255)")
    inputs = processor(images=[images[i] for i in keep], segmentation_maps=[labels[i] for i in keep],
                       ignore_index=cityscapes.IGNORE, return_tensors="pt", input_data_format="channels_last")
    return inputs["pixel_values"], list(inputs["mask_labels"]), [c.long() for c in inputs["class_labels"]]


def fit_demo_teacher(images: np.ndarray, labels: np.ndarray, out_dir: str | os.PathLike, *, max_steps: int,
                     device="auto", seed: int = 0, config_overrides: Mapping[str, Any] | None = None,
                     batch_size: int = 4, lr: float = 1e-3) -> dict:
    """Fit a small randomly initialised Mask2Former on uint8 images (N, H, W, 3) and train-id
    label maps (N, H, W) (255 = ignore) with the library's own loss for `max_steps` steps (no wall
    clock: the same seed gives the same teacher); save model and image processor
    with `save_pretrained` into `out_dir` (atomically), loadable by `load_teacher`.
    Returns {steps, losses, first_loss, last_loss, seconds}."""
    from transformers import Mask2FormerForUniversalSegmentation

    images, labels = np.asarray(images, dtype=np.uint8), np.asarray(labels, dtype=np.uint8)
    if images.ndim != 4 or images.shape[-1] != 3 or labels.shape != images.shape[:3]:
        raise ValueError(f"fit_demo_teacher needs images (N, H, W, 3) and labels (N, H, W), got {images.shape} "
                         f"and {labels.shape}")
    device = _as_device(device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    processor = demo_processor(*images.shape[1:3])
    pixel_values, mask_labels, class_labels = _training_tensors(processor, images, labels)
    model = Mask2FormerForUniversalSegmentation(demo_config(config_overrides)).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    losses: list[float] = []
    began = time.monotonic()
    for _ in progress_bar(range(max_steps), desc="demo Mask2Former", mininterval=10):
        pick = rng.choice(len(pixel_values), size=min(batch_size, len(pixel_values)), replace=False)
        flip = bool(rng.random() < 0.5)
        losses.append(_train_step(model, optimizer, pixel_values, mask_labels, class_labels, pick, flip, device))
    seconds = time.monotonic() - began
    report = {"steps": len(losses), "losses": losses, "first_loss": losses[0], "last_loss": losses[-1],
              "seconds": seconds, "seed": seed, "max_steps": max_steps}
    log.info("demo Mask2Former: %d steps in %.1f s, loss %.3f -> %.3f", len(losses), seconds, losses[0], losses[-1])
    _save_checkpoint(model.eval(), processor, Path(out_dir), report)
    return report


def _train_step(model, optimizer, pixel_values, mask_labels, class_labels, pick, flip: bool, device) -> float:
    """One optimiser step on the images `pick` (optionally flipped left-right); returns the loss."""
    pv = pixel_values[pick].to(device)
    masks = [mask_labels[i].to(device) for i in pick]
    if flip:
        pv = pv.flip(-1)
        masks = [m.flip(-1) for m in masks]
    out = model(pixel_values=pv, mask_labels=masks, class_labels=[class_labels[i].to(device) for i in pick])
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return float(out.loss.detach())


def _save_checkpoint(model, processor, out_dir: Path, report: Mapping[str, Any]) -> None:
    """save_pretrained model + processor (+ fit_log.json) into a temporary folder, then rename into place."""
    with atomic_path(out_dir, directory=True) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "fit_log.json").write_text(json.dumps(report, indent=1))
        check_checkpoint_folder(tmp)
