"""Student inference on a test split and the `evaluate` protocol (paper Tables 1-3).

Depth follows Monodepth2's `evaluate_depth.py`: the network's sigmoid disparity is mapped by
`disp_to_depth` (the model's min/max depth) to a scaled disparity, resized bilinearly to the
ground-truth size, and inverted (depth = 1 / disp); `compute_depth_metrics` then masks the gt to
(1e-3, max_depth], median-scales per image and clamps; the split's metrics are means over images.

Segmentation: the logits are resized bilinearly to the reference size, then argmax (resizing
scores, not labels, as mmsegmentation does). The reference is the ground-truth `labels` when the
gt shard has them, else the teacher's top-1 class (the paper's RobotCar protocol). With gt labels
the teacher is scored too: its stored top-1 map is resized with nearest neighbour to the labels.

Only `target` rows of the frames shard are evaluated; rows without any valid gt pixel are skipped
(counted in `n_frames_no_gt`).
"""
from __future__ import annotations

import json
import logging
import math
import os
import uuid
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pipeline import cityscapes
from pipeline.evaluate.depth import MIN_DEPTH, aggregate, compute_depth_metrics, resize_prediction
from pipeline.evaluate.seg import SegMetrics
from pipeline.geometry import disp_to_depth
from pipeline.shards import file_sha256

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
PROTOCOL = ("Monodepth2: scaled disparity resized bilinearly to the gt size, depth = 1 / disp; gt masked to "
            "(1e-3, max_depth]; per-image median scaling; prediction clamped to [1e-3, max_depth]; mean over "
            "images. Segmentation: confusion-matrix IoU over the 19 Cityscapes classes (255 ignored).")
SEG_RESIZE = "bilinear logits, then argmax"
TEACHER_RESIZE = "nearest neighbour of the teacher's top-1 class"


# ----------------------------------------------------------------------------- checkpoint
def load_student(path, device) -> tuple[torch.nn.Module, dict]:
    """Student from a `train` checkpoint -> (model in eval mode on `device`, training settings).

    The checkpoint is a torch.save'd dict with the model state dict under "model" and the
    training settings under "settings" (their "model" section builds the network). The pose
    network is dropped: it is not part of the inference model."""
    from pipeline.model import build_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"student checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "settings"):
        if not isinstance(ckpt, dict) or key not in ckpt:
            raise KeyError(f"{path}: not a student checkpoint (no {key!r} entry)")
    settings = ckpt["settings"]
    if "model" not in settings:
        raise KeyError(f"{path}: checkpoint settings have no 'model' section")
    model = build_model({"model": inference_model_config(settings["model"])})
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise RuntimeError(f"{path}: state dict does not match the model of its settings: {exc}") from exc
    model.pose = None
    return model.eval().to(device), settings


def untrained_student(settings: dict, device) -> torch.nn.Module:
    """The network a `train` run started from: same settings, `seed_everything(settings["seed"])`, then
    `build_model`, as the train verb does. The ImageNet encoder file is not loaded (see
    `inference_model_config`), so with `encoder.pretrained` set this is the random initialisation."""
    from pipeline.model import build_model
    from pipeline.train import seed_everything

    seed_everything(int(settings.get("seed", 0)))
    model = build_model({"model": inference_model_config(settings["model"])})
    model.pose = None
    return model.eval().to(device)


def inference_model_config(model_cfg: dict) -> dict:
    """The "model" config section with `encoder.pretrained` cleared: the checkpoint holds every weight,
    and the ImageNet file the training run started from need not exist where the model is evaluated."""
    cfg = dict(model_cfg)
    cfg["encoder"] = {**dict(cfg.get("encoder") or {}), "pretrained": None}
    return cfg


# ----------------------------------------------------------------------------- arrays
def to_tensor(images: np.ndarray, device) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float in [0, 1] on `device`."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected (B, H, W, 3) uint8 images, got {images.shape} {images.dtype}")
    return torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float().div_(255.0)


@torch.inference_mode()
def predict_batch(model, images: np.ndarray, device) -> tuple[np.ndarray, torch.Tensor]:
    """Images -> (scaled disparity (B, h, w) float32 numpy, seg logits (B, C, h, w) tensor).

    Light enhancement on, as at inference; scaled disparity = `disp_to_depth(...)[0]`."""
    out = model(to_tensor(images, device), use_light=True)
    scaled_disp, _ = disp_to_depth(out[("disp", 0)], model.min_depth, model.max_depth)
    return scaled_disp[:, 0].float().cpu().numpy(), out[("seg", 0)]


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


def has_valid_depth(gt: np.ndarray, max_depth: float, min_depth: float = MIN_DEPTH) -> bool:
    """True when gt has a pixel in (min_depth, max_depth]."""
    return bool(np.any((gt > min_depth) & (gt <= max_depth)))


def score_depth(gt: np.ndarray, depth: np.ndarray, max_depth: float, per_image: list, baseline: list) -> bool:
    """Append the metrics of `depth` and of the constant-depth baseline; False when gt has no valid pixel."""
    if not has_valid_depth(gt, max_depth):
        return False
    per_image.append(compute_depth_metrics(gt, depth, max_depth))
    baseline.append(compute_depth_metrics(gt, np.ones_like(depth), max_depth))
    return True


def evaluate_depth_teacher(weights, frames_path, gt_path, *, dataset: str, split: str, max_depth: float,
                           batch_size: int, device, out, min_depth: float = 0.1, teacher_max_depth: float = 100.0) -> dict:
    """The Monodepth2 day teacher on a test split, same protocol as the student (Tables 1-2 "Monodepth2" rows)."""
    from pipeline.shards import open_shard
    from pipeline.teachers import monodepth2

    frames, gt = open_shard(frames_path), open_shard(gt_path)
    check_aligned(frames, {"depth": (gt_path, gt)})
    rows = target_rows(frames)
    model = monodepth2.load_weights(weights, device=device)
    depth_hw = tuple(gt["depth"].shape[1:])
    per_image, baseline, skipped = [], [], 0
    for batch in iter_batches(rows, batch_size):
        pred = monodepth2.predict_depth(model, frames["image"].oindex[batch], batch_size=len(batch), device=device,
                                        min_depth=min_depth, max_depth=teacher_max_depth)
        gt_depth = np.asarray(gt["depth"].oindex[batch], dtype=np.float32)
        for i in range(len(batch)):
            skipped += not score_depth(gt_depth[i], depth_from_disp(1.0 / pred[i], *depth_hw), max_depth,
                                       per_image, baseline)
    if not per_image:
        raise ValueError(f"{gt_path}: no target row has a gt depth in ({MIN_DEPTH}, {max_depth}] m")
    record = {"schema_version": SCHEMA_VERSION, "kind": "depth_teacher", "dataset": dataset, "split": split,
              "n_frames": int(len(rows)), "n_frames_no_gt": int(skipped), "max_depth": float(max_depth),
              "depth": aggregate(per_image), "baseline_constant": aggregate(baseline), "weights": str(weights),
              "frames": str(frames_path), "gt": str(gt_path), "protocol": PROTOCOL}
    write_json_atomic(out, record)
    return record


# ----------------------------------------------------------------------------- shards
def target_rows(frames) -> np.ndarray:
    """Row indices of the `target` rows of a frames group."""
    return np.flatnonzero(np.asarray(frames["target"][:], dtype=bool))


def check_aligned(frames, named_groups: dict) -> None:
    """Every group (name -> (path, group)) has as many rows as the frames shard."""
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


# ----------------------------------------------------------------------------- evaluation
def iter_batches(rows: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    for start in range(0, len(rows), batch_size):
        yield rows[start:start + batch_size]


def seg_summary(metrics: SegMetrics) -> dict:
    """SegMetrics.compute() with per-class values keyed by Cityscapes name; NaN -> None (valid JSON)."""
    res = metrics.compute()
    return {
        "miou": _finite(res["miou"]),
        "pixel_acc": _finite(res["pixel_acc"]),
        "iou": {name: _finite(v) for name, v in zip(cityscapes.NAMES, res["iou"])},
        "acc": {name: _finite(v) for name, v in zip(cityscapes.NAMES, res["acc"])},
        "n_pixels": int(metrics.confusion.sum()),
    }


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def plan_split(frames, gt, teacher, gt_path="gt", teacher_path="seg_teacher") -> dict:
    """Check the shards and decide: target `rows`, seg `reference` ("gt" | "teacher"), `depth_hw`, `seg_hw`."""
    check_aligned(frames, {"depth": (gt_path, gt), "topk_class": (teacher_path, teacher)})
    if teacher is not None:
        check_teacher_labels(teacher, teacher_path)
    reference = seg_reference_kind(gt, teacher, gt_path, teacher_path)
    rows = target_rows(frames)
    if not len(rows):
        raise ValueError("the frames shard has no target rows to evaluate")
    seg_hw = gt["labels"].shape[1:] if reference == "gt" else teacher["topk_class"].shape[1:3]
    return {"rows": rows, "reference": reference, "depth_hw": tuple(gt["depth"].shape[1:]), "seg_hw": tuple(seg_hw)}


def iter_predictions(model, frames, gt, teacher, plan: dict, batch_size: int, device) -> Iterator[tuple]:
    """Per target row of `plan`: (row, depth at the gt size, seg classes at the reference size, gt depth,
    reference labels, teacher top-1 or None), predicted in batches."""
    for batch in iter_batches(plan["rows"], batch_size):
        disp, logits = predict_batch(model, frames["image"].oindex[batch], device)
        seg = seg_from_logits(logits, *plan["seg_hw"])
        gt_depth = np.asarray(gt["depth"].oindex[batch], dtype=np.float32)
        top1 = teacher["topk_class"].oindex[batch][..., 0] if teacher is not None else None
        ref = gt["labels"].oindex[batch] if plan["reference"] == "gt" else top1
        for i, row in enumerate(batch):
            yield (int(row), depth_from_disp(disp[i], *plan["depth_hw"]), seg[i], gt_depth[i], ref[i],
                   None if top1 is None else top1[i])


def evaluate_split(model, frames, gt, teacher, *, max_depth: float, batch_size: int, device, predictions,
                   gt_path="gt", teacher_path="seg_teacher") -> dict:
    """Predict every target row, stream the predictions to the h5 file `predictions`, return the metrics.

    `teacher` may be None when the gt shard has `labels`."""
    plan = plan_split(frames, gt, teacher, gt_path, teacher_path)
    rows, reference, depth_hw, seg_hw = plan["rows"], plan["reference"], plan["depth_hw"], plan["seg_hw"]
    student, teacher_seg = SegMetrics(cityscapes.NUM_CLASSES), SegMetrics(cityscapes.NUM_CLASSES)
    per_image, baseline, skipped, done = [], [], 0, 0
    frame_ids = [str(x) for x in frames["frame_id"][:]]
    with PredictionWriter(predictions, len(rows), depth_hw, seg_hw) as writer:
        for row, depth, seg, gt_depth, ref, top1 in iter_predictions(model, frames, gt, teacher, plan, batch_size,
                                                                     device):
            writer.add(row, frame_ids[row], depth, seg)
            skipped += not score_depth(gt_depth, depth, max_depth, per_image, baseline)
            student.update(seg, ref)
            if reference == "gt" and top1 is not None:
                teacher_seg.update(resize_labels_nearest(top1, *seg_hw), ref)
            done += 1
            if done % batch_size == 0 or done == len(rows):
                log.info("evaluated %d / %d target rows", done, len(rows))
        if not per_image:
            raise ValueError(f"{gt_path}: no target row has a gt depth in ({MIN_DEPTH}, {max_depth}] m")
    if skipped:
        log.warning("%d target rows have no valid gt depth and were left out of the depth metrics", skipped)
    return {
        "n_frames": int(len(rows)),
        "n_frames_no_gt": int(skipped),
        "max_depth": float(max_depth),
        "min_depth": MIN_DEPTH,
        "depth": aggregate(per_image),
        "baseline_constant": aggregate(baseline),
        "seg_reference": reference,
        "seg": {**seg_summary(student), "resize": SEG_RESIZE},
        "teacher_seg": ({**seg_summary(teacher_seg), "resize": TEACHER_RESIZE}
                        if reference == "gt" and teacher is not None else None),
        "class_names": list(cityscapes.NAMES),
        "depth_size": list(depth_hw),
        "seg_size": list(seg_hw),
    }


def score_untrained(model, frames, gt, teacher, plan: dict, *, max_depth: float, batch_size: int, device) -> dict:
    """Depth metrics and seg mIoU of `model` (the untrained network) on the rows of `plan`, same protocol."""
    per_image, baseline, seg = [], [], SegMetrics(cityscapes.NUM_CLASSES)
    for _, depth, classes, gt_depth, ref, _ in iter_predictions(model, frames, gt, teacher, plan, batch_size, device):
        score_depth(gt_depth, depth, max_depth, per_image, baseline)
        seg.update(classes, ref)
    return {"depth": aggregate(per_image), "seg_miou": _finite(seg.compute()["miou"]),
            "init": "seed_everything(settings.seed) + build_model(settings.model), no ImageNet file"}


def run_evaluate(checkpoint, frames_path, gt_path, teacher_path, *, dataset: str, split: str, max_depth: float,
                 batch_size: int, device, out, predictions) -> dict:
    """The `evaluate` verb: load everything, evaluate, write METRICS.json and PRED.h5 atomically."""
    from pipeline.shards import open_shard

    frames, gt = open_shard(frames_path), open_shard(gt_path)
    teacher = open_shard(teacher_path) if teacher_path is not None else None
    plan_split(frames, gt, teacher, gt_path, teacher_path)  # fail on bad shards before loading the model
    model, settings = load_student(checkpoint, device)
    metrics = evaluate_split(model, frames, gt, teacher, max_depth=max_depth, batch_size=batch_size, device=device,
                             predictions=predictions, gt_path=gt_path, teacher_path=teacher_path)
    untrained = score_untrained(untrained_student(settings, device), frames, gt, teacher,
                                plan_split(frames, gt, teacher, gt_path, teacher_path), max_depth=max_depth,
                                batch_size=batch_size, device=device)
    root = dict(frames.attrs.get("config", {})).get("root")
    record = {
        "schema_version": SCHEMA_VERSION,
        "dataset": dataset,
        "split": split,
        **metrics,
        "baseline_untrained": untrained,
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": checkpoint_sha256(checkpoint),
        "variant": settings.get("variant"),
        "model": {"min_depth": model.min_depth, "max_depth": model.max_depth,
                  "input_size": list(frames["image"].shape[1:3])},
        "frames": str(frames_path),
        "gt": str(gt_path),
        "seg_teacher": None if teacher_path is None else str(teacher_path),
        "predictions": str(predictions),
        "dataset_root": root,
        "synthetic_demo": is_demo_root(root),
        "protocol": PROTOCOL,
    }
    write_json_atomic(out, record)
    return record


# ----------------------------------------------------------------------------- outputs
class PredictionWriter:
    """Stream predictions into an HDF5 file, renamed into place on a clean exit.

    Datasets: `depth` float16 (n, He, We) (depth at the gt size, before median scaling), `seg`
    uint8 (n, Hs, Ws) (classes at the reference size), `frame_id` str (n,), `row` int64 (n,)
    (row in the frames shard)."""

    def __init__(self, path, n: int, depth_hw, seg_hw, attrs: dict | None = None):
        import h5py

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.parent / f".{self.path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.file = h5py.File(self.tmp, "w")
        self.n, self.i = int(n), 0
        self.file.create_dataset("depth", (n, *depth_hw), dtype="float16", chunks=(1, *depth_hw), compression="gzip")
        self.file.create_dataset("seg", (n, *seg_hw), dtype="uint8", chunks=(1, *seg_hw), compression="gzip")
        self.file.create_dataset("frame_id", (n,), dtype=h5py.string_dtype())
        self.file.create_dataset("row", (n,), dtype="int64")
        for key, value in (attrs or {}).items():
            self.file.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value

    def add(self, row: int, frame_id: str, depth: np.ndarray, seg: np.ndarray) -> None:
        if self.i >= self.n:
            raise ValueError(f"{self.path}: more than the {self.n} announced predictions")
        self.file["depth"][self.i] = depth.astype(np.float16)
        self.file["seg"][self.i] = seg
        self.file["frame_id"][self.i] = frame_id
        self.file["row"][self.i] = row
        self.i += 1

    def __enter__(self) -> "PredictionWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.file.close()
        if exc_type is None and self.i != self.n:
            self.tmp.unlink(missing_ok=True)
            raise ValueError(f"{self.path}: {self.i} predictions written, {self.n} announced")
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def read_predictions(path) -> dict:
    """PRED.h5 -> dict of numpy arrays (`depth` float16, `seg`, `frame_id` str, `row`)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"predictions file not found: {path}")
    with h5py.File(path, "r") as f:
        missing = [k for k in ("depth", "seg", "frame_id", "row") if k not in f]
        if missing:
            raise KeyError(f"{path}: predictions file lacks datasets {missing}")
        return {"depth": f["depth"][:], "seg": f["seg"][:], "row": f["row"][:],
                "frame_id": np.array([s.decode() if isinstance(s, bytes) else str(s) for s in f["frame_id"][:]])}


def write_json_atomic(path, data: dict) -> Path:
    """json.dump to a temporary file beside `path`, then os.replace (strict JSON: no NaN)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def checkpoint_sha256(path) -> str:
    return file_sha256(path)


def is_demo_root(root) -> bool:
    """True when a dataset root lies in a `demo` folder (the embedded synthetic demo, `data/demo/...`)."""
    return root is not None and "demo" in Path(str(root)).parts

