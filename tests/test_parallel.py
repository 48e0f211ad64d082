"""`pipeline.parallel.ordered_map`: order, the bounded look-ahead that keeps per-frame stages flat in
memory, errors and early close."""
from __future__ import annotations

import threading
import time

import pytest

from pipeline.parallel import ordered_map


def test_results_in_order_whatever_finishes_first():
    def slow_evens(i):
        time.sleep(0.02 if i % 2 == 0 else 0.0)
        return i * i

    assert list(ordered_map(slow_evens, range(20), threads=3)) == [i * i for i in range(20)]
    assert list(ordered_map(slow_evens, [], threads=2)) == []


@pytest.mark.parametrize("threads, ahead", [(1, None), (2, None), (2, 1), (3, 5)])
def test_never_more_than_ahead_items_started_beyond_the_consumer(threads, ahead):
    started, lock = [0], threading.Lock()

    def work(i):
        with lock:
            started[0] += 1
        return i

    limit = ahead if ahead is not None else 2 * threads
    for consumed, value in enumerate(ordered_map(work, range(50), threads=threads, ahead=ahead), 1):
        assert value == consumed - 1
        time.sleep(0.002)  # let the workers run as far as they are allowed
        with lock:
            assert started[0] - consumed <= limit, (started[0], consumed)
    assert started[0] == 50


def test_error_of_an_item_reaches_the_consumer_at_its_place():
    def fail_at_3(i):
        if i == 3:
            raise ValueError("frame 3 is corrupt")
        return i

    got = []
    with pytest.raises(ValueError, match="frame 3 is corrupt"):
        for v in ordered_map(fail_at_3, range(10), threads=2):
            got.append(v)
    assert got == [0, 1, 2]


def test_closing_early_cancels_what_has_not_started():
    """One thread, 4 ahead: when the consumer holds item 0, item 1 runs and 2-4 wait. Closing waits for
    item 1 only; without the cancel it would run 2, 3 and 4 too."""
    started, lock = [], threading.Lock()

    def work(i):
        with lock:
            started.append(i)
        time.sleep(0.2)
        return i

    it = ordered_map(work, range(1000), threads=1, ahead=4)
    assert next(it) == 0
    it.close()
    assert started == [0, 1]
