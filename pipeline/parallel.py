"""Ordered parallel map with a bounded look-ahead: the per-frame stages' way to use a job's threads
without holding a split (or a whole shard of results) in memory."""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], items: Iterable[T], *, threads: int, ahead: int | None = None) -> Iterator[R]:
    """Yield fn(item) for every item, in order, computed on `threads` threads. At most `ahead` items
    (default 2 x threads) are submitted beyond the one the consumer holds, so memory holds `ahead` + 1
    results whatever the number of items. Closing the iterator early cancels what has not started."""
    threads = max(1, int(threads))
    ahead = max(1, int(ahead if ahead is not None else 2 * threads))
    items = iter(items)
    pending: deque = deque()
    pool = ThreadPoolExecutor(threads)
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= ahead:
                break
        while pending:
            result = pending.popleft().result()
            for item in items:  # refill before handing the result over: workers keep going meanwhile
                pending.append(pool.submit(fn, item))
                break
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
