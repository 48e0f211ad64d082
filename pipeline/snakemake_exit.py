"""What the workflow does once Snakemake has finished (the Snakefile's `onsuccess` / `onerror`).

Standard library only: the Snakefile loads it by path (`workflow/rules/common.smk`).
"""
from __future__ import annotations

import threading

SCHEDULER_MODULES = "snakemake.scheduling"


def drop_rescheduling_timers() -> int:
    """Cancel the scheduler's pending re-evaluation timers; returns how many were cancelled.

    After each round of jobs it starts, Snakemake 9's scheduler arms a `threading.Timer` as long as its
    job-rate limit's timespan (--max-jobs-per-timespan: 1 s by default, and no shorter span parses).
    Python waits for such a thread at exit, so a run whose last job started less than 1 s before the
    end stayed for the rest of that second (0.3-1.0 s, `benchmarks.parts`). Once the workflow has
    ended no re-evaluation is due. Timers armed by anything but the scheduler are left alone."""
    dropped = 0
    for thread in threading.enumerate():
        function = getattr(thread, "function", None)
        if isinstance(thread, threading.Timer) and getattr(function, "__module__", "").startswith(SCHEDULER_MODULES):
            thread.cancel()
            dropped += 1
    return dropped
