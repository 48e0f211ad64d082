"""`python -m pipeline inspect`: what is inside a shard, whether it is intact, and what one row looks like."""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from pipeline import cityscapes, shards
from pipeline.atomic import atomic_path
from pipeline.evaluate.figures import colorize_depth

_STAT_ROWS = 16  # value statistics are taken over at most this many evenly spaced rows


def describe(path: str | Path) -> str:
    group = shards.open_shard(path)
    lines = [f"{path}  (zarr v3 group, {group.attrs.get('n_rows', '?')} rows)"]
    lines.append(f"{'array':<14}{'shape':<24}{'dtype':<10}{'chunk':<22}{'shard':<22}{'codecs':<26}stats")
    for name in sorted(group.array_keys()):
        arr = group[name]
        codecs = ",".join(type(c).__name__.replace("Codec", "") for c in (arr.compressors or ())) or "none"
        shard = str(arr.shards) if arr.shards else "-"
        dtype = "str" if np.dtype(arr.dtype).kind in "OUT" else str(arr.dtype)
        lines.append(f"{name:<14}{str(arr.shape):<24}{dtype:<10}{str(arr.chunks):<22}{shard:<22}{codecs:<26}"
                     f"{_stats(arr)}")
    attrs = {k: v for k, v in group.attrs.items() if k != "checksums"}
    lines.append("attrs:")
    lines.append(json.dumps(attrs, indent=2, default=str)[:6000])
    return "\n".join(lines)


def _stats(arr) -> str:
    try:
        return _sample_stats(arr)
    except shards.ShardError:
        return "unreadable (corrupt bytes: see --verify)"


def _sample_stats(arr) -> str:
    n = arr.shape[0] if arr.ndim else 0
    if n == 0:
        return "empty"
    rows = np.unique(np.linspace(0, n - 1, min(n, _STAT_ROWS)).astype(int))
    if np.dtype(arr.dtype).kind in "OUT":
        vals = arr[:]
        return f"e.g. {vals[0]!r}"
    sample = np.asarray(arr.oindex[rows])
    if sample.dtype == bool:
        return f"true: {int(arr[:].sum())}/{n}"
    s = sample.astype(np.float64)
    return f"min {s.min():.4g} max {s.max():.4g} mean {s.mean():.4g} (rows {len(rows)}/{n})"


def verify_report(path: str | Path) -> dict:
    bad = shards.verify(path)
    if not bad:
        return {"ok": True, "text": "verify: OK, every array matches its stored checksum"}
    lines = ["verify: FAILED"]
    for name, (stored, actual) in bad.items():
        lines.append(f"  {name}: stored {stored[:16]}..., actual {actual[:60]}")
    return {"ok": False, "text": "\n".join(lines)}


def preview(path: str | Path, index: int, out: str | Path) -> Path:
    """Render row `index`: images as they are, depth with a colour map, labels with the Cityscapes palette.

    Each array of the row becomes one panel; panels are stacked vertically at the width of the first."""
    group = shards.open_shard(path)
    n = group.attrs.get("n_rows", 0)
    if not 0 <= index < n:
        raise ValueError(f"--index {index} is outside [0, {n}) for {path}")
    panels = []
    for name in sorted(group.array_keys()):
        arr = group[name]
        if arr.ndim < 3:
            continue
        if max(arr.shape[1:3]) <= 4:  # per-row matrices such as K are not images
            continue
        row = np.asarray(arr[index])
        panel = _render_panel(name, row)
        if panel is not None:
            panels.append(_caption(panel, f"{name} [{index}]"))
    if not panels:
        raise ValueError(f"{path} has no image-like arrays to preview")
    width = panels[0].shape[1]
    panels = [cv2.resize(p, (width, max(1, round(p.shape[0] * width / p.shape[1]))), interpolation=cv2.INTER_NEAREST)
              for p in panels]
    ok, png = cv2.imencode(".png", cv2.cvtColor(np.concatenate(panels, axis=0), cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"could not encode the preview of {path} as PNG")
    with atomic_path(out) as tmp:
        tmp.write_bytes(png.tobytes())
    return Path(out)


def _render_panel(name: str, row: np.ndarray) -> np.ndarray | None:
    if name in ("labels", "seg") or name.endswith("class"):  # label maps; top-k: the top-1 class
        return cityscapes.colorize(row[..., 0] if row.ndim == 3 else row)
    if name.endswith("prob"):  # top-k probabilities x 255: the top-1 as grey levels
        return cv2.cvtColor(np.ascontiguousarray(row[..., 0]), cv2.COLOR_GRAY2RGB)
    if row.ndim == 3 and row.shape[-1] == 3 and row.dtype == np.uint8:
        return row
    if row.ndim == 2 and np.issubdtype(row.dtype, np.floating):
        return colorize_depth(row)
    return None


def _caption(img: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((18, img.shape[1], 3), 32, np.uint8)
    cv2.putText(bar, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([bar, img], axis=0)


# ---- a folder of shards: `inspect results/`
def is_shard_dir(path: str | Path) -> bool:
    """A zarr group folder (what `open_shard` opens), as opposed to a folder that holds shards."""
    return (Path(path) / "zarr.json").is_file()


def find_shards(root: str | Path) -> list[Path]:
    """Every shard under `root` (folders holding a zarr.json, or named *.zarr), not descending into them;
    hidden folders (a writer's `.name.tmp-*` temporaries) are left out."""
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        if here != Path(root) and (is_shard_dir(here) or here.suffix == ".zarr"):
            found.append(here)
            dirnames[:] = []
    return found


def disk_usage(path: Path) -> int:
    """Bytes allocated on disk for the files under `path` (as `du`; hard-linked files counted once)."""
    seen, total = set(), 0
    for p in path.rglob("*"):
        st = p.lstat()
        if p.is_file() and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def tree_report(root: str | Path) -> dict:
    """One line per shard under `root`: kind (its stage folder), rows, size on disk, when it was written, and
    whether every array matches its stored checksum. {"text", "ok", "shards": [...]}."""
    root = Path(root)
    rows = []
    for path in find_shards(root):
        row = {"path": str(path.relative_to(root)), "kind": path.parent.name, "rows": None,
               "bytes": disk_usage(path), "written_at": None, "ok": False, "problem": None}
        try:
            group = shards.open_shard(path)
            row.update(rows=group.attrs.get("n_rows"), written_at=group.attrs.get("written_at"))
            bad = shards.verify(path)
            row["ok"] = not bad
            row["problem"] = ", ".join(
                f"array '{name}' " + ("is unreadable (corrupt bytes)" if actual.startswith("<unreadable")
                                      else "does not match its stored checksum")
                for name, (_, actual) in bad.items()) or None
        except shards.ShardError as exc:
            row["problem"] = str(exc)
        rows.append(row)
    failed = [r for r in rows if not r["ok"]]
    width = max([len(r["path"]) for r in rows] + [5])
    lines = [f"{'shard':<{width}}  {'kind':<14}{'rows':>6}  {'on disk':>10}  {'written (UTC)':<21}status"]
    for r in rows:
        lines.append(f"{r['path']:<{width}}  {r['kind']:<14}{r['rows'] if r['rows'] is not None else '?':>6}  "
                     f"{_mb(r['bytes']):>10}  {r['written_at'] or '?':<21}"
                     f"{'OK' if r['ok'] else 'FAILED: ' + (r['problem'] or '')}")
    total = sum(r["bytes"] for r in rows)
    lines.append(f"{len(rows)} shards under {root}, {_mb(total)} on disk: "
                 + (f"{len(failed)} FAILED verification" if failed else "every one verifies") if rows
                 else f"no shards under {root}")
    return {"text": "\n".join(lines), "ok": not failed, "shards": rows}


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
