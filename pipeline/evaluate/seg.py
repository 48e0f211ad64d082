"""Semantic segmentation metrics from a confusion matrix (rows: reference, columns: prediction)."""
from __future__ import annotations

import numpy as np

IGNORE = 255


class SegMetrics:
    """Accumulate a confusion matrix over images; report mIoU, per-class IoU and accuracy.

    `update(pred, ref)` takes integer maps of one shape; reference pixels equal to `ignore`
    (255) are skipped. `compute()` returns:
      - `iou[c]` = TP / (TP + FP + FN); NaN when class c is absent from both prediction and reference,
      - `acc[c]` = TP / (TP + FN), the per-class accuracy (recall); NaN when c is absent from the reference,
      - `miou` = nanmean(iou): classes absent from both are excluded from the mean,
      - `pixel_acc` = correctly labelled pixels / counted pixels.
    """

    def __init__(self, num_classes: int, ignore: int = IGNORE):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore = ignore
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred, ref) -> None:
        """Add one (or a batch of) integer prediction and reference maps of one shape."""
        pred = np.asarray(pred)
        ref = np.asarray(ref)
        if pred.shape != ref.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
        if pred.dtype.kind not in "iu" or ref.dtype.kind not in "iu":
            raise ValueError(f"prediction and reference must be integer maps, got {pred.dtype} and {ref.dtype}")
        valid = ref != self.ignore
        p = pred[valid].astype(np.int64)
        r = ref[valid].astype(np.int64)
        n = self.num_classes
        for name, values in (("reference", r), ("prediction", p)):
            if values.size and (values.min() < 0 or values.max() >= n):
                raise ValueError(f"{name} holds class ids outside [0, {n}) (other than ignore {self.ignore}): "
                                 f"min {values.min()}, max {values.max()}")
        self.confusion += np.bincount(n * r + p, minlength=n * n).reshape(n, n)

    def compute(self) -> dict:
        """`miou`, `iou` (list), `acc` (list), `pixel_acc`; see the class docstring for NaN rules."""
        conf = self.confusion.astype(np.float64)
        tp = np.diag(conf)
        ref_count = conf.sum(axis=1)
        pred_count = conf.sum(axis=0)
        union = ref_count + pred_count - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            acc = np.where(ref_count > 0, tp / ref_count, np.nan)
        total = conf.sum()
        return {
            "miou": float(np.nanmean(iou)) if np.any(union > 0) else float("nan"),
            "iou": [float(v) for v in iou],
            "acc": [float(v) for v in acc],
            "pixel_acc": float(tp.sum() / total) if total > 0 else float("nan"),
        }
