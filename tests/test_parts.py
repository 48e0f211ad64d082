"""A stage split over several jobs (config key jobs_per_split): each job writes whole shard files of the
same arrays (shards.Part), `assemble` hard-links them into one group, and the result is the group one
job writes: the same bytes in the same files, the same attrs (but `written_at`), checksums that verify."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import shards
from pipeline.cli import main
from pipeline.datasets import nuscenes_demo

ROWS_PER_SHARD = 3


# ----------------------------------------------------------------------------- the format

@pytest.mark.parametrize("n, rps, count, expected", [
    (10, 4, 1, [(0, 10)]),
    (10, 4, 2, [(0, 4), (4, 10)]),                   # 3 shards: 1 + 2
    (10, 4, 3, [(0, 4), (4, 8), (8, 10)]),           # the last shard is short
    (10, 4, 5, [(0, 0), (0, 4), (4, 4), (4, 8), (8, 10)]),  # more parts than shards: some are empty
    (3, 64, 2, [(0, 0), (0, 3)]),                    # fewer rows than rows_per_shard: one shard
    (0, 4, 2, [(0, 0), (0, 0)]),
])
def test_part_rows_are_runs_of_whole_shards(n, rps, count, expected):
    ranges = [shards.Part(i, count, rps).rows(n) for i in range(count)]
    assert ranges == expected
    covered = [r for lo, hi in ranges for r in range(lo, hi)]
    assert covered == list(range(n))  # disjoint, complete, in order


def test_part_parse_and_bad_values():
    assert shards.Part.parse("2/3", 64) == shards.Part(2, 3, 64)
    for bad in ("3/3", "1", "a/b", "-1/2", "0/0"):
        with pytest.raises(ValueError, match="INDEX/COUNT|0 <= INDEX"):
            shards.Part.parse(bad, 64)


def _write(path, part=None, n=10, seed=0):
    """A group like a stage writes: per-row arrays (one written through RowBuffer, one through fill_rows
    with rows left out) and whole columns, plus a summary."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (n, 4, 6, 3), dtype=np.uint8)
    mask = np.arange(n) % 3 != 1
    with shards.ShardWriter(path, n, shards.provenance("test", {"a": 1}), part=part) as w:
        lo, hi = w.row_range
        buf = w.rows("image", (4, 6, 3), np.uint8, rows_per_shard=ROWS_PER_SHARD)
        buf.put(lo, image[lo:hi])
        buf.close()
        w.fill_rows("depth", (4, 6), np.float16, mask, lambda rows: image[rows, ..., 0] / 7, compress=True)
        summary = w.summary("stats", count_key="pixels", tau=0.5)
        for row in range(lo, hi):
            values = image[row].astype(np.float64) / 255
            summary.add(values.sum(), values.max(), values.size)
        w.write_all("target", mask)
        w.write_all("frame_id", np.array([f"id{i}" for i in range(n)]))
    return image


def _files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.parent != path}  # array metadata and shard files (the group's zarr.json: attrs)


def assert_same_group(whole: Path, assembled: Path) -> None:
    """Same arrays and bytes in the same files, same attrs but written_at, and the assembled group verifies."""
    a, b = shards.open_shard(whole), shards.open_shard(assembled)
    assert sorted(a.array_keys()) == sorted(b.array_keys())
    for name in a.array_keys():
        x, y = a[name][...], b[name][...]
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), name
    assert _files(whole) == _files(assembled)
    strip = lambda attrs: {k: v for k, v in dict(attrs).items() if k != "written_at"}  # noqa: E731
    assert strip(a.attrs) == strip(b.attrs)
    assert shards.verify(assembled) == {}
    assert shards.digest(whole) == shards.digest(assembled)


@pytest.mark.parametrize("count", [2, 3, 5])
def test_parts_assemble_into_the_group_one_writer_writes(tmp_path, count):
    _write(tmp_path / "whole.zarr", shards.Part(0, 1, ROWS_PER_SHARD))
    parts = [tmp_path / f"p{i}.zarr" for i in range(count)]
    for i, part in enumerate(parts):
        _write(part, shards.Part(i, count, ROWS_PER_SHARD))
    with pytest.raises(shards.ShardError, match=r"part 1/\d of a group written by several jobs"):
        shards.open_shard(parts[1])
    out = shards.assemble(reversed(parts), tmp_path / "out.zarr")  # any order
    assert_same_group(tmp_path / "whole.zarr", out)
    # hard links, not copies: every shard file of the result is a file of one part
    part_inodes = {p.stat().st_ino for part in parts for p in part.rglob("*") if p.is_file()}
    shard_files = [p for p in (out / "image" / "c").rglob("*") if p.is_file()]
    assert len(shard_files) == 4 and all(p.stat().st_ino in part_inodes for p in shard_files)
    # the summary merged exactly: mean over all pixels as one writer computes it
    image = np.random.default_rng(0).integers(0, 256, (10, 4, 6, 3), dtype=np.uint8).astype(np.float64) / 255
    stats = dict(shards.open_shard(out).attrs)["stats"]
    assert stats["pixels"] == image.size and stats["tau"] == 0.5
    assert stats["mean"] == pytest.approx(image.mean(), rel=1e-12) and stats["max"] == image.max()


def test_a_part_writes_only_its_rows_and_whole_shards(tmp_path):
    with pytest.raises(ValueError, match=r"outside this part's rows \[3, 6\)"):
        with shards.ShardWriter(tmp_path / "a.zarr", 10, part=shards.Part(1, 3, 3)) as w:
            w.create("x", (2,), "uint8")
            w.write("x", 6, np.ones((3, 2), np.uint8))
    with pytest.raises(ValueError, match="rows per shard"):
        with shards.ShardWriter(tmp_path / "b.zarr", 10, part=shards.Part(1, 3, 3)) as w:
            w.create("x", (2,), "uint8", rows_per_shard=4)
    assert not (tmp_path / "a.zarr").exists() and not (tmp_path / "b.zarr").exists()


def test_assemble_refuses_incomplete_overlapping_or_foreign_parts(tmp_path):
    parts = []
    for i in range(3):
        _write(tmp_path / f"p{i}.zarr", shards.Part(i, 3, ROWS_PER_SHARD))
        parts.append(tmp_path / f"p{i}.zarr")
    with pytest.raises(shards.ShardError, match="expected parts 0..2 of 3"):
        shards.assemble(parts[:2], tmp_path / "out.zarr")
    with pytest.raises(shards.ShardError, match="expected parts 0..2 of 3"):
        shards.assemble([parts[0], parts[1], parts[1]], tmp_path / "out.zarr")
    _write(tmp_path / "other.zarr", shards.Part(2, 3, ROWS_PER_SHARD), seed=1)  # another run's data: digests differ
    import zarr

    zarr.open_group(store=str(tmp_path / "other.zarr"), mode="r+").attrs["config"] = {"a": 2}
    with pytest.raises(shards.ShardError, match=r"other\.zarr: attrs \['config'\] differ"):
        shards.assemble([parts[0], parts[1], tmp_path / "other.zarr"], tmp_path / "out.zarr")
    with pytest.raises(shards.ShardError, match="part not found"):
        shards.assemble([parts[0], parts[1], tmp_path / "nope.zarr"], tmp_path / "out.zarr")
    shards.write_group(tmp_path / "g.zarr", {"x": np.zeros(3)})
    with pytest.raises(shards.ShardError, match="not a part"):
        shards.assemble([tmp_path / "g.zarr"], tmp_path / "out.zarr")
    assert not (tmp_path / "out.zarr").exists()


def test_assemble_verb_and_verify(tmp_path, capsys):
    parts = [tmp_path / f"p{i}.zarr" for i in range(2)]
    for i, p in enumerate(parts):
        _write(p, shards.Part(i, 2, ROWS_PER_SHARD))
    assert main(["assemble", "--parts", *map(str, parts), "--out", str(tmp_path / "out.zarr")]) == 0
    assert main(["inspect", str(tmp_path / "out.zarr"), "--verify"]) == 0
    assert "verify: OK" in capsys.readouterr().out
    assert main(["assemble", "--parts", str(parts[0]), "--out", str(tmp_path / "x.zarr")]) == 2
    assert "expected parts 0..1 of 2" in capsys.readouterr().err


def test_the_assembly_job_imports_neither_zarr_nor_numpy(tmp_path):
    """`python -m pipeline assemble` reads only zarr.json files: its start-up is the interpreter's, not
    zarr's (0.3 s), which on a small split decides whether N jobs beat one."""
    parts = [tmp_path / f"p{i}.zarr" for i in range(2)]
    for i, p in enumerate(parts):
        _write(p, shards.Part(i, 2, ROWS_PER_SHARD))
    code = ("import sys; from pipeline.cli import main; "
            f"rc = main(['assemble', '--parts', {str(parts[0])!r}, {str(parts[1])!r}, '--out', {str(tmp_path / 'o.zarr')!r}]); "
            "heavy = sorted(m for m in ('zarr', 'numpy', 'torch') if m in sys.modules); "
            "print(rc, heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "0 []", out
    assert_same_group(tmp_path / "o.zarr", shards.assemble(parts, tmp_path / "again.zarr"))


def test_assemble_refuses_a_part_of_an_older_format(tmp_path):
    parts = [tmp_path / f"p{i}.zarr" for i in range(2)]
    for i, p in enumerate(parts):
        _write(p, shards.Part(i, 2, ROWS_PER_SHARD))
    meta = json.loads((parts[1] / "zarr.json").read_text())
    del meta["attributes"]["part"]["layout"]
    (parts[1] / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(shards.ShardError, match=r"p1\.zarr is a part written by an older version"):
        shards.assemble(parts, tmp_path / "out.zarr")
    (parts[1] / "zarr.json").write_text("{not json")
    with pytest.raises(shards.ShardError, match=r"p1\.zarr is not a readable zarr v3 group"):
        shards.assemble(parts, tmp_path / "out.zarr")
    assert not (tmp_path / "out.zarr").exists()


# ----------------------------------------------------------------------------- the four stages

W, H = 96, 64  # the frames' size (the tiny Mask2Former's processor size)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A small nuScenes-format demo root and its train_day split file (targets and sweep neighbours)."""
    tmp = tmp_path_factory.mktemp("parts")
    root = tmp / "nuscenes"
    nuscenes_demo.write_nuscenes_demo(root, seed=1, keyframes_per_scene=3, sweeps_between=1, width=192, height=108,
                                      progress=False)
    assert main(["splits", "--dataset", "nuscenes", "--root", str(root), "--options",
                 json.dumps({"version": "v1.0-mini", "day_clear_only": True}), "--split-files", "{}",
                 "--out-dir", str(tmp / "splits")]) == 0
    return tmp, root, tmp / "splits" / "train_day.txt"


def run_parts(tmp: Path, stage: str, argv, count: int) -> Path:
    """The stage's verb as one job (--part 0/1) and as `count` jobs + assemble; asserts they agree and
    returns the one-job group."""
    whole = tmp / stage / "whole.zarr"
    assert main([*argv, "--out", str(whole), "--part", "0/1", "--rows-per-shard", str(ROWS_PER_SHARD)]) == 0
    parts = [tmp / stage / f"train_day.parts/{i}.zarr" for i in range(count)]
    for i, part in enumerate(parts):
        assert main([*argv, "--out", str(part), "--part", f"{i}/{count}", "--rows-per-shard", str(ROWS_PER_SHARD)]) == 0
    assert main(["assemble", "--parts", *map(str, parts), "--out", str(tmp / stage / "assembled.zarr")]) == 0
    assert_same_group(whole, tmp / stage / "assembled.zarr")
    return whole


@pytest.fixture(scope="module")
def frames(demo):
    tmp, root, split_file = demo
    argv = ["extract-frames", "--dataset", "nuscenes", "--root", str(root), "--options",
            json.dumps({"version": "v1.0-mini", "neighbours": "sweeps"}), "--split-file", str(split_file),
            "--crop", "0", "0", "0", "0", "--width", str(W), "--height", str(H), "--threads", "1"]
    whole = run_parts(tmp, "frames", argv, 3)
    g = shards.open_shard(whole)
    target = g["target"][:]
    # several shards, targets and non-target neighbours in them, so that every part has work
    assert len(target) >= 3 * ROWS_PER_SHARD and 0 < target.sum() < len(target)
    for i in range(3):
        lo, hi = shards.Part(i, 3, ROWS_PER_SHARD).rows(len(target))
        assert target[lo:hi].any()
    return whole


def test_extract_frames_in_three_jobs_equals_one(frames):
    assert shards.open_shard(frames)["image"][...].any()


def test_translate_in_three_jobs_equals_one(frames, tmp_path):
    from pipeline.synth.cyclegan import ResnetGenerator, init_weights, save_generator

    torch.manual_seed(0)
    generator = save_generator(init_weights(ResnetGenerator(3, 3, 4, 1)), tmp_path / "G.pth")
    whole = run_parts(tmp_path, "synth", ["translate", "--frames", str(frames), "--generator", str(generator),
                                          "--batch-size", "2", "--device", "cpu"], 3)
    image, target = shards.open_shard(whole)["image"][...], shards.open_shard(frames)["target"][:]
    assert image[target].any() and not image[~target].any()


def test_seg_pseudolabels_in_three_jobs_equal_one(frames, tmp_path):
    from test_mask2former import _save_random_model

    checkpoint = _save_random_model(tmp_path / "m2f")
    whole = run_parts(tmp_path, "seg", ["seg-pseudolabels", "--frames", str(frames), "--checkpoint", str(checkpoint),
                                        "--topk", "3", "--tau", "0.1", "--batch-size", "2", "--device", "cpu"], 3)
    g = shards.open_shard(whole)
    target = shards.open_shard(frames)["target"][:]
    assert g["topk_prob"][...][target].any() and not g["topk_prob"][...][~target].any()
    assert g.attrs["dropped_mass"]["pixels"] == int(target.sum()) * H * W


def test_depth_pseudolabels_in_three_jobs_equal_one(frames, tmp_path):
    from test_monodepth2 import write_official_folder

    weights = tmp_path / "weights"
    write_official_folder(weights, pose=False)
    encoder = torch.load(weights / "encoder.pth")
    torch.save({**encoder, "height": 64, "width": 96}, weights / "encoder.pth")  # a small trained size
    whole = run_parts(tmp_path, "depth", ["depth-pseudolabels", "--frames", str(frames), "--weights", str(weights),
                                          "--batch-size", "2", "--min-depth", "0.1", "--max-depth", "80",
                                          "--device", "cpu"], 3)
    depth, target = shards.open_shard(whole)["depth"][...], shards.open_shard(frames)["target"][:]
    assert (depth[target] >= 0.0999).all() and not depth[~target].any()


def test_more_jobs_than_shards_leaves_parts_empty(frames, tmp_path):
    """Eight jobs over fewer shard files: the extra parts write no rows, the result is the same."""
    n = len(shards.open_shard(frames)["target"])
    count = -(-n // ROWS_PER_SHARD) + 2
    assert shards.Part(0, count, ROWS_PER_SHARD).rows(n)[0] == shards.Part(0, count, ROWS_PER_SHARD).rows(n)[1]
    generator = tmp_path / "G.pth"
    from pipeline.synth.cyclegan import ResnetGenerator, save_generator

    save_generator(ResnetGenerator(3, 3, 4, 1), generator)
    run_parts(tmp_path, "synth", ["translate", "--frames", str(frames), "--generator", str(generator),
                                  "--batch-size", "4", "--device", "cpu"], count)
    assert os.listdir(tmp_path / "synth")
