"""The zarr v3 shard format: create, write, atomic commit, open, verify.

One zarr group per (stage, dataset, split). Arrays are aligned on axis 0, one row per frame.
Each chunk holds one row; a shard (zarr's sharding codec) holds `rows_per_shard` rows, so one
frame is one small read and the file count stays low. Groups are written under a temporary
name beside the destination and renamed into place only when complete: a killed writer never
leaves a group that looks finished. The group's attrs carry provenance and one sha256 per
array, which `verify` recomputes.

Every chunk ends with a crc32c (zarr's `crc32c` codec; shard indexes carry one too), so a read of
corrupted bytes fails. `open_shard` returns a `Shard` whose arrays turn such a failure into a
`ShardError` naming the shard and the array: every stage that reads a shard reads it checked.

A stage split over several jobs (config key `jobs_per_split`) writes one `Part` of the group per job:
the same arrays, each job its own whole shard files (zarr does not lock: two writers of one shard file
lose data), the digests of its shards in its attrs. `assemble` (`pipeline.parts`) hard-links the parts'
shard files into the final group and writes its attrs from the parts' digests: no data is copied or
read again, and the result equals what one job writes (same files, same attrs but `written_at`).
"""
from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import zarr
import google_crc32c
from zarr.codecs import BloscCodec, BloscShuffle, Crc32cCodec

from pipeline import __version__
from pipeline.atomic import atomic_path
from pipeline.parts import ShardError, Summary, assemble, checksum_from_digests  # noqa: F401 - re-exported

# Snakemake marks directory outputs with a `.snakemake_timestamp` file, which zarr warns about.
warnings.filterwarnings("ignore", message=".*snakemake_timestamp.*")

# 2: every chunk carries a crc32c; 3: an array's checksum is the sha256 of its shards' sha256s (parts
# of a group written by several jobs assemble without reading the data)
SCHEMA_VERSION = 3
# blosc-zstd with byte shuffle: float16/float32 depth compresses well; photos barely do, and
# decode cost dominates their reads (benchmarks/loader.py), so image arrays stay uncompressed.
DEPTH_CODEC = BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.shuffle)
CHECKSUM_CODEC = Crc32cCodec()
# write_all: rows of at most this many bytes (frame indices, timestamps, K) go in one chunk, not one chunk a row
SMALL_ROW_BYTES = 256
log = logging.getLogger(__name__)


def _compressors(compress: bool) -> list:
    """The bytes codecs of an array: blosc-zstd (depth, labels) when `compress`, then the crc32c."""
    return [DEPTH_CODEC, CHECKSUM_CODEC] if compress else [CHECKSUM_CODEC]


def default_rows_per_shard(row_nbytes: int, target_bytes: int = 64 << 20) -> int:
    """Rows per shard so that one shard file is about `target_bytes` (at least 1 row)."""
    return max(1, int(target_bytes // max(1, row_nbytes)))


def effective_rows_per_shard(rows_per_shard: int, n_rows: int) -> int:
    """Rows per shard as stored: never more than the array has rows (at least 1)."""
    return max(1, min(int(rows_per_shard), max(1, int(n_rows))))


@dataclass(frozen=True)
class Part:
    """Part `index` of `count` of a group whose per-row arrays have `rows_per_shard` rows per shard file.

    The group's S shard files are dealt out in contiguous runs, shards [S*i//count, S*(i+1)//count) to
    part i: no two parts write one file, part sizes differ by at most one shard, and a part beyond the
    number of shards is empty (it writes no rows). The row range is computed from the number of rows
    when the job runs. Part 0 also writes the whole-array columns (`write_all`). `Part(0, 1, r)` is
    the whole group, written as one job writes it."""
    index: int
    count: int
    rows_per_shard: int

    def __post_init__(self):
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"part {self.index}/{self.count}: expected INDEX/COUNT with 0 <= INDEX < COUNT")
        if self.rows_per_shard < 1:
            raise ValueError(f"rows per shard must be >= 1, got {self.rows_per_shard}")

    @classmethod
    def parse(cls, text: str, rows_per_shard: int) -> "Part":
        """`I/N` (e.g. `2/3`; `0/1` = the whole group)."""
        index, sep, count = str(text).partition("/")
        if not (sep and index.strip().isdigit() and count.strip().isdigit()):
            raise ValueError(f"--part must be INDEX/COUNT such as 0/1 or 2/3, got {text!r}")
        return cls(int(index), int(count), int(rows_per_shard))

    @property
    def whole(self) -> bool:
        return self.count == 1

    def rows(self, n_rows: int) -> tuple[int, int]:
        """This part's rows [start, stop) of a group of `n_rows` rows (start == stop: an empty part)."""
        rps = effective_rows_per_shard(self.rows_per_shard, n_rows)
        n_shards = -(-int(n_rows) // rps)
        first, stop = n_shards * self.index // self.count, n_shards * (self.index + 1) // self.count
        return min(first * rps, n_rows), min(stop * rps, n_rows)


class ShardWriter:
    """Write one group atomically.

        with ShardWriter(path, n_rows, attrs) as w:
            w.create("image", (H, W, 3), "uint8")
            w.write("image", start_row, block)   # whole shards at once is fastest
            w.write_all("frame_id", np.array([...]))
        # on a clean exit: checksums + attrs are stored and the group is renamed to `path`

    On an exception (or SIGKILL) the temporary folder is left as `.<name>.tmp-*` and removed
    by the next writer of the same path; `path` itself is untouched.

    With `part` (a `Part`) the writer writes only that part's rows, `row_range`, of every per-row array
    (all of them at `part.rows_per_shard` rows per shard); `assemble` joins the parts."""

    def __init__(self, path: str | os.PathLike, n_rows: int, attrs: Mapping[str, Any] | None = None, *,
                 part: Part | None = None):
        self.path = Path(path)
        self.n_rows = int(n_rows)
        if self.n_rows < 0:
            raise ValueError(f"n_rows must be >= 0, got {n_rows}")
        self.attrs = dict(attrs or {})
        self.part = part
        self.row_range = part.rows(self.n_rows) if part is not None else (0, self.n_rows)
        self.summaries: dict[str, Summary] = {}
        self._whole: set[str] = set()  # arrays of one shard (write_all): part 0 writes them
        self._atomic = atomic_path(self.path, directory=True)
        self.tmp = self._atomic.__enter__()
        self.group = zarr.open_group(store=str(self.tmp), mode="w", zarr_format=3)
        self.rows_per_shard: dict[str, int] = {}
        # the arrays as created: `write_empty_chunks` is a runtime setting, not stored in the metadata, so
        # `self.group[name]` would open a dense array without it (and test every chunk against the fill value)
        self._arrays: dict[str, zarr.Array] = {}
        self._digest_cache: dict[str, dict[str, str]] = {}  # array -> {shard: sha256} of whole-shard writes
        self._direct: set[str] = set()  # arrays whose whole-shard writes skip zarr (`_write_whole_shards`)

    def create(self, name: str, row_shape: Iterable[int], dtype, *, compress: bool = False,
               rows_per_shard: int | None = None, dense: bool = False) -> zarr.Array:
        """Create array `name` of shape (n_rows, *row_shape); one row per chunk, many per shard.

        `dense`: every row gets data (frames), so zarr stores each chunk without first testing whether it
        equals the fill value (that test costs as much as the rest of a write); the values are the same."""
        row_shape = tuple(int(s) for s in row_shape)
        dtype = np.dtype(dtype)
        row_nbytes = int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize
        if self.part is not None and name not in self._whole:
            rows_per_shard = rows_per_shard or self.part.rows_per_shard
            if effective_rows_per_shard(rows_per_shard, self.n_rows) != self.row_shard_size:
                raise ValueError(f"{name}: {rows_per_shard} rows per shard, but this writer's parts are "
                                 f"whole shards of {self.part.rows_per_shard} rows")
        rps = effective_rows_per_shard(rows_per_shard or default_rows_per_shard(row_nbytes), self.n_rows)
        self.rows_per_shard[name] = rps
        self._arrays[name] = self.group.create_array(
            name,
            shape=(self.n_rows, *row_shape),
            chunks=(1, *row_shape),
            shards=(rps, *row_shape),
            dtype=dtype,
            compressors=_compressors(compress),
            fill_value=0,
            config={"write_empty_chunks": True} if dense else None,
        )
        if dense and not compress and _plain_sharding(self._arrays[name]) and _little_endian(dtype):
            self._direct.add(name)
        return self._arrays[name]

    def write(self, name: str, start: int, block: np.ndarray) -> None:
        """Write rows [start, start + len(block)) of array `name`."""
        arr = self._arrays[name]
        block = np.asarray(block)
        if block.shape[1:] != arr.shape[1:]:
            raise ValueError(f"{name}: block rows have shape {block.shape[1:]}, expected {arr.shape[1:]}")
        if start < 0 or start + len(block) > arr.shape[0]:
            raise ValueError(f"{name}: rows [{start}, {start + len(block)}) outside [0, {arr.shape[0]})")
        lo, hi = self.row_range
        if name not in self._whole and len(block) and not lo <= start < start + len(block) <= hi:
            raise ValueError(f"{name}: rows [{start}, {start + len(block)}) outside this part's rows [{lo}, {hi})")
        if not self._write_whole_shards(arr, name, start, block):
            arr[start:start + len(block)] = block
        self._note_digests(arr, name, start, block)

    def _write_whole_shards(self, arr, name: str, start: int, block: np.ndarray) -> bool:
        """Write `block` as the whole shard files it covers, byte for byte what zarr's sharding codec writes
        for a dense uncompressed array (`_plain_sharding`): each row's bytes and their crc32c, then the
        index of (offset, nbytes) pairs and its crc32c; rows past the array's end are absent (index entries
        all ones). One `writev` from `block`'s memory per file: zarr's path copies the data twice more into
        fresh buffers (a 64-frame shard at 576x320, its sha256 included: 198-213 -> 178-183 ms; most of the
        rest is the kernel's copy into new page-cache pages). False (nothing written) when the array is not
        such an array or the block is not whole shards."""
        rps, n = _shard_rows(arr), arr.shape[0]
        stop = start + len(block)
        if name not in self._direct or start % rps or not (stop % rps == 0 or stop == n) or not len(block):
            return False
        values = np.ascontiguousarray(block, dtype=arr.dtype)
        root = Path(self.tmp) / arr.path
        for lo in range(start, stop, rps):
            rows = values[lo - start:min(lo + rps, stop) - start]
            key = arr.metadata.encode_chunk_key((lo // rps,) + (0,) * (arr.ndim - 1))
            _write_plain_shard(root / key, rows, rps)
        return True

    def _note_digests(self, arr, name: str, start: int, block: np.ndarray) -> None:
        """Keep the sha256 of each whole shard this write covers (computed from `block`, as stored in the
        array's dtype), so the commit does not read the shards back; a shard written in part is forgotten."""
        if np.dtype(arr.dtype).kind in "OUT":
            return
        rps, stop = _shard_rows(arr), start + len(block)
        cache = self._digest_cache.setdefault(name, {})
        values = None
        for i in range(start // rps, -(-stop // rps)):
            lo, hi = i * rps, min((i + 1) * rps, arr.shape[0])
            if start <= lo and hi <= stop:
                values = np.asarray(block, dtype=arr.dtype) if values is None else values
                cache[str(i)] = hashlib.sha256(np.ascontiguousarray(values[lo - start:hi - start]).data).hexdigest()
            else:
                cache.pop(str(i), None)

    def _digests(self, name: str, first: int, stop: int) -> dict[str, str]:
        """`shard_digests` of shards [first, stop), from the digests noted at write time where there are."""
        cache = self._digest_cache.get(name, {})
        missing = [i for i in range(first, stop) if str(i) not in cache]
        out = {str(i): cache[str(i)] for i in range(first, stop) if str(i) in cache}
        for i in missing:
            out.update(shard_digests(self.group[name], i, i + 1))
        return out

    @property
    def row_shard_size(self) -> int:
        """Rows per shard file of the per-row arrays of a part writer."""
        return effective_rows_per_shard(self.part.rows_per_shard, self.n_rows)

    def owns_whole_arrays(self) -> bool:
        """Whether this writer writes the one-shard arrays of `write_all` (part 0 of the parts does)."""
        return self.part is None or self.part.index == 0

    def summary(self, name: str, *, count_key: str = "count", **static) -> "Summary":
        """A `Summary` (mean and max of values added batch by batch) stored as attrs[name] at commit:
        {**static, mean, max, count_key}; the parts of a group merge theirs exactly."""
        self.summaries[name] = Summary(count_key, **static)
        return self.summaries[name]

    def write_all(self, name: str, values: np.ndarray, *, compress: bool = False) -> None:
        """Create and fill a whole (small) array at once; strings become variable-length UTF-8."""
        values = np.asarray(values)
        if len(values) != self.n_rows:
            raise ValueError(f"{name}: {len(values)} rows, expected {self.n_rows}")
        self._whole.add(name)
        write = self.n_rows and self.owns_whole_arrays()  # other parts: the same array, no data
        if values.dtype.kind in "US":
            arr = self._arrays[name] = self.group.create_array(
                name, shape=(self.n_rows,), chunks=(max(1, self.n_rows),), dtype=str, fill_value="",
                compressors=[CHECKSUM_CODEC])
            if write:
                arr[:] = values.astype(str)
            return
        row_nbytes = values.dtype.itemsize * int(np.prod(values.shape[1:], dtype=np.int64))
        if row_nbytes > SMALL_ROW_BYTES:  # image-like rows: one row per chunk, one shard file
            self.create(name, values.shape[1:], values.dtype, compress=compress, rows_per_shard=max(1, self.n_rows))
            arr = self._arrays[name]
        else:  # per-frame scalars and 3x3 matrices: one chunk (zarr's cost is per chunk, ~0.3 ms each)
            arr = self._arrays[name] = self.group.create_array(
                name, shape=values.shape, chunks=(max(1, self.n_rows), *values.shape[1:]), dtype=values.dtype,
                compressors=_compressors(compress), fill_value=0)
            self.rows_per_shard[name] = max(1, self.n_rows)
        if write:
            arr[:] = values
            self._note_digests(arr, name, 0, values)

    def rows(self, name: str, row_shape, dtype, *, compress: bool = False,
             rows_per_shard: int | None = None) -> "RowBuffer":
        """Create `name` and return its row writer: `put(start, block)` rows in increasing order, each
        shard is written whole when it is complete (the fast way), `close()` writes the last one."""
        self.create(name, row_shape, dtype, compress=compress, rows_per_shard=rows_per_shard)
        return RowBuffer(self, name)

    def fill_rows(self, name: str, row_shape, dtype, rows_mask: np.ndarray, compute, *, compress: bool = False,
                  desc: str | None = None, rows_per_call: int | None = None) -> None:
        """Create `name` and fill the rows where `rows_mask` is true with `compute(rows) -> values`, called
        with at most `rows_per_call` rows (default: a whole shard's) in increasing order; each shard is
        written whole once filled, other rows keep the fill value 0. Memory: one shard of the array, and
        what `compute` holds for `rows_per_call` rows (a network's batch, not a shard of inputs)."""
        from pipeline.progress import progress_bar

        out = self.rows(name, row_shape, dtype, compress=compress)
        step = out.rows_per_shard
        call = max(1, int(rows_per_call or step))
        for start in progress_bar(range(*self.row_range, step), desc=desc or name, unit="shard", mininterval=10):
            rows = np.flatnonzero(rows_mask[start:start + step]) + start
            for i in range(0, len(rows), call):
                out.put_rows(rows[i:i + call], compute(rows[i:i + call]))
        out.close()

    def commit(self) -> Path:
        meta = dict(self.attrs)
        meta.setdefault("schema_version", SCHEMA_VERSION)
        meta.setdefault("package_version", __version__)
        meta["n_rows"] = self.n_rows
        names = sorted(self.group.array_keys())
        if self.part is None or self.part.whole:
            meta["checksums"] = {name: combine_digests(self.group[name], self._digests(name, 0, n_shards(self.group[name])))
                                 for name in names}
            meta.update({name: s.report() for name, s in self.summaries.items()})
        else:  # a part: the digests of its own shards, which `assemble` combines
            meta["part"] = {"index": self.part.index, "count": self.part.count, "rows": list(self.row_range),
                            "rows_per_shard": self.part.rows_per_shard,
                            "digests": {name: self._digests(name, *self._own_shards(name))
                                        for name in names},
                            "layout": {name: {"header": array_header(self.group[name]),
                                              "shards": n_shards(self.group[name])} for name in names},
                            "summaries": {name: s.to_json() for name, s in self.summaries.items()}}
        meta["written_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.group.attrs.update(_jsonable(meta))
        self._atomic.__exit__(None, None, None)  # renames the folder into place
        return self.path

    def _own_shards(self, name: str) -> tuple[int, int]:
        """The shards [first, stop) of array `name` this part wrote."""
        if name in self._whole or np.dtype(self.group[name].dtype).kind in "OUT":
            return (0, n_shards(self.group[name])) if self.owns_whole_arrays() else (0, 0)
        lo, hi = self.row_range
        rps = self.rows_per_shard[name]
        return lo // rps, -(-hi // rps)

    def abort(self) -> None:
        self._atomic.__exit__(RuntimeError, RuntimeError("aborted"), None)  # removes the temporary

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class RowBuffer:
    """The one row writer of a shard array: rows arrive in increasing order (`put` a contiguous block, or
    `put_rows` scattered rows); each shard is assembled in memory and written whole once complete,
    rows never given keep the fill value 0. Memory: one shard of the array."""

    def __init__(self, writer: ShardWriter, name: str):
        arr = writer.group[name]
        self.writer, self.name = writer, name
        self.rows_per_shard = writer.rows_per_shard[name]
        self.block = np.zeros((self.rows_per_shard, *arr.shape[1:]), dtype=arr.dtype)
        self.shard: int | None = None
        self.last = -1

    def put(self, start: int, block: np.ndarray) -> None:
        self.put_rows(np.arange(start, start + len(block)), block)

    def put_rows(self, rows, block: np.ndarray) -> None:
        rows = np.asarray(rows, np.int64)
        if len(rows) != len(block):
            raise ValueError(f"{self.name}: {len(rows)} rows for a block of {len(block)}")
        if len(rows) and (rows[0] <= self.last or np.any(np.diff(rows) <= 0)):
            raise ValueError(f"{self.name}: rows must be written in increasing order")
        if len(rows) and rows[-1] >= self.writer.n_rows:
            raise ValueError(f"{self.name}: row {rows[-1]} outside [0, {self.writer.n_rows})")
        for shard in np.unique(rows // self.rows_per_shard):
            if shard != self.shard:
                self.flush()
                self.shard = int(shard)
            sel = rows // self.rows_per_shard == shard
            self.block[rows[sel] - shard * self.rows_per_shard] = block[sel]
        if len(rows):
            self.last = int(rows[-1])

    def flush(self) -> None:
        if self.shard is None:
            return
        first = self.shard * self.rows_per_shard
        count = min(self.rows_per_shard, self.writer.n_rows - first)
        self.writer.write(self.name, first, self.block[:count])
        self.block[:] = 0
        self.shard = None

    close = flush


def write_group(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any] | None = None,
                compress: Iterable[str] = ()) -> Path:
    """Write a group from in-memory arrays (all aligned on axis 0) in one atomic step."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"arrays are not aligned on axis 0: {lengths}")
    n = next(iter(lengths.values()), 0)
    compress = set(compress)
    with ShardWriter(path, n, attrs) as w:
        for name, values in arrays.items():
            w.write_all(name, values, compress=name in compress)
    return Path(path)


def open_shard(path: str | os.PathLike) -> "Shard":
    """Open a committed group read-only, with a clear error when it is missing, incomplete or of an
    older format; its arrays' reads fail with a ShardError naming the shard and the array."""
    path = Path(path)
    if not path.exists():
        raise ShardError(f"shard not found: {path}")
    try:
        group = zarr.open_group(store=str(path), mode="r", zarr_format=3)
    except Exception as exc:  # noqa: BLE001 - re-raised with the path
        raise ShardError(f"{path} is not a readable zarr v3 group: {exc}") from exc
    if "checksums" not in group.attrs and "part" in group.attrs:
        part = group.attrs["part"]
        raise ShardError(f"{path} is part {part.get('index')}/{part.get('count')} of a group written by several "
                         f"jobs (config key jobs_per_split): read the group `python -m pipeline assemble` makes")
    if "checksums" not in group.attrs:
        raise ShardError(f"{path} has no checksums in its attrs: it was not written by a complete ShardWriter")
    if group.attrs.get("schema_version") != SCHEMA_VERSION:
        raise ShardError(f"{path} has shard schema_version {group.attrs.get('schema_version')}, this package "
                         f"reads {SCHEMA_VERSION}: delete it and re-run the rule that wrote it")
    return Shard(group, path)


class Shard:
    """A committed group opened read-only: `shard[name]` is a checked `ShardArray`; `attrs`, `in`,
    `array_keys()`, `arrays()` as in zarr."""

    def __init__(self, group: zarr.Group, path: Path):
        self.group, self.path = group, Path(path)
        self.attrs = group.attrs

    def __getitem__(self, name: str) -> "ShardArray":
        if name not in self.group:
            raise KeyError(f"{self.path}: shard has no array {name!r} (it has {sorted(self.group.array_keys())})")
        return ShardArray(self.group[name], self.path, name)

    def __contains__(self, name: str) -> bool:
        return name in self.group

    def array_keys(self):
        return self.group.array_keys()

    def arrays(self):
        return [(name, self[name]) for name in sorted(self.group.array_keys())]


class ShardArray:
    """A zarr array whose reads raise ShardError naming the shard and the array when stored bytes fail
    their crc32c or do not decode. Other attributes (shape, dtype, shards, ...) are the array's."""

    def __init__(self, array: zarr.Array, path: Path, name: str):
        self.array, self.path, self.name = array, Path(path), name

    def __getattr__(self, attr):
        if attr.startswith("__") or attr in ("array", "path", "name"):  # e.g. while unpickling
            raise AttributeError(attr)
        return getattr(self.array, attr)

    def __len__(self) -> int:
        return self.array.shape[0]

    def __getitem__(self, key):
        return self.read(lambda: self.array[key])

    def __array__(self, dtype=None, copy=None):
        values = self[...]
        return values if dtype is None else values.astype(dtype)

    @property
    def oindex(self):
        return _CheckedIndex(self)

    def read(self, fn):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - re-raised naming the shard and the array
            raise ShardError(f"{self.path}: array {self.name!r} is corrupt ({type(exc).__name__}: {exc}); delete "
                             f"the shard and re-run the rule that wrote it") from exc


class _CheckedIndex:
    def __init__(self, arr: ShardArray):
        self.arr = arr

    def __getitem__(self, key):
        rows = np.asarray(key) if isinstance(key, (list, np.ndarray)) else None
        if rows is not None and rows.ndim == 1 and rows.dtype.kind in "iu":
            return self.arr.read(lambda: read_rows(self.arr.array, rows))
        return self.arr.read(lambda: self.arr.array.oindex[key])


def read_rows(array, rows: np.ndarray) -> np.ndarray:
    """`array.oindex[rows]` for a 1-D integer `rows` (any order, repeats allowed), read as slices of
    contiguous runs of the sorted distinct rows. zarr's orthogonal integer indexing of a sharded array
    peaks far above the data it returns (measured: 2.5 GB for 64 rows of 512x256x3 uint8, 25 MB):
    slices keep the peak at the data's size."""
    if len(rows) == 0 or rows.min() < 0:
        return array.oindex[rows]
    distinct = np.unique(rows)
    breaks = np.flatnonzero(np.diff(distinct) != 1) + 1
    runs = [array[int(run[0]):int(run[-1]) + 1] for run in np.split(distinct, breaks)]
    values = runs[0] if len(runs) == 1 else np.concatenate(runs)
    return values[np.searchsorted(distinct, rows)]


class RowReader:
    """Fast reads of single rows of an UNCOMPRESSED sharded array (the training loader's hot path).

    zarr's per-call overhead (~0.5 ms) dominates a one-frame read; for the layout ShardWriter writes
    (sharding_indexed, one row per chunk, inner codecs `bytes` + `crc32c`, index at the end, little
    endian) a row is one `pread` at the offset the shard index gives. The index of each shard file is
    read once and its crc32c checked; each row's crc32c is checked the first time this process reads
    it (a training run reads every frame many times). A mismatch raises ShardError naming the shard and
    the array. Any other layout (compressed, big endian, index at the start) falls back to zarr."""

    def __init__(self, array, path: str | os.PathLike):
        self.array, self.path = array, Path(path)
        self.row_shape, self.dtype = tuple(array.shape[1:]), np.dtype(array.dtype)
        self.rows_per_shard = array.shards[0] if array.shards else None
        self.fast = self.rows_per_shard is not None and self.dtype.byteorder in "=<|" and _plain_sharding(array)
        self._index: dict[int, np.ndarray] = {}
        self._files: dict[int, int] = {}
        self._verified: set[int] = set()

    def __len__(self) -> int:
        return self.array.shape[0]

    def __getitem__(self, row: int) -> np.ndarray:
        row = int(row)
        if not 0 <= row < self.array.shape[0]:
            raise IndexError(f"row {row} outside [0, {self.array.shape[0]}) of {self.path}")
        if not self.fast:
            return np.asarray(self.array[row])
        shard, j = divmod(row, self.rows_per_shard)
        index = self._shard_index(shard)
        if index is None or index[j, 0] == _EMPTY:
            return np.full(self.row_shape, self.array.fill_value, self.dtype)  # never written: the fill value
        data = os.pread(self._files[shard], int(index[j, 1]), int(index[j, 0]))
        if row not in self._verified:
            self._check_crc(data[:-4], data[-4:], f"row {row}")
            self._verified.add(row)
        return np.frombuffer(data, self.dtype, count=int(np.prod(self.row_shape))).reshape(self.row_shape)

    def _check_crc(self, payload: bytes, stored: bytes, what: str) -> None:
        if _crc32c(payload) != stored:
            raise ShardError(f"{self.path.parent}: array {self.path.name!r} is corrupt ({what} fails its crc32c); "
                             f"delete the shard and re-run the rule that wrote it")

    def _shard_index(self, shard: int) -> np.ndarray | None:
        if shard not in self._index:
            key = self.path / "c" / str(shard) / "/".join("0" * (len(self.row_shape)))
            if not key.exists():
                self._index[shard] = None
                return None
            fd = os.open(key, os.O_RDONLY)
            size = os.fstat(fd).st_size
            nbytes = self.rows_per_shard * 16
            raw = os.pread(fd, nbytes + 4, size - nbytes - 4)
            self._check_crc(raw[:-4], raw[-4:], f"the index of shard file {key}")
            self._index[shard] = np.frombuffer(raw[:-4], "<u8").reshape(-1, 2)
            self._files[shard] = fd
        return self._index[shard]

    def __getstate__(self):  # DataLoader workers: reopen files in the worker
        state = dict(self.__dict__)
        state["_index"], state["_files"], state["_verified"] = {}, {}, set()
        return state

    def __del__(self):
        for fd in getattr(self, "_files", {}).values():
            try:
                os.close(fd)
            except OSError:
                pass


_EMPTY = np.uint64(2**64 - 1)


def _little_endian(dtype) -> bool:
    dtype = np.dtype(dtype)
    return dtype.byteorder in "<|" or (dtype.byteorder == "=" and sys.byteorder == "little")


def _write_plain_shard(path: Path, rows: np.ndarray, rows_per_shard: int) -> None:
    """One shard file of the plain layout (`_plain_sharding`) holding `rows` (C-contiguous, little endian):
    row j's bytes + crc32c, ..., then the (rows_per_shard, 2) little-endian uint64 index of (offset, nbytes),
    all ones for the rows the file does not hold, + its crc32c."""
    row_bytes = rows[0].nbytes if len(rows) else 0
    stride = row_bytes + 4
    index = np.full((rows_per_shard, 2), _EMPTY, dtype="<u8")
    index[:len(rows), 0] = np.arange(len(rows), dtype=np.uint64) * np.uint64(stride)
    index[:len(rows), 1] = stride
    flat = rows.reshape(len(rows), -1).view(np.uint8)
    buffers: list = []
    for row in flat:
        buffers += [row.data, _crc32c(row)]
    index_bytes = index.tobytes()
    buffers += [index_bytes, _crc32c(index_bytes)]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while buffers:  # writev may write less than asked (and at most IOV_MAX buffers a call)
            done = os.writev(fd, buffers[:_IOV_MAX])
            if not done and any(len(b) for b in buffers):  # pragma: no cover - a full disk raises instead
                raise OSError(f"{path}: writev wrote nothing of the {sum(len(b) for b in buffers)} bytes left")
            while buffers and done >= len(buffers[0]):
                done -= len(buffers.pop(0))
            if done:
                buffers[0] = memoryview(buffers[0])[done:]
    finally:
        os.close(fd)


_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") and "SC_IOV_MAX" in os.sysconf_names else 1024


def _crc32c(data) -> bytes:
    return np.uint32(google_crc32c.value(data)).astype("<u4").tobytes()


def _plain_sharding(array) -> bool:
    codecs = array.metadata.to_dict().get("codecs", [])
    if len(codecs) != 1 or codecs[0].get("name") != "sharding_indexed":
        return False
    conf = codecs[0]["configuration"]
    inner = [c.get("name") for c in conf.get("codecs", [])]
    little = all(c.get("configuration", {}).get("endian", "little") == "little" for c in conf.get("codecs", []))
    return (inner == ["bytes", "crc32c"] and little and conf.get("index_location", "end") == "end"
            and [c.get("name") for c in conf.get("index_codecs", [])] == ["bytes", "crc32c"]
            and tuple(conf["chunk_shape"]) == (1, *array.shape[1:]))


def n_shards(arr) -> int:
    """Shard files of an array along axis 0 (a string array is one)."""
    if np.dtype(arr.dtype).kind in "OUT":
        return 1
    n = arr.shape[0] if arr.ndim else 0
    return -(-n // _shard_rows(arr))


def _shard_rows(arr) -> int:
    return max(1, arr.shards[0] if arr.shards else arr.chunks[0])


def shard_digests(arr, first: int, stop: int) -> dict[str, str]:
    """{shard index: sha256 of its rows' values in C order} for the shards [first, stop) of an array
    (a string array's one shard: its values as UTF-8, NUL-separated)."""
    if np.dtype(arr.dtype).kind in "OUT":
        if stop <= first:
            return {}
        return {"0": hashlib.sha256("\0".join(str(x) for x in arr[:]).encode("utf-8")).hexdigest()}
    step = _shard_rows(arr)
    return {str(i): hashlib.sha256(np.ascontiguousarray(arr[i * step:(i + 1) * step]).tobytes()).hexdigest()
            for i in range(first, stop)}


def array_header(arr) -> str:
    """What an array's checksum hashes before its shards' digests: `dtype|shape`."""
    return f"{arr.dtype}|{arr.shape}"


def combine_digests(arr, digests: Mapping[str, str], where: str = "") -> str:
    """The array's checksum from the digests of all its shards: sha256 of dtype|shape and the shards'
    sha256s in order (`pipeline.parts.checksum_from_digests`)."""
    return checksum_from_digests(array_header(arr), n_shards(arr), digests, where)


def array_checksum(arr: zarr.Array) -> str:
    """The array's checksum: sha256 over dtype|shape and the sha256 of each shard's values (C order),
    read shard by shard (strings: UTF-8, NUL-separated). Parts written by several jobs combine their
    shards' digests into the same value without reading the data again (`assemble`)."""
    return combine_digests(arr, shard_digests(arr, 0, n_shards(arr)))


def verify(path: str | os.PathLike) -> dict[str, tuple[str, str]]:
    """Recompute every array's checksum; return {name: (stored, actual)} for mismatches (empty = OK).

    A chunk that no longer decodes (corrupt bytes in a compressed or sharded file) is a mismatch too."""
    group = open_shard(path)
    stored = dict(group.attrs["checksums"])
    bad: dict[str, tuple[str, str]] = {}
    names = set(stored) | set(group.array_keys())
    for name in sorted(names):
        if name not in stored or name not in group:
            bad[name] = (stored.get(name, "<missing>"), "<missing>" if name not in group else "<unrecorded>")
            continue
        try:
            actual = array_checksum(group[name])
        except Exception as exc:  # noqa: BLE001 - a decode error is a verification failure
            actual = f"<unreadable: {type(exc).__name__}: {exc}>"
        if actual != stored[name]:
            bad[name] = (stored[name], actual)
    return bad


def digest(path: str | os.PathLike) -> str:
    """Short content digest of a committed group (hash of its stored checksums) or of a file."""
    path = Path(path)
    if path.is_dir():
        group = open_shard(path)
        items = sorted(dict(group.attrs["checksums"]).items())
        return hashlib.sha256(repr(items).encode()).hexdigest()
    return file_sha256(path)


def file_sha256(path: str | os.PathLike, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(bufsize):
            h.update(block)
    return h.hexdigest()


def provenance(rule: str, config: Mapping[str, Any], inputs: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The attrs every group carries: rule name, the config subset that produced it, input digests."""
    return {
        "schema_version": SCHEMA_VERSION,
        "rule": rule,
        "config": _jsonable(dict(config)),
        "inputs": dict(inputs or {}),
        "package_version": __version__,
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value
