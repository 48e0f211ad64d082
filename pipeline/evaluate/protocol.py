"""The evaluation protocol of a test split (paper Tables 1-3): what is predicted where, what is counted.

Depth follows Monodepth2's `evaluate_depth.py`: the network's scaled disparity (`disp_to_depth`
with the model's min/max depth) is resized bilinearly to the ground-truth size and inverted
(depth = 1 / disp); `pipeline.evaluate.depth.compute_depth_metrics` then masks the gt to
(1e-3, max_depth], median-scales per image and clamps; the split's metrics are means over images.
Every scored image is also scored against the constant-depth baseline (a prediction of 1 m
everywhere, median-scaled like the model's).

Segmentation: the logits are resized bilinearly to the reference size, then argmax (resizing
scores, not labels, as mmsegmentation does). The reference is the ground-truth `labels` when the
gt shard has them, else the teacher's top-1 class (the paper's RobotCar protocol). With gt labels
the teacher is scored too: its stored top-1 map is resized with nearest neighbour to the labels.

Only `target` rows of the frames shard are evaluated; rows without any valid gt pixel are left
out of the depth metrics (counted in `n_frames_no_gt`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pipeline import cityscapes
from pipeline.evaluate.depth import MIN_DEPTH, aggregate, compute_depth_metrics, resize_prediction
from pipeline.evaluate.seg import SegMetrics

PROTOCOL = ("Monodepth2: scaled disparity resized bilinearly to the gt size, depth = 1 / disp; gt masked to "
            "(1e-3, max_depth]; per-image median scaling; prediction clamped to [1e-3, max_depth]; mean over "
            "images. Segmentation: confusion-matrix IoU over the 19 Cityscapes classes (255 ignored).")
SEG_RESIZE = "bilinear logits, then argmax"
TEACHER_RESIZE = "nearest neighbour of the teacher's top-1 class"


# ----------------------------------------------------------------------------- predictions at the reference size
def depth_from_disp(scaled_disp: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w) scaled disparity -> (height, width) depth: resize the disparity, then invert (Monodepth2)."""
    return 1.0 / resize_prediction(scaled_disp, height, width)


def seg_from_logits(logits: torch.Tensor, height: int, width: int) -> np.ndarray:
    """(B, C, h, w) logits -> (B, height, width) uint8 classes (bilinear logits, then argmax)."""
    if logits.shape[-2:] != (height, width):
        logits = F.interpolate(logits.float(), size=(height, width), mode="bilinear", align_corners=False)
    return logits.argmax(1).to(torch.uint8).cpu().numpy()


def resize_labels_nearest(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) integer map -> (height, width) with nearest neighbour."""
    labels = np.asarray(labels)
    if labels.shape == (height, width):
        return labels
    return cv2.resize(labels, (int(width), int(height)), interpolation=cv2.INTER_NEAREST)


# ----------------------------------------------------------------------------- what is counted
class DepthScores:
    """Per-image depth metrics of one split, each image also scored against the constant-depth baseline.

    `add(gt, depth)` scores one image at the gt size; an image whose gt has no pixel in
    (MIN_DEPTH, max_depth] is not scored and counted in `skipped`."""

    def __init__(self, max_depth: float):
        self.max_depth = float(max_depth)
        self.per_image: list[dict] = []
        self.baseline: list[dict] = []
        self.skipped = 0

    def add(self, gt: np.ndarray, depth: np.ndarray) -> bool:
        if not np.any((gt > MIN_DEPTH) & (gt <= self.max_depth)):
            self.skipped += 1
            return False
        self.per_image.append(compute_depth_metrics(gt, depth, self.max_depth))
        self.baseline.append(compute_depth_metrics(gt, np.ones_like(depth), self.max_depth))
        return True

    def summary(self, source) -> dict:
        """`depth`, `baseline_constant` (means over the scored images), `n_frames_no_gt`, `max_depth`,
        `min_depth`; ValueError naming `source` (the gt shard) when no image was scored."""
        if not self.per_image:
            raise ValueError(f"{source}: no target row has a gt depth in ({MIN_DEPTH}, {self.max_depth}] m")
        return {"n_frames_no_gt": int(self.skipped), "max_depth": self.max_depth, "min_depth": MIN_DEPTH,
                "depth": aggregate(self.per_image), "baseline_constant": aggregate(self.baseline)}


def seg_summary(metrics: SegMetrics) -> dict:
    """SegMetrics.compute() with per-class values keyed by Cityscapes name; NaN -> None (valid JSON)."""
    res = metrics.compute()
    return {
        "miou": finite(res["miou"]),
        "pixel_acc": finite(res["pixel_acc"]),
        "iou": {name: finite(v) for name, v in zip(cityscapes.NAMES, res["iou"])},
        "acc": {name: finite(v) for name, v in zip(cityscapes.NAMES, res["acc"])},
        "n_pixels": int(metrics.confusion.sum()),
    }


def finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


# ----------------------------------------------------------------------------- which rows, which reference
@dataclass(frozen=True)
class SplitPlan:
    """What is evaluated on one split: the target `rows`, the seg `reference` ("gt" | "teacher"), and the
    sizes depth (`depth_hw`, the gt's) and segmentation (`seg_hw`, the reference's) are scored at."""
    rows: np.ndarray
    reference: str
    depth_hw: tuple[int, int]
    seg_hw: tuple[int, int]


def target_rows(frames) -> np.ndarray:
    """Row indices of the `target` rows of a frames group."""
    return np.flatnonzero(np.asarray(frames["target"][:], dtype=bool))


def check_aligned(frames, named_groups: dict) -> None:
    """Every group (array name -> (path, group or None)) has as many rows as the frames shard."""
    n = frames["image"].shape[0]
    for key, (path, group) in named_groups.items():
        if group is None:
            continue
        rows = group[key].shape[0]
        if rows != n:
            raise ValueError(f"{path}: `{key}` has {rows} rows, the frames shard has {n}")


def seg_reference_kind(gt, teacher, gt_path, teacher_path) -> str:
    """"gt" when the gt shard holds `labels`, else "teacher" (which then must be given and hold `topk_class`)."""
    if "labels" in gt:
        return "gt"
    if teacher is None:
        raise ValueError(f"{gt_path} has no `labels` and no seg-teacher shard was given: no segmentation reference")
    if "topk_class" not in teacher:
        raise KeyError(f"{teacher_path}: seg-teacher shard has no `topk_class` array")
    return "teacher"


def check_teacher_labels(teacher, path) -> None:
    """The teacher shard's class names (attrs `labels`, when present) are the 19 Cityscapes ones."""
    names = teacher.attrs.get("labels")
    if names is not None and not cityscapes.same_names(names):
        raise ValueError(f"{path}: attrs `labels` are not the 19 Cityscapes train-id names in order: {names}")


def plan_split(frames, gt, teacher, gt_path="gt", teacher_path="seg_teacher") -> SplitPlan:
    """Check the shards (aligned rows, teacher class names, a seg reference, target rows) and decide the plan."""
    check_aligned(frames, {"depth": (gt_path, gt), "topk_class": (teacher_path, teacher)})
    if teacher is not None:
        check_teacher_labels(teacher, teacher_path)
    reference = seg_reference_kind(gt, teacher, gt_path, teacher_path)
    rows = target_rows(frames)
    if not len(rows):
        raise ValueError("the frames shard has no target rows to evaluate")
    seg_hw = gt["labels"].shape[1:] if reference == "gt" else teacher["topk_class"].shape[1:3]
    return SplitPlan(rows, reference, tuple(gt["depth"].shape[1:]), tuple(seg_hw))


def iter_batches(rows: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    for start in range(0, len(rows), batch_size):
        yield rows[start:start + batch_size]
