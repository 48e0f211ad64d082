"""The evaluation protocol of a test split (paper Tables 1-3): what is predicted where, what is counted.

Depth: one of three protocols per dataset (config key `eval.protocol`, e.g. `{nuscenes: md4all, robotcar:
adds}`; the rule passes it to `evaluate` and `evaluate-depth-teacher` as `--protocol`, and every metrics
JSON records it). The defaults are the protocols of the baselines each paper table prints:

- `monodepth2` (nianticlabs/monodepth2 `evaluate_depth.py`): the scaled disparity (`disp_to_depth` with
  the model's min/max depth) is resized bilinearly (cv2) to the gt size and inverted; gt masked to
  (1e-3, max_depth]; per-image median ratio (numpy's median); prediction clamped to [1e-3, max_depth].
  `pipeline.evaluate.depth.compute_depth_metrics`.
- `md4all` (md4all/md4all, the source of Table 2's baseline rows, nuScenes at 80 m):
  depth = 1 / disparity (`utils/depth.py` line 127, `inv2depth`, disparity clamped to >= 1e-6; called at
  `evaluation/evaluator.py` line 67), the DEPTH resized to the gt size with torch bilinear,
  align_corners=True (`utils/depth.py` line 214 -> `utils/image.py` lines 107-136); gt kept in (0.1, 80)
  m, both bounds strict (`utils/depth.py` line 219; `config/config.py` lines 206-207); ratio
  torch.median(gt) / torch.median(pred) (lines 226-227; torch's median is the lower middle value for an
  even count); prediction clamped to [0.1, 80] (line 229); images without a valid pixel are skipped
  (`evaluator.py` lines 77-79); mean over images. No flip post-processing (the `_gt` mode, not `_pp_gt`).
  `pipeline.evaluate.depth.md4all_depth_metrics`.
- `adds` (LINA-lln/ADDS-DepthNet `evaluate_depth.py`, the source of Table 1's rows, RobotCar): the
  disparity resized with cv2's default bilinear to the gt size and inverted (lines 196-197, as
  Monodepth2); every gt > 0 pixel kept (line 209) and the median ratio taken over all of them (lines
  217-218), before the range cap; the scaled prediction clamped to [1e-3, 80] (lines 62-63, 222-223);
  then only gt <= max_depth is scored (lines 225-228: 60 m in the file; Table 1 is ADDS-DepthNet's 40 m
  table, so the cap is `datasets.robotcar.max_depth`, 40). ADDS-DepthNet's gt is the 1280x960 image's
  rows 160-800 (`datasets/kitti_dataset.py` line 95, 1280x640): that crop is `datasets.robotcar.crop`.
  `pipeline.evaluate.depth.adds_depth_metrics`.

Every scored image is also scored against the constant-depth baseline (a prediction of 1 m everywhere,
median-scaled like the model's) with the same protocol; the split's metrics are means over images.

Segmentation: the logits are resized bilinearly to the reference size, then argmax (resizing
scores, not labels, as mmsegmentation does). The reference is the ground-truth `labels` when the
gt shard has them, else the teacher's top-1 class (the paper's RobotCar protocol). With gt labels
the teacher is scored too: its stored top-1 map is resized with nearest neighbour to the labels.

Only `target` rows of the frames shard are evaluated; rows without any valid gt pixel (under the
protocol's mask) are left out of the depth metrics (counted in `n_frames_no_gt`).
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
from pipeline.evaluate.depth import (ADDS_CLAMP_MAX, MD4ALL_MIN_DEPTH, MIN_DEPTH, adds_depth_metrics, aggregate,
                                     compute_depth_metrics, md4all_depth_metrics, resize_prediction)
from pipeline.evaluate.seg import SegMetrics

PROTOCOL_KEY = "eval.protocol"
SEG_PROTOCOL = "confusion-matrix IoU over the 19 Cityscapes classes (255 ignored)"
SEG_RESIZE = "bilinear logits, then argmax"
TEACHER_RESIZE = "nearest neighbour of the teacher's top-1 class"
SEG_REFERENCES = {"gt": "GT labels", "teacher": "teacher top-1"}


@dataclass(frozen=True)
class DepthProtocol:
    """One depth evaluation protocol (see the module docstring): its name, how the prediction is brought to
    the gt size (`resize`: "disparity" = resize the disparity then invert, "depth" = invert then resize with
    align_corners=True), the gt's lower bound, and the reference code it follows."""
    name: str
    resize: str
    min_depth: float
    description: str
    source: str

    def as_record(self) -> dict:
        return {"name": self.name, "description": self.description, "source": self.source,
                "segmentation": SEG_PROTOCOL}


PROTOCOLS = {
    "monodepth2": DepthProtocol(
        "monodepth2", "disparity", MIN_DEPTH,
        "scaled disparity resized bilinearly (cv2) to the gt size, depth = 1 / disp; gt in (1e-3, cap]; "
        "per-image numpy median ratio; prediction clamped to [1e-3, cap]; mean over images",
        "nianticlabs/monodepth2 evaluate_depth.py"),
    "md4all": DepthProtocol(
        "md4all", "depth", MD4ALL_MIN_DEPTH,
        "depth = 1 / disp resized bilinearly (torch, align_corners=True) to the gt size; gt in (0.1, cap) "
        "(strict); per-image torch.median ratio (lower middle value); prediction clamped to [0.1, cap]; mean "
        "over images",
        "md4all/md4all utils/depth.py compute_depth_metrics (lines 210-242), evaluation/evaluator.py, "
        "config/config.py EVALUATION.DEPTH"),
    "adds": DepthProtocol(
        "adds", "disparity", 0.0,
        f"scaled disparity resized bilinearly (cv2) to the gt size, depth = 1 / disp; per-image numpy median "
        f"ratio over ALL gt > 0 pixels; prediction clamped to [1e-3, {ADDS_CLAMP_MAX:g}]; then only gt <= cap "
        f"scored; mean over images",
        "LINA-lln/ADDS-DepthNet evaluate_depth.py (lines 62-63, 196-228)"),
}


def get_protocol(name) -> DepthProtocol:
    """The protocol called `name`; ValueError naming the config key `eval.protocol` otherwise."""
    if isinstance(name, DepthProtocol):
        return name
    if name not in PROTOCOLS:
        raise ValueError(f"config key '{PROTOCOL_KEY}': unknown depth evaluation protocol {name!r}; expected one "
                         f"of {sorted(PROTOCOLS)}")
    return PROTOCOLS[name]


def has_valid_gt(gt: np.ndarray, max_depth: float, protocol) -> bool:
    """Whether the protocol scores any pixel of `gt` under the cap `max_depth`."""
    p = get_protocol(protocol)
    gt = np.asarray(gt)
    if p.name == "md4all":
        return bool(np.any((gt > p.min_depth) & (gt < max_depth)))
    return bool(np.any((gt > p.min_depth) & (gt <= max_depth)))


def depth_metrics(gt: np.ndarray, pred: np.ndarray, max_depth: float, protocol) -> dict[str, float]:
    """Per-image metrics of `pred` (depth at the gt size, before scaling) under `protocol`."""
    p = get_protocol(protocol)
    if p.name == "md4all":
        return md4all_depth_metrics(gt, pred, max_depth)
    if p.name == "adds":
        return adds_depth_metrics(gt, pred, max_depth)
    return compute_depth_metrics(gt, pred, max_depth)


# ----------------------------------------------------------------------------- predictions at the reference size
def depth_from_disp(scaled_disp: np.ndarray, height: int, width: int, protocol) -> np.ndarray:
    """(h, w) scaled disparity -> (height, width) depth as `protocol` does it: resize the disparity (cv2
    bilinear), then invert (Monodepth2, ADDS-DepthNet); or invert (disparity clamped to >= 1e-6), then
    resize the depth (torch bilinear, align_corners=True: md4all)."""
    p = get_protocol(protocol)
    if p.resize == "depth":
        disp = torch.from_numpy(np.asarray(scaled_disp, dtype=np.float32))
        if disp.ndim != 2:
            raise ValueError(f"depth_from_disp expects an (H, W) map, got shape {tuple(disp.shape)}")
        depth = 1.0 / disp.clamp(min=1e-6)
        if tuple(depth.shape) != (height, width):
            depth = F.interpolate(depth[None, None], size=(int(height), int(width)), mode="bilinear",
                                  align_corners=True)[0, 0]
        return depth.numpy()
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
    """Per-image depth metrics of one split under `protocol`, each image also scored against the
    constant-depth baseline.

    `add(gt, depth)` scores one image at the gt size; an image whose gt has no pixel the protocol scores
    under the cap is not scored and counted in `skipped`."""

    def __init__(self, max_depth: float, protocol):
        self.max_depth = float(max_depth)
        self.protocol = get_protocol(protocol)
        self.per_image: list[dict] = []
        self.baseline: list[dict] = []
        self.skipped = 0

    def add(self, gt: np.ndarray, depth: np.ndarray) -> bool:
        if not has_valid_gt(gt, self.max_depth, self.protocol):
            self.skipped += 1
            return False
        self.per_image.append(depth_metrics(gt, depth, self.max_depth, self.protocol))
        self.baseline.append(depth_metrics(gt, np.ones_like(depth), self.max_depth, self.protocol))
        return True

    def summary(self, source) -> dict:
        """`depth`, `baseline_constant` (means over the scored images), `n_frames_no_gt`, `max_depth`,
        `min_depth`, `protocol`; ValueError naming `source` (the gt shard) when no image was scored."""
        if not self.per_image:
            raise ValueError(f"{source}: no target row has a gt depth in ({self.protocol.min_depth}, "
                             f"{self.max_depth}] m (protocol {self.protocol.name})")
        return {"n_frames_no_gt": int(self.skipped), "max_depth": self.max_depth,
                "min_depth": self.protocol.min_depth, "protocol": self.protocol.name,
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
