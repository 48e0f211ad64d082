"""Progress of the long loops: tqdm's bar on a terminal, plain lines in a log file.

    for batch in progress_bar(batches, desc="translate", unit="batch"): ...
    with progress_bar(total=n, desc="extract", unit="frame") as bar: bar.update(k)

On a terminal this is tqdm's own bar. When the stream is not a terminal (Snakemake sends each job's
stderr to its `log:` file) it is a `LineProgress`: one newline-terminated line at the start (0 %),
at most one every `interval` seconds (30 s), and one at the end, each with the count, the rate
and the ETA, formatted by tqdm, and no carriage returns:

    2025-01-01 12:00:30 epoch 1/20: 40% 120/300 [00:30<00:45, 4.00it/s, loss=0.1234]
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Iterable

from tqdm import tqdm

INTERVAL = 30.0  # seconds between two progress lines in a log file
# No bar: a log line says where the loop is, how fast it goes and when it ends.
LINE_FORMAT = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


class LineProgress(tqdm):
    """A tqdm that writes whole lines at a readable rate instead of redrawing one line with '\\r'.

    `clock` (default `time.monotonic`) decides when the next line is due: tests pass a fake one."""

    monitor_interval = 0  # no monitor thread: lines are written only from update/close

    def __init__(self, iterable=None, *, interval: float = INTERVAL, clock: Callable[[], float] | None = None,
                 **kwargs):
        self.interval = float(interval)
        self._clock = clock or time.monotonic
        self._line_t: float | None = None  # when the last line was written
        self._line_n: float | None = None  # the count it showed
        for knob in ("mininterval", "maxinterval", "miniters", "dynamic_ncols", "ncols", "leave", "position"):
            kwargs.pop(knob, None)
        if kwargs.get("total") is not None or _has_len(iterable):
            kwargs.setdefault("bar_format", LINE_FORMAT if kwargs.get("desc") else LINE_FORMAT[len("{desc}: "):])
        # tqdm calls display() on every update (mininterval 0, miniters 1); display() decides what to write.
        # smoothing 0: the rate is the average since the start (a steadier ETA in a log than the EMA).
        super().__init__(iterable, mininterval=0, maxinterval=0, miniters=1,
                         smoothing=0, ascii=True, **kwargs)
        self._time = self._clock  # elapsed time and rate by the same clock
        self.start_t = self.last_print_t = self._clock()

    def display(self, msg=None, pos=None) -> bool:
        if msg is not None:  # tqdm's own messages (e.g. clearing a line): nothing to clear in a log
            return False
        now = self._clock()
        finished = self.total is not None and self.n >= self.total
        due = self._line_t is None or now - self._line_t >= self.interval
        if self.n == self._line_n or not (due or finished):
            return False
        self._write_line(now)
        return True

    def _write_line(self, now: float) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self.fp.write(f"{stamp} {self.__str__().strip()}\n")
        getattr(self.fp, "flush", lambda: None)()
        self._line_t, self._line_n = now, self.n

    def close(self) -> None:
        """The last line (where the loop ended), unless it was just written; nothing else."""
        if self.disable:
            return
        if self.n != self._line_n:
            self._write_line(self._clock())
        self.disable = True
        self._decr_instances(self)


def _has_len(iterable) -> bool:
    try:
        len(iterable)
    except TypeError:
        return False
    return True


def progress_bar(iterable: Iterable | None = None, *, total: float | None = None, desc: str | None = None,
             unit: str = "it", disable: bool = False, file=None, interval: float = INTERVAL,
             clock: Callable[[], float] | None = None, **kwargs) -> tqdm:
    """tqdm's bar when `file` (default stderr) is a terminal, else a `LineProgress` writing lines to it.

    Other keyword arguments go to tqdm (`leave`, `postfix`, ...; the bar-only ones are dropped for logs)."""
    file = sys.stderr if file is None else file
    isatty = getattr(file, "isatty", None)
    if disable or (isatty is not None and isatty()):
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, file=file, **kwargs)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, file=file, interval=interval, clock=clock,
                        **kwargs)
