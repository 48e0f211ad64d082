"""pipeline.allocator.tune_allocator: freed large blocks are reused instead of mapped (and zeroed) afresh."""
import platform
import subprocess
import sys
import textwrap

import pytest

# A fresh interpreter (the setting is process-wide and other tests turn it on): page faults of writing a
# new 48 MB array, 4 times after a first one. glibc maps every block above 32 MB afresh, so each write
# faults in all of its ~12,300 pages; tuned, the freed block is reused and faults nothing.
PROBE = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from pipeline.allocator import tune_allocator
    mode = sys.argv[1]
    core = getattr(np, "_core", None) or np.core
    core.multiarray._set_madvise_hugepage(False)  # count 4 KB pages, not numpy's 2 MB huge pages
    if mode != "default":
        print("applied", tune_allocator(True))
    if mode == "off":
        tune_allocator(False)
    a = np.ones(48 << 20, np.uint8); del a
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        a = np.ones(48 << 20, np.uint8); del a
    print("faults", (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4)
""")


def _faults(mode: str) -> tuple[float, str]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout
    return float(out.split("faults")[1]), out


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt and its default policy")
def test_tuned_allocator_reuses_freed_large_blocks_and_can_be_switched_back():
    pages = (48 << 20) // 4096
    default, _ = _faults("default")
    tuned, out = _faults("on")
    off, _ = _faults("off")
    assert "applied True" in out
    assert default > 0.9 * pages          # each 48 MB block mapped and faulted in afresh
    assert tuned < 0.02 * pages           # the freed block reused
    assert off > 0.9 * pages              # enable=False restores glibc's thresholds
