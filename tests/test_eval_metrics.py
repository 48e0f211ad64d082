"""Depth metrics (Monodepth2 protocol) and segmentation metrics against hand-computed values."""
import math

import numpy as np
import pytest

from pipeline.evaluate.depth import aggregate, compute_depth_metrics, resize_prediction
from pipeline.evaluate.seg import SegMetrics

GT = np.array([[2.0, 4.0], [6.0, 8.0]])
PRED = np.array([[1.0, 3.0], [2.0, 5.0]])


def test_depth_median_scaling_uses_numpy_median():
    m = compute_depth_metrics(GT, PRED, max_depth=80)
    # median(gt) = (4 + 6) / 2 = 5, median(pred) = (2 + 3) / 2 = 2.5 (torch.median would give 2)
    assert m["ratio"] == pytest.approx(2.0)
    # scaled pred [[2, 6], [4, 10]]: |gt - pred| = 0, 2, 2, 2
    assert m["abs_rel"] == pytest.approx((0 + 2 / 4 + 2 / 6 + 2 / 8) / 4)
    assert m["sq_rel"] == pytest.approx((0 + 4 / 4 + 4 / 6 + 4 / 8) / 4)
    assert m["rmse"] == pytest.approx(math.sqrt(3.0))
    assert m["rmse_log"] == pytest.approx(math.sqrt((2 * math.log(1.5) ** 2 + math.log(1.25) ** 2) / 4))
    # ratios max(gt/pred, pred/gt) = 1, 1.5, 1.5, 1.25 (strict <: 1.25 does not count for a1)
    assert (m["a1"], m["a2"], m["a3"]) == pytest.approx((0.25, 1.0, 1.0))


def test_depth_without_median_scaling():
    m = compute_depth_metrics(GT, PRED, max_depth=80, median_scaling=False)
    assert m["ratio"] == 1.0
    assert m["abs_rel"] == pytest.approx((1 / 2 + 1 / 4 + 4 / 6 + 3 / 8) / 4)
    assert m["sq_rel"] == pytest.approx((1 / 2 + 1 / 4 + 16 / 6 + 9 / 8) / 4)
    assert m["rmse"] == pytest.approx(math.sqrt(27 / 4))
    logs = [math.log(2), math.log(4 / 3), math.log(3), math.log(1.6)]
    assert m["rmse_log"] == pytest.approx(math.sqrt(sum(v * v for v in logs) / 4))
    # ratios 2, 4/3, 3, 1.6
    assert (m["a1"], m["a2"], m["a3"]) == pytest.approx((0.0, 0.25, 0.5))


def test_invalid_and_out_of_range_pixels_are_ignored():
    gt = np.vstack([GT, [[0.0, 100.0]]])            # 0 = no measurement, 100 > cap 80
    pred = np.vstack([PRED, [[1000.0, 1e-9]]])
    for scaling in (True, False):
        assert compute_depth_metrics(gt, pred, 80, median_scaling=scaling) == pytest.approx(
            compute_depth_metrics(GT, PRED, 80, median_scaling=scaling))


def test_cap_includes_max_depth_and_clamps_prediction():
    # gt == cap is valid: (min, cap]
    m = compute_depth_metrics(np.array([[80.0, 10.0]]), np.array([[40.0, 10.0]]), 80, median_scaling=False)
    assert m["abs_rel"] == pytest.approx(0.25)
    # prediction clamped to the cap (1000 -> 80) and to 1e-3 from below
    m = compute_depth_metrics(np.array([[10.0, 20.0]]), np.array([[10.0, 1000.0]]), 80, median_scaling=False)
    assert m["abs_rel"] == pytest.approx((0 + 60 / 20) / 2)
    m = compute_depth_metrics(np.array([[1.0]]), np.array([[-5.0]]), 80, median_scaling=False)
    assert m["abs_rel"] == pytest.approx(1 - 1e-3)
    # min_depth is exclusive
    m = compute_depth_metrics(np.array([[0.5, 2.0]]), np.array([[4.0, 2.0]]), 80, min_depth=0.5, median_scaling=False)
    assert m["abs_rel"] == pytest.approx(0.0)


def test_depth_errors():
    with pytest.raises(ValueError, match="shape"):
        compute_depth_metrics(GT, PRED[:1], 80)
    with pytest.raises(ValueError, match="no valid"):
        compute_depth_metrics(np.zeros((2, 2)), PRED, 80)
    with pytest.raises(ValueError, match="median"):
        compute_depth_metrics(GT, -PRED, 80)


def test_resize_prediction_is_cv2_bilinear():
    out = resize_prediction(np.array([[0.0, 1.0]]), 1, 4)
    np.testing.assert_allclose(out, [[0.0, 0.25, 0.75, 1.0]], atol=1e-6)
    assert resize_prediction(np.ones((3, 5)), 6, 10).shape == (6, 10)


def test_aggregate_means_over_images():
    a = compute_depth_metrics(GT, PRED, 80)
    b = compute_depth_metrics(GT, GT, 80)
    agg = aggregate([a, b])
    assert agg["abs_rel"] == pytest.approx(a["abs_rel"] / 2)
    assert agg["a1"] == pytest.approx((0.25 + 1.0) / 2)
    assert agg["ratio_median"] == pytest.approx(1.5)
    assert agg["n_images"] == 2
    with pytest.raises(ValueError):
        aggregate([])


REF = np.array([[0, 0, 1, 1], [0, 255, 1, 1]])
SEG = np.array([[0, 1, 1, 1], [0, 0, 0, 1]])


def test_seg_metrics_hand_computed():
    m = SegMetrics(2)
    m.update(SEG, REF)
    # confusion (rows ref, cols pred): [[2, 1], [1, 3]]; the ignored pixel (pred 0) is not counted
    np.testing.assert_array_equal(m.confusion, [[2, 1], [1, 3]])
    out = m.compute()
    assert out["iou"] == pytest.approx([2 / 4, 3 / 5])
    assert out["miou"] == pytest.approx(0.55)
    assert out["acc"] == pytest.approx([2 / 3, 3 / 4])
    assert out["pixel_acc"] == pytest.approx(5 / 7)


def test_seg_metrics_accumulates_and_absent_classes_are_nan():
    m = SegMetrics(4)
    m.update(SEG, REF)
    m.update(np.array([[2]]), np.array([[0]]))  # class 2 only predicted: IoU 0, counted; class 3 absent: NaN
    out = m.compute()
    assert math.isnan(out["iou"][3]) and math.isnan(out["acc"][3]) and math.isnan(out["acc"][2])
    assert out["iou"][2] == 0.0
    assert out["iou"][:2] == pytest.approx([2 / 5, 3 / 5])
    assert out["miou"] == pytest.approx((2 / 5 + 3 / 5 + 0) / 3)


def test_seg_metrics_errors():
    m = SegMetrics(2)
    with pytest.raises(ValueError, match="shape"):
        m.update(SEG[:1], REF)
    with pytest.raises(ValueError, match="outside"):
        m.update(np.array([[5]]), np.array([[0]]))
    with pytest.raises(ValueError, match="integer"):
        m.update(SEG.astype(float), REF)
    assert math.isnan(SegMetrics(2).compute()["miou"])
