"""The Snakefile's onsuccess/onerror hook: Snakemake's own re-evaluation timer is cancelled at the end of
a run (so the interpreter does not wait out its 1 s), and no other timer is touched."""
from __future__ import annotations

import threading

from snakemake.scheduling.job_scheduler import JobScheduler

from pipeline.snakemake_exit import drop_rescheduling_timers


class _Scheduler:
    """What JobScheduler._schedule_reevalutation uses of the scheduler: the semaphore its timer releases."""

    def __init__(self):
        self._open_jobs = threading.Semaphore(0)


def _timers() -> set:
    return {t for t in threading.enumerate() if isinstance(t, threading.Timer) and t.is_alive()}


def test_the_schedulers_timer_is_cancelled_and_others_are_not():
    scheduler = _Scheduler()
    before = _timers()  # other tests may have left timers of their own running
    JobScheduler._schedule_reevalutation(scheduler, 30)  # the timer Snakemake arms after each round of jobs
    (armed,) = _timers() - before
    other = threading.Timer(30, lambda: None)
    other.start()
    try:
        assert drop_rescheduling_timers() >= 1
        armed.join(timeout=5)
        assert not armed.is_alive()  # cancelled: it ended without waiting its 30 s
        assert not scheduler._open_jobs.acquire(blocking=False)  # and without releasing the scheduler
        assert other.is_alive() and not other.finished.is_set()  # not Snakemake's: left alone
    finally:
        other.cancel()
        other.join(timeout=5)
