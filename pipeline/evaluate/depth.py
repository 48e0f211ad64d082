"""Depth metrics with Monodepth2's protocol (`evaluate_depth.py`, `compute_errors`), and the per-image
metrics of the md4all and ADDS-DepthNet protocols (`md4all_depth_metrics`, `adds_depth_metrics`; which
one a dataset uses is `pipeline.evaluate.protocol`'s choice, config key `eval.protocol`).

Monodepth2 (`compute_depth_metrics`):

Per image: keep ground-truth pixels with min_depth < gt <= max_depth (gt 0 = no measurement),
scale the prediction by median(gt) / median(pred) over those pixels (numpy's median: the mean
of the two middle values for an even count), clamp it to [1e-3, max_depth], then compute
Abs Rel, Sq Rel, RMSE, RMSE log and the delta < 1.25, 1.25^2, 1.25^3 accuracies. Over a split,
the metrics are averaged over images (`aggregate`).
"""
from __future__ import annotations

from typing import Iterable, Mapping

import cv2
import numpy as np

MIN_DEPTH = 1e-3  # Monodepth2's MIN_DEPTH, also the lower clamp of the prediction
MD4ALL_MIN_DEPTH = 0.1  # md4all config/config.py line 206: EVALUATION.DEPTH.MIN_DEPTH (gt bound and clamp)
ADDS_CLAMP_MAX = 80.0  # ADDS-DepthNet evaluate_depth.py line 63: MAX_DEPTH, the prediction's upper clamp
METRIC_KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")


def compute_errors(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Monodepth2's `compute_errors` on 1-D arrays of valid, positive depths."""
    thresh = np.maximum(gt / pred, pred / gt)
    return {
        "abs_rel": float(np.mean(np.abs(gt - pred) / gt)),
        "sq_rel": float(np.mean((gt - pred) ** 2 / gt)),
        "rmse": float(np.sqrt(np.mean((gt - pred) ** 2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(gt) - np.log(pred)) ** 2))),
        "a1": float(np.mean(thresh < 1.25)),
        "a2": float(np.mean(thresh < 1.25 ** 2)),
        "a3": float(np.mean(thresh < 1.25 ** 3)),
    }


def compute_depth_metrics(gt: np.ndarray, pred: np.ndarray, max_depth: float, min_depth: float = MIN_DEPTH,
                          median_scaling: bool = True) -> dict[str, float]:
    """Metrics of one (H, W) prediction against (H, W) ground truth (0 = invalid).

    Returns the keys of `compute_errors` plus `ratio` (the median-scaling factor; 1.0 without
    scaling). Raises ValueError when the shapes differ, when no pixel is valid, or when the
    prediction is not finite / not positive where median scaling needs it."""
    gt = np.asarray(gt, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if gt.shape != pred.shape or gt.ndim != 2:
        raise ValueError(f"depth metrics need two (H, W) arrays of one shape, got gt {gt.shape} and "
                         f"pred {pred.shape} (resize the prediction with resize_prediction first)")
    mask = (gt > min_depth) & (gt <= max_depth)
    if not mask.any():
        raise ValueError(f"no valid ground-truth pixel in ({min_depth}, {max_depth}] m")
    gt, pred = gt[mask], pred[mask]
    if not np.all(np.isfinite(pred)):
        raise ValueError(f"prediction has {int(np.sum(~np.isfinite(pred)))} non-finite values at valid pixels")
    ratio = 1.0
    if median_scaling:
        pred_median = float(np.median(pred))
        if pred_median <= 0:
            raise ValueError(f"median of the prediction over valid pixels is {pred_median}; cannot median-scale")
        ratio = float(np.median(gt)) / pred_median
        pred = pred * ratio
    pred = np.clip(pred, MIN_DEPTH, max_depth)
    return {**compute_errors(gt, pred), "ratio": ratio}


def md4all_depth_metrics(gt: np.ndarray, pred: np.ndarray, max_depth: float,
                         min_depth: float = MD4ALL_MIN_DEPTH) -> dict[str, float]:
    """md4all's per-image metrics (md4all/md4all `utils/depth.py` `compute_depth_metrics`, lines 219-242,
    in the `_gt` mode of `evaluation/evaluator.py` lines 86-91 that median-scales): keep pixels with
    min_depth < gt < max_depth (both strict; `EVALUATION.DEPTH.MIN_DEPTH` 0.1, `MAX_DEPTH` 80,
    `config/config.py` lines 206-207), scale the prediction by torch.median(gt) / torch.median(pred) over
    them (torch's median: the LOWER of the two middle values for an even count, where numpy averages
    them), clamp it to [min_depth, max_depth]; then the same seven metrics. Returns `ratio` too."""
    import torch

    gt, pred = _valid_pairs(gt, pred, (gt > min_depth) & (gt < max_depth), f"({min_depth}, {max_depth}) m")
    gt_median = float(torch.median(torch.from_numpy(gt)))
    pred_median = float(torch.median(torch.from_numpy(pred)))
    if pred_median <= 0:
        raise ValueError(f"median of the prediction over valid pixels is {pred_median}; cannot median-scale")
    ratio = gt_median / pred_median
    pred = np.clip(pred * ratio, min_depth, max_depth)
    return {**compute_errors(gt, pred), "ratio": ratio}


def adds_depth_metrics(gt: np.ndarray, pred: np.ndarray, max_depth: float,
                       clamp_max: float = ADDS_CLAMP_MAX) -> dict[str, float]:
    """ADDS-DepthNet's per-image metrics on RobotCar (LINA-lln/ADDS-DepthNet `evaluate_depth.py`): every
    gt > 0 pixel is kept (line 209) and the median ratio is taken over ALL of them (lines 217-218), before
    the range cap; the scaled prediction is clamped to [1e-3, 80] (lines 62-63, 222-223: the constant
    MAX_DEPTH 80, not the cap); only then are the pixels with gt <= max_depth kept (lines 225-228: 60 m in
    the file, 40 m for the paper's Table 1, which is ADDS-DepthNet's 40 m table). Returns `ratio` too."""
    gt, pred = _valid_pairs(gt, pred, gt > 0, "(0, inf) m")
    pred_median = float(np.median(pred))
    if pred_median <= 0:
        raise ValueError(f"median of the prediction over valid pixels is {pred_median}; cannot median-scale")
    ratio = float(np.median(gt)) / pred_median
    pred = np.clip(pred * ratio, MIN_DEPTH, clamp_max)
    keep = gt <= max_depth
    if not keep.any():
        raise ValueError(f"no valid ground-truth pixel in (0, {max_depth}] m")
    return {**compute_errors(gt[keep], pred[keep]), "ratio": ratio}


def _valid_pairs(gt, pred, mask_of, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(gt, pred) float64 at the pixels `mask_of` selects (a mask computed on `gt`); errors as compute_depth_metrics."""
    gt_a = np.asarray(gt, dtype=np.float64)
    pred_a = np.asarray(pred, dtype=np.float64)
    if gt_a.shape != pred_a.shape or gt_a.ndim != 2:
        raise ValueError(f"depth metrics need two (H, W) arrays of one shape, got gt {gt_a.shape} and "
                         f"pred {pred_a.shape} (resize the prediction first)")
    mask = np.asarray(mask_of)
    if not mask.any():
        raise ValueError(f"no valid ground-truth pixel in {what}")
    pred_a = pred_a[mask]
    if not np.all(np.isfinite(pred_a)):
        raise ValueError(f"prediction has {int(np.sum(~np.isfinite(pred_a)))} non-finite values at valid pixels")
    return gt_a[mask], pred_a


def resize_prediction(pred: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear cv2 resize of an (h, w) map to (height, width), as Monodepth2 resizes its disparity
    to the ground-truth size before inverting it."""
    pred = np.asarray(pred, dtype=np.float32)
    if pred.ndim != 2:
        raise ValueError(f"resize_prediction expects an (H, W) map, got shape {pred.shape}")
    return cv2.resize(pred, (int(width), int(height)), interpolation=cv2.INTER_LINEAR)


def aggregate(per_image: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Mean of every metric over images (Monodepth2), plus `ratio_median`, `ratio_std` and `n_images`."""
    rows = list(per_image)
    if not rows:
        raise ValueError("aggregate needs at least one per-image metrics dict")
    out = {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}
    if "ratio" in rows[0]:
        ratios = np.array([r["ratio"] for r in rows])
        out["ratio_median"] = float(np.median(ratios))
        out["ratio_std"] = float(np.std(ratios / np.median(ratios)))
    out["n_images"] = len(rows)
    return out


def constant_depth_warning(name: str, depth: Mapping[str, float], constant: Mapping[str, float],
                           where: str) -> str | None:
    """A warning (text) when a network's Abs Rel is not below the median-scaled constant depth's on the same
    frames (`depth`, `constant`: metrics dicts), else None. Self-supervised depth that collapses (the
    disparity saturates at one end of the sigmoid) gives exactly the constant's figures; a network above
    them has learnt nothing a table should be read for."""
    ours, base = float(depth["abs_rel"]), float(constant["abs_rel"])
    if ours < base:
        return None
    same = " (the constant's own figure: a collapsed network)" if abs(ours - base) < 5e-4 else ""
    return (f"{where}: {name} Abs Rel {ours:.3f} is no better than a constant depth "
            f"(median-scaled, {base:.3f}){same}")
