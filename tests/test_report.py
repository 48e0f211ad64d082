"""The report's own pieces, without Snakemake: training curves read with TensorBoard's reader, the
preview panels of `preview-panels`, and the HTML rendering of the paper's tables."""
from __future__ import annotations

from html.parser import HTMLParser

import cv2
import numpy as np
import pytest

from pipeline import cli
from pipeline.curves import ordered_tags, plot_curves, read_epoch_scalars
from pipeline.epoch_log import epoch_logger
from pipeline.evaluate import tables
from pipeline.shards import write_group


def test_epoch_scalars_round_trip_and_a_resumed_run_overwrites_its_epoch(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    log_dir = tmp_path / "tb"
    with epoch_logger(log_dir) as on_epoch:
        on_epoch(1, {"total": 3.0, "sf": 2.0, "lr": 1e-3})
        on_epoch(2, {"total": 2.5, "sf": 1.5, "lr": 1e-3})
    writer = SummaryWriter(str(log_dir))  # per-step values: not curves per epoch
    writer.add_scalar("loss/total", 9.0, 7)
    writer.close()
    with epoch_logger(log_dir) as on_epoch:  # a resumed run writes epoch 2 again, then 3
        on_epoch(2, {"total": 2.0, "sf": 1.0, "lr": 1e-4})
        on_epoch(3, {"total": 1.0, "sf": 0.5, "lr": 1e-4})
    curves = read_epoch_scalars(log_dir)
    assert sorted(curves) == ["lr", "sf", "total"]
    assert curves["total"] == [(1, 3.0), (2, 2.0), (3, 1.0)]
    assert curves["sf"] == [(1, 2.0), (2, 1.0), (3, 0.5)]
    assert curves["lr"] == [(1, pytest.approx(1e-3)), (2, pytest.approx(1e-4)), (3, pytest.approx(1e-4))]


def test_reading_curves_names_the_folder_when_there_are_none(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        read_epoch_scalars(tmp_path / "missing")
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "steps_only"))
    writer.add_scalar("loss/total", 1.0, 1)
    writer.close()
    with pytest.raises(ValueError, match=r"steps_only holds no per-epoch scalars.*loss/total"):
        read_epoch_scalars(tmp_path / "steps_only")


def test_curves_verb_draws_one_panel_per_tag_eq18_first(tmp_path):
    with epoch_logger(tmp_path / "tb") as on_epoch:
        for epoch in (1, 2, 3):
            on_epoch(epoch, {"seg": 1.0 / epoch, "aaa": 1.0, "total": 4.0 / epoch, "light": 0.1, "sf": 2.0,
                             "cst": 0.3, "ds": 0.2, "lr": 1e-3})
    assert ordered_tags(read_epoch_scalars(tmp_path / "tb")) == ["total", "light", "sf", "cst", "ds", "seg",
                                                                    "aaa", "lr"]
    out = tmp_path / "curves.png"
    assert cli.main(["curves", "--log-dir", str(tmp_path / "tb"), "--title", "t", "--out", str(out)]) == 0
    img = cv2.imread(str(out))
    # 8 tags: 4 columns x 2 rows of 3.2 x 2.4 in (+0.6 in for the title) at 100 dpi
    assert img.shape[:2] == (540, 1280)
    assert cli.main(["curves", "--log-dir", str(tmp_path / "none"), "--title", "t", "--out",
                     str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()


def test_plot_curves_of_one_epoch_marks_the_point(tmp_path):
    out = plot_curves({"total": [(1, 2.0)]}, tmp_path / "one.png", "one epoch")
    img = cv2.imread(str(out))
    assert img.shape[:2] == (300, 320)
    blue = (np.abs(img.astype(int) - [180, 119, 31]).sum(axis=2) < 60)  # matplotlib's C0 marker, BGR
    assert blue.sum() > 10


def _frames(path, target, value0=0):
    n = len(target)
    image = np.zeros((n, 24, 32, 3), np.uint8)
    for i in range(n):
        image[i] = value0 + 10 * i
    return write_group(path, {"image": image, "target": np.asarray(target, bool),
                              "prev": np.full(n, -1, np.int32), "next": np.full(n, -1, np.int32)})


def test_preview_panels_show_the_middle_target_row_of_the_aligned_frames(tmp_path):
    frames = _frames(tmp_path / "frames.zarr", [False, True, True, True, False])  # targets 1, 2, 3: middle 2
    depth = np.zeros((5, 24, 32), np.float32)
    depth[2] = 5.0
    teacher = write_group(tmp_path / "depth.zarr", {"depth": depth})
    outs = [tmp_path / "frames.png", tmp_path / "depth.png"]
    assert cli.main(["preview-panels", "--shards", str(frames), str(teacher), "--frames", str(frames), str(frames),
                     "--outs", *map(str, outs)]) == 0
    img = cv2.imread(str(outs[0]))
    assert img.shape == (18 + 24, 32, 3)  # caption bar + the image
    assert (img[18:] == 20).all()  # row 2's value, not row 0's or 1's
    assert img[18:].any() and cv2.imread(str(outs[1]))[18:].any()  # row 2 of the depth: valid, coloured
    assert cli.main(["preview-panels", "--shards", str(frames), "--frames", str(frames), "--outs",
                     *map(str, outs)]) == 2  # one --outs too many
    none = _frames(tmp_path / "none.zarr", [False, False])
    assert cli.main(["preview-panels", "--shards", str(none), "--frames", str(none), "--outs",
                     str(tmp_path / "n.png")]) == 2
    assert not (tmp_path / "n.png").exists()


class _Cells(HTMLParser):
    """Tables of an HTML page as lists of rows of cell texts, and each row's class."""

    def __init__(self):
        super().__init__()
        self.tables, self.classes, self._cell = [], [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
            self.classes.append(dict(attrs).get("class"))
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell)
            self._cell = None


def test_tables_html_holds_the_markdown_cells():
    t = tables.Table("t1", "Table 1: a <b> & c", ["Method", "Abs Rel"], [None, 3])
    t.add("paper", ["Ours (paper)", 0.1234])
    t.add("measured", ["Ours & co (measured, this run)", 0.5])
    t2 = tables.Table("t2", "Table 2", ["x"], [1])
    t2.add("paper", [None])
    t2.notes.append("not measured in this run")
    page = tables.to_html([t, t2], "# Title\n\n**demo** data")
    parsed = _Cells()
    parsed.feed(page)
    assert parsed.tables == [[["Method", "Abs Rel"], ["Ours (paper)", "0.123"], ["Ours & co (measured, this run)",
                                                                                "0.500"]], [["x"], ["-"]]]
    assert parsed.classes == [None, "paper", "measured", None, "paper"]
    assert "<h1>Title</h1>" in page and "<strong>demo</strong>" in page
    assert "Table 1: a &lt;b&gt; &amp; c" in page and "<li>not measured in this run</li>" in page
    # the same cells as the Markdown
    md_rows = [line for line in tables.to_markdown([t]).splitlines() if line.startswith("| ")]
    assert [[c.strip() for c in line.strip("|").split("|")] for line in md_rows] == parsed.tables[0]
