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
"""
from __future__ import annotations

import hashlib
import os
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import zarr
import google_crc32c
from zarr.codecs import BloscCodec, BloscShuffle, Crc32cCodec

from pipeline import __version__
from pipeline.atomic import atomic_path

# Snakemake marks directory outputs with a `.snakemake_timestamp` file, which zarr warns about.
warnings.filterwarnings("ignore", message=".*snakemake_timestamp.*")

SCHEMA_VERSION = 2  # 2: every chunk carries a crc32c
# blosc-zstd with byte shuffle: float16/float32 depth compresses well; photos barely do, and
# decode cost dominates their reads (benchmarks/loader.py), so image arrays stay uncompressed.
DEPTH_CODEC = BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.shuffle)
CHECKSUM_CODEC = Crc32cCodec()


class ShardError(RuntimeError):
    """A shard is missing, incomplete or fails verification."""


def default_rows_per_shard(row_nbytes: int, target_bytes: int = 64 << 20) -> int:
    """Rows per shard so that one shard file is about `target_bytes` (at least 1 row)."""
    return max(1, int(target_bytes // max(1, row_nbytes)))


class ShardWriter:
    """Write one group atomically.

        with ShardWriter(path, n_rows, attrs) as w:
            w.create("image", (H, W, 3), "uint8")
            w.write("image", start_row, block)   # whole shards at once is fastest
            w.write_all("frame_id", np.array([...]))
        # on a clean exit: checksums + attrs are stored and the group is renamed to `path`

    On an exception (or SIGKILL) the temporary folder is left as `.<name>.tmp-*` and removed
    by the next writer of the same path; `path` itself is untouched."""

    def __init__(self, path: str | os.PathLike, n_rows: int, attrs: Mapping[str, Any] | None = None):
        self.path = Path(path)
        self.n_rows = int(n_rows)
        if self.n_rows < 0:
            raise ValueError(f"n_rows must be >= 0, got {n_rows}")
        self.attrs = dict(attrs or {})
        self._atomic = atomic_path(self.path, directory=True)
        self.tmp = self._atomic.__enter__()
        self.group = zarr.open_group(store=str(self.tmp), mode="w", zarr_format=3)
        self.rows_per_shard: dict[str, int] = {}

    def create(self, name: str, row_shape: Iterable[int], dtype, *, compress: bool = False,
               rows_per_shard: int | None = None) -> zarr.Array:
        """Create array `name` of shape (n_rows, *row_shape); one row per chunk, many per shard."""
        row_shape = tuple(int(s) for s in row_shape)
        dtype = np.dtype(dtype)
        row_nbytes = int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize
        rps = rows_per_shard or default_rows_per_shard(row_nbytes)
        rps = max(1, min(rps, max(1, self.n_rows)))
        self.rows_per_shard[name] = rps
        return self.group.create_array(
            name,
            shape=(self.n_rows, *row_shape),
            chunks=(1, *row_shape),
            shards=(rps, *row_shape),
            dtype=dtype,
            compressors=[DEPTH_CODEC, CHECKSUM_CODEC] if compress else [CHECKSUM_CODEC],
            fill_value=0,
        )

    def write(self, name: str, start: int, block: np.ndarray) -> None:
        """Write rows [start, start + len(block)) of array `name`."""
        arr = self.group[name]
        block = np.asarray(block)
        if block.shape[1:] != arr.shape[1:]:
            raise ValueError(f"{name}: block rows have shape {block.shape[1:]}, expected {arr.shape[1:]}")
        if start < 0 or start + len(block) > arr.shape[0]:
            raise ValueError(f"{name}: rows [{start}, {start + len(block)}) outside [0, {arr.shape[0]})")
        arr[start:start + len(block)] = block

    def write_all(self, name: str, values: np.ndarray, *, compress: bool = False) -> None:
        """Create and fill a whole (small) array at once; strings become variable-length UTF-8."""
        values = np.asarray(values)
        if len(values) != self.n_rows:
            raise ValueError(f"{name}: {len(values)} rows, expected {self.n_rows}")
        if values.dtype.kind in "US":
            arr = self.group.create_array(name, shape=(self.n_rows,), chunks=(max(1, self.n_rows),),
                                          dtype=str, fill_value="", compressors=[CHECKSUM_CODEC])
            if self.n_rows:
                arr[:] = values.astype(str)
            return
        self.create(name, values.shape[1:], values.dtype, compress=compress, rows_per_shard=max(1, self.n_rows))
        if self.n_rows:
            self.group[name][:] = values

    def rows(self, name: str, row_shape, dtype, *, compress: bool = False,
             rows_per_shard: int | None = None) -> "RowBuffer":
        """Create `name` and return its row writer: `put(start, block)` rows in increasing order, each
        shard is written whole when it is complete (the fast way), `close()` writes the last one."""
        self.create(name, row_shape, dtype, compress=compress, rows_per_shard=rows_per_shard)
        return RowBuffer(self, name)

    def fill_rows(self, name: str, row_shape, dtype, rows_mask: np.ndarray, compute, *, compress: bool = False,
                  desc: str | None = None) -> None:
        """Create `name` and fill the rows where `rows_mask` is true with `compute(rows) -> values`, one whole
        shard at a time; other rows keep the fill value 0."""
        from tqdm import tqdm

        out = self.rows(name, row_shape, dtype, compress=compress)
        step = out.rows_per_shard
        for start in tqdm(range(0, self.n_rows, step), desc=desc or name, unit="shard", mininterval=10):
            rows = np.flatnonzero(rows_mask[start:start + step]) + start
            if len(rows):
                out.put_rows(rows, compute(rows))
        out.close()

    def commit(self) -> Path:
        checksums = {name: array_checksum(self.group[name]) for name in sorted(self.group.array_keys())}
        meta = dict(self.attrs)
        meta.setdefault("schema_version", SCHEMA_VERSION)
        meta.setdefault("package_version", __version__)
        meta["n_rows"] = self.n_rows
        meta["checksums"] = checksums
        meta["written_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.group.attrs.update(_jsonable(meta))
        self._atomic.__exit__(None, None, None)  # renames the folder into place
        return self.path

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
        return self.arr.read(lambda: self.arr.array.oindex[key])


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
        if np.uint32(google_crc32c.value(payload)).tobytes() != stored:
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


def array_checksum(arr: zarr.Array) -> str:
    """sha256 of the array's values in C order, read shard by shard (strings: UTF-8, NUL-separated)."""
    h = hashlib.sha256()
    h.update(f"{arr.dtype}|{arr.shape}".encode())
    n = arr.shape[0] if arr.ndim else 0
    if np.dtype(arr.dtype).kind in "OUT":
        h.update("\0".join(str(x) for x in arr[:]).encode("utf-8"))
        return h.hexdigest()
    step = arr.shards[0] if arr.shards else arr.chunks[0]
    for start in range(0, n, max(1, step)):
        h.update(np.ascontiguousarray(arr[start:start + step]).tobytes())
    return h.hexdigest()


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
