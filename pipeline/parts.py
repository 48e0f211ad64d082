"""A group written by several jobs (config key `jobs_per_split`): `assemble` joins the parts, and the
bookkeeping it shares with the writer in `pipeline.shards` lives here: `ShardError`, an array's
checksum from its shards' digests, and `Summary`, which merges exactly.

Standard library only. The assembly reads the parts' `zarr.json` files and hard-links their shard
files; it never opens an array. So its job takes 0.07 s between Snakemake's start and finish lines
(0.26 s when it imported zarr): on a small split that decides whether N jobs beat one
(`benchmarks.parts`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from fractions import Fraction
from pathlib import Path
from typing import Mapping, Sequence

from pipeline.atomic import atomic_path

log = logging.getLogger(__name__)


class ShardError(RuntimeError):
    """A shard is missing, incomplete or fails verification."""


def checksum_from_digests(header: str, n_shards: int, digests: Mapping[str, str], where: str = "") -> str:
    """An array's checksum: sha256 of its `header` (`dtype|shape`, `pipeline.shards.array_header`) and
    the sha256s of its `n_shards` shards in order, given as {shard index: hex digest}."""
    if sorted(digests, key=int) != [str(i) for i in range(n_shards)]:
        missing = sorted(set(map(str, range(n_shards))) - set(digests), key=int)
        raise ShardError(f"{where}: digests of shards {missing or sorted(digests, key=int)} missing or extra "
                         f"(expected shards 0..{n_shards - 1})")
    h = hashlib.sha256(header.encode())
    for i in range(n_shards):
        h.update(bytes.fromhex(digests[str(i)]))
    return h.hexdigest()


class Summary:
    """Mean and max of many non-negative values added batch by batch (`add(sum, max, count)`), such as
    a per-pixel statistic over a split. The sum is kept as an exact fraction, so parts of a split
    written by several jobs merge into exactly the figures one job computes."""

    def __init__(self, count_key: str = "count", **static):
        self.count_key, self.static = count_key, dict(static)
        self.total, self.peak, self.count = Fraction(0), 0.0, 0

    def add(self, total, peak, count: int) -> None:
        self.total += Fraction(float(total))
        self.peak = max(self.peak, float(peak))
        self.count += int(count)

    def merge(self, other: "Summary") -> "Summary":
        self.total += other.total
        self.peak = max(self.peak, other.peak)
        self.count += other.count
        return self

    def report(self) -> dict:
        mean = float(self.total / self.count) if self.count else 0.0
        return {**self.static, "mean": mean, "max": self.peak, self.count_key: self.count}

    def to_json(self) -> dict:
        return {"static": self.static, "count_key": self.count_key, "total": str(self.total), "max": self.peak,
                "count": self.count}

    @classmethod
    def from_json(cls, data: Mapping) -> "Summary":
        out = cls(data["count_key"], **data["static"])
        out.total, out.peak, out.count = Fraction(data["total"]), float(data["max"]), int(data["count"])
        return out


def assemble(parts: Sequence[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Join the parts of one group (each committed by a `ShardWriter` with a `Part`) into `out`.

    Every shard file is hard-linked from its part (copied only where the file system has no hard links);
    the arrays' metadata is part 0's; the attrs are the parts' common attrs with `n_rows`, `checksums`
    (combined from the parts' shard digests) and the merged summaries: the group one job would have
    written. Only the parts' zarr.json files are read. Parts must be complete (all COUNT of them), agree
    on every attr and array, and not overlap; otherwise a ShardError names the part. Atomic like a writer."""
    parts = [Path(p) for p in parts]
    if not parts:
        raise ValueError("assemble: no parts given")
    read = [_read_part(path) for path in parts]
    order = sorted(range(len(parts)), key=lambda i: read[i][0]["part"]["index"])
    parts, read = [parts[i] for i in order], [read[i] for i in order]
    infos = [attrs["part"] for attrs, _ in read]
    count = infos[0]["count"]
    if [i["index"] for i in infos] != list(range(count)) or any(i["count"] != count for i in infos):
        got = ", ".join(f"{info['index']}/{info['count']} {path}" for info, path in zip(infos, parts))
        raise ShardError(f"expected parts 0..{count - 1} of {count}, got {got}")
    common, arrays = _common_attrs(read[0][0]), read[0][1]
    for path, (attrs, own_arrays) in zip(parts[1:], read[1:]):
        own = _common_attrs(attrs)
        if own != common:
            keys = sorted(k for k in set(own) | set(common) if own.get(k) != common.get(k))
            raise ShardError(f"{path}: attrs {keys} differ from those of {parts[0]}: parts of different runs")
        if own_arrays != arrays:
            raise ShardError(f"{path}: arrays differ from those of {parts[0]}: parts of different runs")
    meta = dict(common)
    meta["checksums"] = {}
    for name in sorted(arrays):
        digests: dict[str, str] = {}
        for path, info in zip(parts, infos):
            own = info["digests"].get(name, {})
            overlap = sorted(set(own) & set(digests), key=int)
            if overlap:
                raise ShardError(f"{path}: shards {overlap} of array {name!r} are in another part too")
            digests.update(own)
        layout = infos[0]["layout"][name]
        meta["checksums"][name] = checksum_from_digests(layout["header"], layout["shards"], digests,
                                                        f"{out}: array {name!r}")
    summaries: dict[str, Summary] = {}
    for info in infos:
        for key, data in info.get("summaries", {}).items():
            part_summary = Summary.from_json(data)
            summaries[key] = summaries[key].merge(part_summary) if key in summaries else part_summary
    meta.update({key: s.report() for key, s in summaries.items()})
    meta["written_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with atomic_path(out, directory=True) as tmp:
        # the group's zarr.json as zarr writes it (`GroupMetadata.to_bytes`: indent 2, NaN allowed)
        group = {"attributes": meta, "zarr_format": 3, "node_type": "group"}
        (tmp / "zarr.json").write_text(json.dumps(group, indent=2, allow_nan=True))
        copied = 0
        for name in sorted(arrays):
            (tmp / name).mkdir(parents=True)
            shutil.copyfile(parts[0] / name / "zarr.json", tmp / name / "zarr.json")
            for part in parts:
                for src in sorted((part / name / "c").rglob("*")) if (part / name / "c").is_dir() else []:
                    if src.is_file():
                        copied += _link(src, tmp / name / src.relative_to(part / name))
    if copied:
        log.warning("%s: %d shard files copied (the file system has no hard links)", out, copied)
    return Path(out)


def _read_part(path: Path) -> tuple[dict, dict[str, dict]]:
    """(the group's attrs, {array name: its zarr.json}) of a committed part, from its zarr.json files."""
    if not path.exists():
        raise ShardError(f"part not found: {path}")
    try:
        group = json.loads((path / "zarr.json").read_text())
        if group.get("zarr_format") != 3 or group.get("node_type") != "group":
            raise ValueError(f"zarr_format {group.get('zarr_format')}, node_type {group.get('node_type')!r}")
        arrays = {}
        for child in sorted(path.iterdir()):
            if (child / "zarr.json").is_file():
                meta = json.loads((child / "zarr.json").read_text())
                if meta.get("node_type") == "array":
                    arrays[child.name] = meta
    except (OSError, ValueError) as exc:
        raise ShardError(f"{path} is not a readable zarr v3 group: {exc}") from exc
    attrs = group.get("attributes", {})
    info = attrs.get("part")
    if not info:
        raise ShardError(f"{path} is not a part of a group (no `part` in its attrs)")
    if "layout" not in info:
        raise ShardError(f"{path} is a part written by an older version of the package (no `layout` in its "
                         f"`part` attrs): delete it and run its job again")
    return attrs, arrays


def _common_attrs(attrs: Mapping) -> dict:
    """The attrs every part of one run shares (all but its own `part` and `written_at`)."""
    return {k: v for k, v in attrs.items() if k not in ("part", "written_at")}


def _link(src: Path, dst: Path) -> int:
    """Hard-link `src` to `dst` (1 if it had to be copied instead)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        raise ShardError(f"{src}: shard file {dst.name} is in another part too")
    try:
        os.link(src, dst)
        return 0
    except OSError:
        shutil.copy2(src, dst)
        return 1
