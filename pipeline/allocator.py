"""glibc's large-block policy for stages that allocate big, short-lived buffers (activations, decoded
frames, whole zarr shards): `tune_allocator()` keeps freed memory for reuse instead of mapping each
block afresh and paying its page faults (the kernel zeroes every new page) on every use."""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["tune_allocator"]

_ALLOCATOR_TUNED = False


def tune_allocator(enable: bool = True, threshold_bytes: int = 1 << 30) -> bool:
    """Linux/glibc only: serve allocations up to `threshold_bytes` from the heap and keep up to that much
    freed memory (mallopt M_MMAP_THRESHOLD and M_TRIM_THRESHOLD). By default glibc maps every block above
    32 MB afresh and returns freed heap above 64 MB to the OS, so each large activation pays its page
    faults again on every forward pass. Process-wide; peak memory is unchanged, but the process keeps its
    peak heap instead of shrinking between batches. `enable=False` restores the thresholds glibc's own
    adjustment settles at in a long-running process (32 MB, 64 MB) and trims the heap. Returns True when
    the setting was applied (False on other C libraries / platforms)."""
    global _ALLOCATOR_TUNED
    if enable and _ALLOCATOR_TUNED:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    mmap_at, trim_at = (int(threshold_bytes),) * 2 if enable else (32 << 20, 64 << 20)
    ok = mallopt(m_mmap_threshold, mmap_at) == 1 and mallopt(m_trim_threshold, trim_at) == 1
    if not enable:
        malloc_trim(0)
    _ALLOCATOR_TUNED = bool(ok) and enable
    return bool(ok)
