"""Atomic writes: every file or folder the pipeline produces appears complete, or not at all.

    with atomic_path(dst) as tmp:            # a file: write `tmp`, it becomes `dst` on success
        torch.save(state, tmp)
    with atomic_path(dst, directory=True) as tmp:   # a folder: fill `tmp`, it replaces `dst` on success

The temporary lives beside `dst` as `.<name>.tmp-<pid>-<random>`, so the final rename is atomic on
one file system. On an exception (or SIGKILL) `dst` is untouched; a dead writer's temporaries are
removed by the next writer of the same path (a live writer's are left alone).
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(dst: str | os.PathLike, *, directory: bool = False) -> Iterator[Path]:
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(dst)
    tmp = dst.parent / f".{dst.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    if directory:
        tmp.mkdir()
    try:
        yield tmp
        replace(tmp, dst)
    finally:
        _remove(tmp)


def replace(src: Path, dst: Path) -> None:
    """Move the finished `src` (file or folder) to `dst`; an existing `dst` is replaced only after success."""
    src, dst = Path(src), Path(dst)
    if src.is_dir() and dst.exists():
        trash = dst.parent / f".{dst.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(dst, trash)
        os.replace(src, dst)
        _remove(trash)
    else:
        os.replace(src, dst)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Strict JSON (no NaN), indented, written atomically."""
    return write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def remove_stale_temporaries(dst: Path) -> None:
    for stale in Path(dst).parent.glob(f".{Path(dst).name}.tmp-*"):
        pid = stale.name.split(".tmp-")[-1].split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and _pid_alive(int(pid)):
            continue  # another live writer of the same path: leave it alone
        _remove(stale)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
