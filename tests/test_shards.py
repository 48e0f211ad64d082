"""The zarr shard format: round trip, layout, atomic commit under SIGKILL, verification, inspect."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline import shards
from pipeline.cli import main


def _write(path, n=10, h=8, w=12, rows_per_shard=4, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    depth = rng.random((n, h, w)).astype(np.float16) * 50
    with shards.ShardWriter(path, n, shards.provenance("test", {"a": 1}, {"x": "abc"})) as wr:
        wr.create("image", (h, w, 3), "uint8", rows_per_shard=rows_per_shard)
        for start in range(0, n, rows_per_shard):
            wr.write("image", start, image[start:start + rows_per_shard])
        wr.create("depth", (h, w), "float16", compress=True, rows_per_shard=rows_per_shard)
        wr.write("depth", 0, depth)
        wr.write_all("frame_id", np.array([f"id{i}" for i in range(n)]))
        wr.write_all("target", np.arange(n) % 2 == 0)
    return image, depth


def test_round_trip_layout_and_attrs(tmp_path):
    path = tmp_path / "g.zarr"
    image, depth = _write(path)
    g = shards.open_shard(path)
    np.testing.assert_array_equal(g["image"][:], image)
    np.testing.assert_array_equal(g["depth"][:], depth)
    assert list(g["frame_id"][:]) == [f"id{i}" for i in range(10)]
    assert g["target"][:].sum() == 5
    # one frame per chunk, several per shard file: 10 rows / 4 per shard -> 3 shard files
    assert g["image"].chunks == (1, 8, 12, 3)
    assert g["image"].shards == (4, 8, 12, 3)
    assert len(list((path / "image" / "c").rglob("*"))) - len(list((path / "image" / "c").rglob("*/"))) >= 3
    # per-frame scalars (write_all, rows of <= SMALL_ROW_BYTES): one chunk for the array, no shard index
    assert g["target"].chunks == (10,) and g["target"].shards is None
    # every chunk ends with a crc32c; depth is blosc-zstd before it, images are not compressed
    assert [type(c).__name__ for c in g["image"].compressors] == ["Crc32cCodec"]
    assert [type(c).__name__ for c in g["depth"].compressors] == ["BloscCodec", "Crc32cCodec"]
    attrs = dict(g.attrs)
    assert attrs["rule"] == "test" and attrs["config"] == {"a": 1} and attrs["inputs"] == {"x": "abc"}
    assert attrs["schema_version"] == shards.SCHEMA_VERSION and attrs["n_rows"] == 10
    assert set(attrs["checksums"]) == {"image", "depth", "frame_id", "target"}
    assert shards.verify(path) == {}


def test_misaligned_arrays_and_bad_blocks_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="not aligned"):
        shards.write_group(tmp_path / "a.zarr", {"a": np.zeros(3), "b": np.zeros(4)})
    assert not (tmp_path / "a.zarr").exists()
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        with shards.ShardWriter(tmp_path / "b.zarr", 3) as w:
            w.create("x", (2,), "float32")
            w.write("x", 2, np.zeros((2, 2), np.float32))
    assert not (tmp_path / "b.zarr").exists()
    assert not list(tmp_path.glob(".b.zarr.tmp-*")), "a failed writer must not leave its temporary folder"


def test_failed_rewrite_keeps_the_previous_group(tmp_path):
    path = tmp_path / "g.zarr"
    image, _ = _write(path)
    with pytest.raises(RuntimeError):
        with shards.ShardWriter(path, 10) as w:
            w.create("image", (8, 12, 3), "uint8")
            raise RuntimeError("boom")
    np.testing.assert_array_equal(shards.open_shard(path)["image"][:], image)


def test_open_missing_or_incomplete(tmp_path):
    with pytest.raises(shards.ShardError, match="not found"):
        shards.open_shard(tmp_path / "nope.zarr")
    import zarr

    zarr.open_group(store=str(tmp_path / "half.zarr"), mode="w")
    with pytest.raises(shards.ShardError, match="no checksums"):
        shards.open_shard(tmp_path / "half.zarr")


_SLOW_WRITER = r"""
import sys, time, numpy as np
from pipeline import shards
path = sys.argv[1]
with shards.ShardWriter(path, 40, {}) as w:
    w.create("image", (16, 16, 3), "uint8", rows_per_shard=4)
    for start in range(0, 40, 4):
        w.write("image", start, np.full((4, 16, 16, 3), start, np.uint8))
        print("wrote", start, flush=True)
        time.sleep(0.2)
"""


def test_sigkill_mid_write_leaves_no_complete_looking_group(tmp_path):
    path = tmp_path / "killed.zarr"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    for _ in range(3):  # let it write a few shards
        assert proc.stdout.readline().startswith("wrote")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not path.exists(), "a killed writer must not leave the destination"
    assert list(tmp_path.glob(".killed.zarr.tmp-*")), "the partial write stays under its temporary name"
    # re-running completes, and removes the dead writer's temporary folder
    subprocess.run([sys.executable, "-c", _SLOW_WRITER.replace("time.sleep(0.2)", "pass"), str(path)],
                   check=True, capture_output=True)
    assert shards.verify(path) == {}
    assert shards.open_shard(path)["image"][39, 0, 0, 0] == 36
    assert not list(tmp_path.glob(".killed.zarr.tmp-*"))


def _shard_files(path: Path, name: str):
    return sorted(p for p in (path / name).rglob("*") if p.is_file() and p.name != "zarr.json")


@pytest.mark.parametrize("array", ["image", "depth"])
def test_verify_catches_one_flipped_byte(tmp_path, array, capsys):
    path = tmp_path / "g.zarr"
    _write(path)
    target = _shard_files(path, array)[1]
    data = bytearray(target.read_bytes())
    data[len(data) // 3] ^= 0x01  # inside the chunk data, not the index at the end
    target.write_bytes(bytes(data))
    bad = shards.verify(path)
    assert list(bad) == [array]
    assert main(["inspect", str(path), "--verify"]) == 1
    assert f"{array}:" in capsys.readouterr().out


def test_inspect_prints_arrays_and_previews(tmp_path, capsys):
    path = tmp_path / "g.zarr"
    _write(path)
    assert main(["inspect", str(path), "--verify", "--preview", str(tmp_path / "p.png"), "--index", "3"]) == 0
    out = capsys.readouterr().out
    for text in ("image", "(10, 8, 12, 3)", "uint8", "(1, 8, 12, 3)", "(4, 8, 12, 3)", "verify: OK", '"rule": "test"'):
        assert text in out
    import cv2

    png = cv2.imread(str(tmp_path / "p.png"))
    assert png is not None and png.shape[1] == 12  # panels at the width of the image
    assert main(["inspect", str(path), "--preview", str(tmp_path / "q.png"), "--index", "10"]) == 2
    assert "outside [0, 10)" in capsys.readouterr().err


def test_digest_changes_with_content(tmp_path):
    _write(tmp_path / "a.zarr", seed=0)
    _write(tmp_path / "b.zarr", seed=0)
    _write(tmp_path / "c.zarr", seed=1)
    assert shards.digest(tmp_path / "a.zarr") == shards.digest(tmp_path / "b.zarr")
    assert shards.digest(tmp_path / "a.zarr") != shards.digest(tmp_path / "c.zarr")


def test_row_reader_equals_zarr_and_falls_back(tmp_path):
    import pickle

    path = tmp_path / "g.zarr"
    image, depth = _write(path, n=10, rows_per_shard=4)
    with shards.ShardWriter(tmp_path / "sparse.zarr", 6) as w:  # rows 1 and 4 never written: fill value
        w.create("image", (8, 12, 3), "uint8", rows_per_shard=4)
        w.write("image", 0, np.full((4, 8, 12, 3), 7, np.uint8) * (np.arange(4) != 1)[:, None, None, None])
        w.write("image", 4, np.zeros((2, 8, 12, 3), np.uint8))
    g = shards.open_shard(path)
    fast = shards.RowReader(g["image"], path / "image")
    assert fast.fast and len(fast) == 10
    for i in range(10):
        np.testing.assert_array_equal(fast[i], image[i])
    clone = pickle.loads(pickle.dumps(fast))  # DataLoader workers get a reader without open files
    np.testing.assert_array_equal(clone[9], image[9])
    slow = shards.RowReader(g["depth"], path / "depth")  # compressed: zarr path
    assert not slow.fast
    np.testing.assert_array_equal(slow[3], depth[3])
    sparse = shards.RowReader(shards.open_shard(tmp_path / "sparse.zarr")["image"], tmp_path / "sparse.zarr" / "image")
    assert sparse[0][0, 0, 0] == 7 and not sparse[1].any() and not sparse[5].any()
    with pytest.raises(IndexError, match="outside"):
        fast[10]


def test_the_row_writer_writes_whole_shards_across_boundaries(tmp_path):
    """ShardWriter.rows: the one row writer (frames, teachers, ground truth): rows in increasing order,
    contiguous blocks or scattered rows, each shard written whole; rows never given keep 0."""
    with shards.ShardWriter(tmp_path / "b.zarr", 7, {"rule": "t"}) as writer:
        buf = writer.rows("x", (2,), np.uint8, rows_per_shard=3)
        for start, stop in [(0, 2), (2, 5)]:
            buf.put(start, np.repeat(np.arange(start, stop, dtype=np.uint8)[:, None] + 1, 2, axis=1))
        buf.put_rows([6], np.full((1, 2), 7, np.uint8))
        with pytest.raises(ValueError, match="increasing"):
            buf.put(0, np.zeros((1, 2), np.uint8))
        with pytest.raises(ValueError, match="outside"):
            buf.put_rows([7], np.zeros((1, 2), np.uint8))
        buf.close()
        writer.fill_rows("y", (), np.int16, np.array([1, 0, 1, 1, 0, 0, 1], bool), lambda rows: rows * 10)
        calls = []  # rows_per_call: compute sees at most that many rows, in order
        writer.fill_rows("z", (), np.int16, np.array([1, 1, 1, 1, 0, 1, 1], bool),
                         lambda rows: calls.append(rows.tolist()) or rows * 10, rows_per_call=2)
    assert calls == [[0, 1], [2, 3], [5, 6]]  # the 7 rows are one shard: its 6 target rows, 2 per call
    g = shards.open_shard(tmp_path / "b.zarr")
    np.testing.assert_array_equal(g["x"][:, 0], [1, 2, 3, 4, 5, 0, 7])
    np.testing.assert_array_equal(g["y"][:], [0, 0, 20, 30, 0, 0, 60])
    np.testing.assert_array_equal(g["z"][:], [0, 10, 20, 30, 0, 50, 60])
    assert shards.verify(tmp_path / "b.zarr") == {}


def test_a_flipped_byte_fails_every_read_naming_shard_and_array(tmp_path):
    path = tmp_path / "g.zarr"
    _write(path, n=10, rows_per_shard=4)
    chunk = path / "image" / "c" / "1" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[100] ^= 0xFF  # inside row 4's chunk
    chunk.write_bytes(bytes(data))
    g = shards.open_shard(path)
    for read in (lambda: g["image"][4], lambda: g["image"].oindex[[3, 4]], lambda: np.asarray(g["image"]),
                 lambda: shards.RowReader(g["image"], path / "image")[4]):
        with pytest.raises(shards.ShardError, match=r"g\.zarr: array 'image' is corrupt"):
            read()
    np.testing.assert_array_equal(g["image"][5], shards.RowReader(g["image"], path / "image")[5])  # others read
    assert set(shards.verify(path)) == {"image"}


def test_digests_noted_at_write_time_equal_the_stored_values(tmp_path):
    """The commit takes whole-shard digests from the written blocks (no read-back); a shard rewritten in part,
    a shard never written and a block cast to the array's dtype still give the checksum of what is stored."""
    out = tmp_path / "g.zarr"
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (10, 4, 3), dtype=np.uint8)
    with shards.ShardWriter(out, 10, {}) as w:
        w.create("a", (4, 3), np.uint8, rows_per_shard=4, dense=True)
        w.write("a", 0, a[:8])                          # shards 0 and 1 whole
        w.write("a", 5, a[5:6] + 1)                     # shard 1 changed in part: its noted digest is dropped
        w.create("b", (2,), np.float32, rows_per_shard=4)
        w.write("b", 0, np.arange(8, dtype=np.float64).reshape(4, 2) / 3)   # stored as float32
    g = shards.open_shard(out)
    assert shards.verify(out) == {}
    expected = a.copy()
    expected[5] += 1
    expected[8:] = 0                                    # shard 2 never written: the fill value
    np.testing.assert_array_equal(g["a"][:], expected)
    assert g.attrs["checksums"]["a"] == shards.array_checksum(g["a"])
    assert g.attrs["checksums"]["b"] == shards.array_checksum(g["b"])


@pytest.mark.parametrize("rows", [[3, 4, 5], [9, 0, 4, 4, 5], [7], [1, 2, 6, 7, 8, 3], [], [-1, 2]])
def test_row_selection_reads_as_slices_equal_to_orthogonal_indexing(tmp_path, rows):
    """`shard[name].oindex[rows]` (read as slices of contiguous runs: zarr's integer oindex of a sharded
    array peaks at ~100x the data) returns exactly zarr's oindex: any order, repeats, across shard files."""
    image, depth = _write(tmp_path / "g.zarr", n=10, rows_per_shard=4)
    g = shards.open_shard(tmp_path / "g.zarr")
    idx = np.array(rows, dtype=np.int64)
    for name, ref in (("image", image), ("depth", depth)):
        got = g[name].oindex[idx]
        assert got.shape == (len(rows), *ref.shape[1:]) and got.dtype == ref.dtype
        np.testing.assert_array_equal(got, ref[idx])
        np.testing.assert_array_equal(shards.read_rows(g[name].array, idx), g[name].array.oindex[idx])


def test_dense_arrays_store_every_chunk_without_testing_it(tmp_path, monkeypatch):
    """`dense=True` (frames): every chunk is stored, an all-zero frame too, and zarr never compares a chunk
    with the fill value (that test cost as much as the rest of a frames write). A sparse array drops the
    all-zero chunk (zarr's default): the stored bytes differ, the values read back do not."""
    from zarr.core.buffer import NDBuffer

    tested = []
    original = NDBuffer.all_equal
    monkeypatch.setattr(NDBuffer, "all_equal", lambda self, *a, **k: tested.append(1) or original(self, *a, **k))
    image = np.zeros((4, 8, 12, 3), np.uint8)
    image[1] = 7  # rows 0, 2, 3 equal the fill value
    sizes = {}
    for dense in (True, False):
        path = tmp_path / f"d{dense}.zarr"
        tested.clear()
        with shards.ShardWriter(path, 4, {}) as wr:
            wr.create("image", (8, 12, 3), "uint8", rows_per_shard=4, dense=dense)
            wr.write("image", 0, image)
        assert bool(tested) is not dense
        np.testing.assert_array_equal(shards.open_shard(path)["image"][:], image)
        sizes[dense] = sum(f.stat().st_size for f in (path / "image" / "c").rglob("*") if f.is_file())
    row = 8 * 12 * 3 + 4  # one chunk: the frame and its crc32c
    assert sizes[True] >= 4 * row and row <= sizes[False] < 2 * row


@pytest.mark.parametrize("dtype,row_shape", [("uint8", (8, 12, 3)), ("float32", (6, 5))])
def test_whole_shard_writes_of_dense_arrays_are_byte_for_byte_what_zarr_writes(tmp_path, dtype, row_shape):
    """A dense uncompressed array's whole shards are written without zarr (`_write_whole_shards`): every
    file, the partial last shard's included (10 rows, 4 a shard), equals the file zarr's sharding codec
    writes for the same rows, and zarr, `RowReader` and `verify` read them back. A write that is not whole
    shards goes through zarr."""
    rng = np.random.default_rng(3)
    values = (rng.random((10, *row_shape)) * 255).astype(dtype)
    written = {}
    for direct in (True, False):
        path = tmp_path / f"{direct}.zarr"
        with shards.ShardWriter(path, 10, {}) as wr:
            wr.create("x", row_shape, dtype, rows_per_shard=4, dense=True)
            assert ("x" in wr._direct) is True
            if not direct:
                wr._direct.clear()  # zarr's own path
            wr.write("x", 0, values[:4])      # shard 0
            wr.write("x", 4, values[4:])      # shard 1 and the partial shard 2
        files = sorted(f for f in (path / "x").rglob("*") if f.is_file())
        written[direct] = {str(f.relative_to(path)): f.read_bytes() for f in files}
        group = shards.open_shard(path)
        np.testing.assert_array_equal(group["x"][:], values)
        reader = shards.RowReader(group["x"].array, path / "x")
        assert reader.fast
        np.testing.assert_array_equal(np.stack([reader[i] for i in range(10)]), values)
        assert main(["inspect", str(path), "--verify"]) == 0
    assert sorted(written[True]) == sorted(written[False]) == [
        "x/c/0/" + "/".join("0" * len(row_shape)), "x/c/1/" + "/".join("0" * len(row_shape)),
        "x/c/2/" + "/".join("0" * len(row_shape)), "x/zarr.json"]
    for key in written[False]:
        assert written[True][key] == written[False][key], key
    # the layout itself: row j at j * (row bytes + 4), its crc32c after it; the index at the end
    last = written[True]["x/c/2/" + "/".join("0" * len(row_shape))]
    row_bytes = values[0].nbytes
    index = np.frombuffer(last[-4 - 4 * 16:-4], "<u8").reshape(4, 2)
    assert index[:2].tolist() == [[0, row_bytes + 4], [row_bytes + 4, row_bytes + 4]]
    assert (index[2:] == np.uint64(2**64 - 1)).all()
    assert last[:row_bytes] == values[8].tobytes()


def test_writes_that_are_not_whole_shards_go_through_zarr(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(shards, "_write_plain_shard", lambda *a: calls.append(a))
    values = np.arange(10 * 4 * 3, dtype=np.uint8).reshape(10, 4, 3)
    path = tmp_path / "p.zarr"
    with shards.ShardWriter(path, 10, {}) as wr:
        wr.create("dense", (4, 3), "uint8", rows_per_shard=4, dense=True)
        wr.create("sparse", (4, 3), "uint8", rows_per_shard=4)
        wr.create("packed", (4, 3), "uint8", rows_per_shard=4, dense=True, compress=True)
        wr.write("dense", 2, values[2:6])  # not aligned to a shard
        wr.write("dense", 6, values[6:8])  # the end of shard 1 only
        for name in ("sparse", "packed"):
            wr.write(name, 0, values)
    assert calls == []
    group = shards.open_shard(path)
    np.testing.assert_array_equal(group["dense"][2:8], values[2:8])
    np.testing.assert_array_equal(group["sparse"][:], values)
    np.testing.assert_array_equal(group["packed"][:], values)


def test_the_direct_writer_finishes_a_file_that_writev_writes_in_pieces(tmp_path, monkeypatch):
    """`os.writev` may write fewer bytes than asked, ending mid-buffer: the writer resumes where it stopped
    and the file is the one a single call writes."""
    rows = np.random.default_rng(5).integers(0, 255, (3, 5, 7), dtype=np.uint8)
    shards._write_plain_shard(tmp_path / "whole", rows, 4)
    real, calls = os.writev, []

    def piecewise(fd, buffers):
        calls.append(len(buffers))
        first = bytes(memoryview(buffers[0]))[:7]  # at most 7 bytes of the first buffer a call
        return real(fd, [first])

    monkeypatch.setattr(os, "writev", piecewise)
    shards._write_plain_shard(tmp_path / "pieces", rows, 4)
    whole = (tmp_path / "whole").read_bytes()
    assert (tmp_path / "pieces").read_bytes() == whole
    assert len(whole) == 3 * (35 + 4) + 4 * 16 + 4 and len(calls) > 3 * 5 + 6
