"""The metrics records of `evaluate` (the student) and `evaluate-depth-teacher` (the Monodepth2 teacher).

Each opens the shards of one test split, plans it (`protocol.plan_split`), predicts the target rows
in batches (`inference.predict_batch`, or the teacher's `predict_depth`), scores them with the
protocol (`protocol.DepthScores`, `SegMetrics`) and writes METRICS.json (and, for the student, the
predictions file PRED.h5) atomically.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import numpy as np

from pipeline import cityscapes
from pipeline.atomic import write_json
from pipeline.evaluate.inference import load_student, predict_batch, untrained_student
from pipeline.model.inference import inference_depth_model, inference_model
from pipeline.evaluate.predictions import prediction_writer
from pipeline.evaluate.protocol import (SEG_REFERENCES, SEG_RESIZE, TEACHER_RESIZE, DepthScores, SplitPlan,
                                        check_aligned, depth_from_disp, finite, get_protocol, iter_batches,
                                        plan_split, resize_labels_nearest, seg_from_logits, seg_summary, target_rows)
from pipeline.evaluate.seg import SegMetrics
from pipeline.shards import file_sha256, open_shard

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1


def iter_predictions(model, frames, gt, teacher, plan: SplitPlan, batch_size: int, device,
                     protocol) -> Iterator[tuple]:
    """Per target row of `plan`: (row, depth at the gt size (resized as `protocol` does), seg classes at the
    reference size, gt depth, reference labels, teacher top-1 or None), predicted in batches."""
    for batch in iter_batches(plan.rows, batch_size):
        disp, logits = predict_batch(model, frames["image"].oindex[batch], device)
        seg = seg_from_logits(logits, *plan.seg_hw)
        gt_depth = np.asarray(gt["depth"].oindex[batch], dtype=np.float32)
        top1 = teacher["topk_class"].oindex[batch][..., 0] if teacher is not None else None
        ref = gt["labels"].oindex[batch] if plan.reference == "gt" else top1
        for i, row in enumerate(batch):
            yield (int(row), depth_from_disp(disp[i], *plan.depth_hw, protocol), seg[i], gt_depth[i], ref[i],
                   None if top1 is None else top1[i])


def evaluate_split(model, frames, gt, teacher, plan: SplitPlan, *, max_depth: float, batch_size: int, device,
                   predictions, protocol, prediction_attrs: dict | None = None, gt_path="gt") -> dict:
    """Predict every target row of `plan`, stream the predictions to the h5 file `predictions`, return the
    metrics (depth under `protocol`). `teacher` may be None when the gt shard has `labels`."""
    rows = plan.rows
    depth, student, teacher_seg = DepthScores(max_depth, protocol), SegMetrics(cityscapes.NUM_CLASSES), None
    if plan.reference == "gt" and teacher is not None:
        teacher_seg = SegMetrics(cityscapes.NUM_CLASSES)
    frame_ids = [str(x) for x in frames["frame_id"][:]]
    with prediction_writer(predictions, len(rows), plan.depth_hw, plan.seg_hw, prediction_attrs) as writer:
        for done, (row, pred, seg, gt_depth, ref, top1) in enumerate(
                iter_predictions(model, frames, gt, teacher, plan, batch_size, device, protocol), 1):
            writer.add(row, frame_ids[row], pred, seg)
            depth.add(gt_depth, pred)
            student.update(seg, ref)
            if teacher_seg is not None:
                teacher_seg.update(resize_labels_nearest(top1, *plan.seg_hw), ref)
            if done % batch_size == 0 or done == len(rows):
                log.info("evaluated %d / %d target rows", done, len(rows))
        scores = depth.summary(gt_path)
    if depth.skipped:
        log.warning("%d target rows have no valid gt depth and were left out of the depth metrics", depth.skipped)
    return {
        "n_frames": int(len(rows)),
        **scores,
        "seg_reference": plan.reference,
        "seg_reference_kind": SEG_REFERENCES[plan.reference],
        "seg": {**seg_summary(student), "resize": SEG_RESIZE},
        "teacher_seg": None if teacher_seg is None else {**seg_summary(teacher_seg), "resize": TEACHER_RESIZE},
        "class_names": list(cityscapes.NAMES),
        "depth_size": list(plan.depth_hw),
        "seg_size": list(plan.seg_hw),
    }


def score_untrained(model, frames, gt, teacher, plan: SplitPlan, *, max_depth: float, batch_size: int,
                    device, protocol) -> dict:
    """Depth metrics and seg mIoU of `model` (the untrained network) on the rows of `plan`, same protocol."""
    depth, seg = DepthScores(max_depth, protocol), SegMetrics(cityscapes.NUM_CLASSES)
    for _, pred, classes, gt_depth, ref, _ in iter_predictions(model, frames, gt, teacher, plan, batch_size, device,
                                                               protocol):
        depth.add(gt_depth, pred)
        seg.update(classes, ref)
    return {"depth": depth.summary("untrained network")["depth"], "seg_miou": finite(seg.compute()["miou"]),
            "init": "seed_everything(settings.seed) + build_model(settings.model), no ImageNet file"}


def run_evaluate(checkpoint, frames_path, gt_path, teacher_path, *, dataset: str, split: str, max_depth: float,
                 batch_size: int, device, out, predictions, protocol) -> dict:
    """The `evaluate` verb: load everything, evaluate, write METRICS.json (`out`) and PRED.h5 atomically."""
    protocol = get_protocol(protocol)  # an unknown name fails before any shard is opened
    frames, gt = open_shard(frames_path), open_shard(gt_path)
    teacher = open_shard(teacher_path) if teacher_path is not None else None
    plan = plan_split(frames, gt, teacher, gt_path, teacher_path)  # fails on bad shards before loading the model
    model, settings = load_student(checkpoint, device)
    checkpoint_sha256 = file_sha256(checkpoint)
    metrics = evaluate_split(inference_model(model), frames, gt, teacher, plan, max_depth=max_depth, batch_size=batch_size,
                             device=device, predictions=predictions, gt_path=gt_path, protocol=protocol,
                             prediction_attrs={"dataset": dataset, "split": split,
                                               "checkpoint_sha256": checkpoint_sha256, "protocol": protocol.name})
    untrained = score_untrained(inference_model(untrained_student(settings, device)), frames, gt, teacher, plan,
                                max_depth=max_depth, batch_size=batch_size, device=device, protocol=protocol)
    root = dict(frames.attrs.get("config", {})).get("root")
    record = {
        **_header("student", dataset, split, frames_path, gt_path, protocol),
        **metrics,
        "baseline_untrained": untrained,
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": checkpoint_sha256,
        "variant": settings.get("variant"),
        "model": {"min_depth": model.min_depth, "max_depth": model.max_depth,
                  "input_size": list(frames["image"].shape[1:3])},
        "seg_teacher": None if teacher_path is None else str(teacher_path),
        "predictions": str(predictions),
        "dataset_root": root,
        "synthetic_demo": is_demo_root(root),
    }
    write_json(out, record)
    return record


def evaluate_depth_teacher(weights, frames_path, gt_path, *, dataset: str, split: str, max_depth: float,
                           batch_size: int, device, out, min_depth: float, teacher_max_depth: float,
                           protocol) -> dict:
    """The Monodepth2 day teacher on a test split, same protocol as the student (Tables 1-2 "Monodepth2" rows).

    The teacher's depth (`predict_depth`, at the frames' size) is turned back into a disparity and goes
    through `depth_from_disp` like the student's."""
    from pipeline.teachers import monodepth2

    protocol = get_protocol(protocol)
    frames, gt = open_shard(frames_path), open_shard(gt_path)
    check_aligned(frames, {"depth": (gt_path, gt)})
    rows = target_rows(frames)
    model = inference_depth_model(monodepth2.load_weights(weights, device=device))
    depth_hw = tuple(gt["depth"].shape[1:])
    depth = DepthScores(max_depth, protocol)
    for batch in iter_batches(rows, batch_size):
        pred = monodepth2.predict_depth(model, frames["image"].oindex[batch], batch_size=len(batch), device=device,
                                        min_depth=min_depth, max_depth=teacher_max_depth)
        gt_depth = np.asarray(gt["depth"].oindex[batch], dtype=np.float32)
        for i in range(len(batch)):
            depth.add(gt_depth[i], depth_from_disp(1.0 / pred[i], *depth_hw, protocol))
    record = {**_header("depth_teacher", dataset, split, frames_path, gt_path, protocol), "n_frames": int(len(rows)),
              **depth.summary(gt_path), "weights": str(weights)}
    write_json(out, record)
    return record


def _header(kind: str, dataset: str, split: str, frames_path, gt_path, protocol) -> dict:
    """`protocol` is the depth protocol's name (config key eval.protocol), `protocol_detail` what it does and
    the reference code it follows."""
    return {"schema_version": SCHEMA_VERSION, "kind": kind, "dataset": dataset, "split": split,
            "frames": str(frames_path), "gt": str(gt_path), "protocol": protocol.name,
            "protocol_detail": protocol.as_record()}


def is_demo_root(root) -> bool:
    """True when a dataset root lies in a `demo` folder (the embedded synthetic demo, `data/demo/...`)."""
    return root is not None and "demo" in Path(str(root)).parts
