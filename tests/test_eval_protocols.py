"""The per-dataset depth evaluation protocols (config key `eval.protocol`) against values worked by hand, on
crafted predictions where the protocols give different numbers; the config default, the error for an
unknown protocol, and the protocol and reference each table row states."""
import json

import numpy as np
import pytest

from pipeline import cli
from pipeline.config import validated
from pipeline.evaluate import tables
from pipeline.evaluate.protocol import PROTOCOLS, DepthScores, depth_from_disp, depth_metrics, get_protocol

# Four pixels with gt inside every protocol's range, one beyond the 40 m cap (50 m) and one without gt (0).
GT = np.array([[2.0, 4.0, 6.0], [8.0, 50.0, 0.0]])
PRED = np.array([[1.0, 4.0, 2.0], [5.0, 100.0, 9.0]])
CAP = 40.0


def _abs_rel(gt, pred):
    return float(np.mean(np.abs(np.array(gt) - np.array(pred)) / np.array(gt)))


def test_monodepth2_protocol_numpy_median_over_the_capped_gt():
    m = depth_metrics(GT, PRED, CAP, "monodepth2")
    # gt (1e-3, 40]: 2, 4, 6, 8; pred 1, 4, 2, 5; numpy medians 5 and 3 -> ratio 5/3
    assert m["ratio"] == pytest.approx(5 / 3)
    assert m["abs_rel"] == pytest.approx(_abs_rel([2, 4, 6, 8], [5 / 3, 20 / 3, 10 / 3, 25 / 3]))
    assert m["a1"] == pytest.approx(0.5)  # ratios 1.2, 1.67, 1.8, 1.04


def test_md4all_protocol_torch_lower_median():
    m = depth_metrics(GT, PRED, CAP, "md4all")
    # gt (0.1, 40): the same four pixels; torch.median takes the LOWER middle value: 4 and 2 -> ratio 2
    assert m["ratio"] == pytest.approx(2.0)
    assert m["abs_rel"] == pytest.approx(_abs_rel([2, 4, 6, 8], [2, 8, 4, 10]))  # (0 + 1 + 1/3 + 1/4) / 4
    assert m["rmse"] == pytest.approx(np.sqrt((0 + 16 + 4 + 4) / 4))


def test_adds_protocol_median_over_all_gt_before_the_cap():
    m = depth_metrics(GT, PRED, CAP, "adds")
    # median over every gt > 0 pixel, the 50 m one included: gt 2, 4, 6, 8, 50 -> 6; pred 1, 4, 2, 5, 100 -> 4
    assert m["ratio"] == pytest.approx(1.5)
    # scaled 1.5, 6, 3, 7.5 (and 150 -> 80, dropped by the 40 m range)
    assert m["abs_rel"] == pytest.approx(_abs_rel([2, 4, 6, 8], [1.5, 6, 3, 7.5]))  # (0.25 + 0.5 + 0.5 + 1/16) / 4


def test_the_three_protocols_differ_on_the_same_prediction():
    values = {name: depth_metrics(GT, PRED, CAP, name)["abs_rel"] for name in PROTOCOLS}
    assert len({round(v, 9) for v in values.values()}) == 3, values


def test_bounds_and_clamps_of_each_protocol():
    gt, pred = np.array([[10.0, 30.0, 40.0]]), np.array([[1.0, 2.0, 30.0]])
    # Monodepth2: (1e-3, 40] keeps the 40 m pixel; ratio 30/2 = 15; 450 clamped to the cap 40
    assert depth_metrics(gt, pred, CAP, "monodepth2")["abs_rel"] == pytest.approx((0.5 + 0 + 0) / 3)
    # ADDS-DepthNet: same ratio, but the clamp is its constant 80 m, not the cap
    assert depth_metrics(gt, pred, CAP, "adds")["abs_rel"] == pytest.approx((0.5 + 0 + 1.0) / 3)
    # md4all: gt < 40 strictly drops the 40 m pixel; lower medians 10 and 1 -> ratio 10 -> 10, 20
    m = depth_metrics(gt, pred, CAP, "md4all")
    assert m["ratio"] == pytest.approx(10.0) and m["abs_rel"] == pytest.approx((0 + 1 / 3) / 2)
    # md4all's lower bound is 0.1 m (exclusive) and it clamps the prediction there
    m = depth_metrics(np.array([[0.1, 2.0, 4.0]]), np.array([[9.0, 0.01, 4.0]]), CAP, "md4all")
    assert m["ratio"] == pytest.approx(2 / 0.01)  # only 2 and 4 are valid: lower medians 2 and 0.01
    assert m["abs_rel"] == pytest.approx((0 + (40 - 4) / 4) / 2)  # 2 -> 2, 800 -> clamped to 40


def test_prediction_resize_disparity_or_depth():
    disp = np.array([[0.5, 0.25]], np.float32)  # depth 2 and 4
    # Monodepth2 / ADDS-DepthNet: the disparity is resized (cv2 bilinear, half-pixel centres), then inverted
    for name in ("monodepth2", "adds"):
        assert depth_from_disp(disp, 2, 4, name)[0, 1] == pytest.approx(1 / 0.4375)
    # md4all: the depth is resized with align_corners=True: x = 1 of 4 samples 1/3 of the way from 2 to 4
    depth = depth_from_disp(disp, 2, 4, "md4all")
    assert depth.shape == (2, 4)
    assert depth[0].tolist() == pytest.approx([2.0, 2 + 2 / 3, 2 + 4 / 3, 4.0])


def test_images_without_a_valid_pixel_depend_on_the_protocol():
    only_cap = np.array([[0.0, 40.0]])
    for name, scored in (("monodepth2", True), ("adds", True), ("md4all", False)):  # md4all: gt < cap
        s = DepthScores(CAP, name)
        assert s.add(only_cap, np.ones((1, 2))) is scored, name
        assert s.skipped == (0 if scored else 1)
    s = DepthScores(CAP, "md4all")
    s.add(GT, PRED)
    summary = s.summary("gt.zarr")
    assert summary["protocol"] == "md4all" and summary["min_depth"] == 0.1
    assert summary["depth"]["abs_rel"] == pytest.approx(depth_metrics(GT, PRED, CAP, "md4all")["abs_rel"])
    assert summary["baseline_constant"]["abs_rel"] == pytest.approx(
        depth_metrics(GT, np.ones_like(PRED), CAP, "md4all")["abs_rel"])


def test_config_default_is_the_baselines_protocol_and_unknown_names_the_key(tmp_path, capsys):
    assert validated({})["eval"]["protocol"] == {"nuscenes": "md4all", "robotcar": "adds"}
    with pytest.raises(ValueError, match=r"eval\.protocol\.nuscenes"):
        validated({"eval": {"protocol": {"nuscenes": "kitti"}}})
    with pytest.raises(ValueError, match=r"eval\.protocol.*'kitti'.*adds"):
        get_protocol("kitti")
    argv = ["evaluate", "--checkpoint", str(tmp_path / "last.pt"), "--frames", str(tmp_path / "f.zarr"),
            "--gt", str(tmp_path / "g.zarr"), "--dataset", "nuscenes", "--split", "test_day", "--max-depth", "80",
            "--protocol", "kitti", "--batch-size", "1", "--device", "cpu", "--out", str(tmp_path / "m.json"),
            "--predictions", str(tmp_path / "p.h5")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "eval.protocol" in err and "kitti" in err  # checked before any file is opened
    assert not list(tmp_path.iterdir())


def _record(ds, split, protocol, reference, abs_rel):
    depth = {k: abs_rel for k in tables.DEPTH_KEYS}
    return {"dataset": ds, "split": split, "variant": "full", "path": f"{ds}_{split}.json", "n_frames": 2,
            "seg_reference": reference, "protocol": protocol, "depth": depth, "baseline_constant": depth,
            "seg": {"miou": 0.5, "iou": {}}}


def test_table_rows_state_their_protocol_and_reference():
    records = [_record("robotcar", "test_day", "adds", "teacher", 0.3),
               _record("nuscenes", "test_day", "md4all", "gt", 0.2),
               _record("nuscenes", "test_night", "md4all", "gt", 0.4)]
    t1, t2, t3a, t3b, _, _, t5, t5b = tables.build_tables(records, None)
    assert t1.columns[-1] == "Protocol" and t2.columns[-1] == "Protocol"
    measured = [row for row, kind in zip(t1.rows, t1.kinds) if kind == "measured"]
    assert measured and all(row[-1] == "adds" for row in measured)
    assert all(row[-1] == tables.TABLE1_PAPER_PROTOCOL for row, k in zip(t1.rows, t1.kinds) if k == "paper")
    ours2 = [row for row, kind in zip(t2.rows, t2.kinds) if kind == "measured" and row[0].startswith("Ours")]
    assert ours2[0][-1] == "md4all" and ours2[0][2] == 0.2
    assert {row[2] for row, k in zip(t3a.rows, t3a.kinds) if k == "measured"} == {"GT labels"}
    assert {row[2] for row, k in zip(t3b.rows, t3b.kinds) if k == "measured"} == {"teacher top-1"}
    assert [row[-1] for row, k in zip(t5.rows, t5.kinds) if k == "measured"] == ["depth md4all; seg GT labels"]
    # Table 5b: RobotCar's ablation rows, this run's only (the paper ablates on nuScenes), as Table 3b's reference
    assert set(t5b.kinds) == {"measured"} and t5b.key == "table5b"
    assert [row[-1] for row in t5b.rows] == ["depth adds; seg teacher top-1"] and t5b.rows[0][6] == 0.3
    # a record written before eval.protocol existed holds Monodepth2's protocol as a description
    old = {**records[0], "protocol": "Monodepth2: scaled disparity resized ..."}
    assert tables.protocol_of(old) == "monodepth2"


def test_metrics_record_round_trips_the_protocol(tmp_path):
    """The evaluate record names the protocol and where it comes from (what eval-tables prints)."""
    p = get_protocol("adds").as_record()
    assert json.loads(json.dumps(p)) == p and "ADDS-DepthNet" in p["source"] and p["name"] == "adds"


def test_tables_warn_when_a_network_is_no_better_than_a_constant_depth():
    """A note under Tables 1 and 2 names each network (student, depth teacher) whose Abs Rel is not below
    the constant depth's on the same frames; equal figures are called a collapse; a better one gets none."""
    def rec(ds, split, ours, constant):
        r = _record(ds, split, "adds" if ds == "robotcar" else "md4all", "gt", ours)
        r["baseline_constant"] = {k: constant for k in tables.DEPTH_KEYS}
        return r

    records = [rec("robotcar", "test_day", 0.274, 0.583), rec("robotcar", "test_night", 0.300, 0.465),
               rec("nuscenes", "test_day", 0.700, 0.689), rec("nuscenes", "test_night", 0.558, 0.651)]
    teachers = [rec("robotcar", "test_day", 0.5833, 0.5833), rec("robotcar", "test_night", 0.528, 0.465),
                rec("nuscenes", "test_day", 0.617, 0.689)]
    t1, t2, *_ = tables.build_tables(records, None, teachers)
    w1 = [n for n in t1.notes if n.startswith("WARNING")]
    assert w1 == [  # Table 1 lists night first, as the paper
        f"WARNING robotcar test_night: {tables.TEACHER_ROW} Abs Rel 0.528 is no better than a constant depth "
        "(median-scaled, 0.465)",
        f"WARNING robotcar test_day: {tables.TEACHER_ROW} Abs Rel 0.583 is no better than a constant depth "
        "(median-scaled, 0.583) (the constant's own figure: a collapsed network)"]
    w2 = [n for n in t2.notes if n.startswith("WARNING")]
    assert w2 == ["WARNING nuscenes test_day: Ours Abs Rel 0.700 is no better than a constant depth "
                  "(median-scaled, 0.689)"]
    assert tables.constant_warnings(records[0], None, "Ours") == []


def test_constant_depth_warning_text_and_threshold():
    """None when the network is below the constant's Abs Rel; the figures when not; "collapsed" when they are
    equal to within 5e-4 (a saturated disparity gives the constant's own figure)."""
    from pipeline.evaluate.depth import constant_depth_warning

    def w(ours, base):
        return constant_depth_warning("the student", {"abs_rel": ours}, {"abs_rel": base}, "robotcar test_day")

    assert w(0.582, 0.583) is None
    assert w(0.600, 0.583) == ("robotcar test_day: the student Abs Rel 0.600 is no better than a constant depth "
                               "(median-scaled, 0.583)")
    assert w(0.583, 0.583).endswith("(median-scaled, 0.583) (the constant's own figure: a collapsed network)")
    assert w(0.5834, 0.5832).endswith("a collapsed network)") and not w(0.584, 0.583).endswith("network)")
