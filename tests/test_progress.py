"""pipeline.progress: tqdm's bar on a terminal, newline-terminated lines at a bounded rate in a log file."""
from __future__ import annotations

import io
import re

from tqdm import tqdm

from pipeline.progress import LineProgress, progress_bar


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (.*)$")


def lines_of(buf: io.StringIO) -> list[str]:
    text = buf.getvalue()
    assert "\r" not in text and text.endswith("\n")
    out = text.splitlines()
    assert all(LINE.match(line) for line in out), out
    return [LINE.match(line).group(1) for line in out]


def test_a_log_gets_whole_lines_at_start_every_interval_and_end():
    clock, buf = FakeClock(), io.StringIO()
    with progress_bar(total=100, desc="extract", unit="frame", file=buf, clock=clock, interval=30) as bar:
        assert isinstance(bar, LineProgress)
        for _ in range(100):
            clock.t += 1.0  # one frame a second: a line is due every 30 frames
            bar.update(1)
    assert lines_of(buf) == [
        "extract:   0% 0/100 [00:00<?, ?frame/s]",
        "extract:  30% 30/100 [00:30<01:10,  1.00frame/s]",
        "extract:  60% 60/100 [01:00<00:40,  1.00frame/s]",
        "extract:  90% 90/100 [01:30<00:10,  1.00frame/s]",
        "extract: 100% 100/100 [01:40<00:00,  1.00frame/s]",
    ]


def test_updates_faster_than_the_interval_write_nothing_in_between():
    clock, buf = FakeClock(), io.StringIO()
    bar = progress_bar(total=1000, desc="d", file=buf, clock=clock, interval=30)
    for _ in range(999):
        clock.t += 0.01  # 999 updates in 10 s: no line due
        bar.update(1)
        bar.set_postfix(loss="0.5")
    assert len(lines_of(buf)) == 1  # only the 0 % line
    clock.t += 25.0  # 34.99 s since the last line
    bar.update(1)  # 100 %: due anyway
    bar.close()  # nothing new to say: no duplicate
    assert lines_of(buf)[1:] == ["d: 100% 1000/1000 [00:34<00:00, 28.58it/s, loss=0.5]"]


def test_a_loop_that_stops_early_writes_where_it_stopped_and_iterables_without_len_count():
    clock, buf = FakeClock(), io.StringIO()
    bar = progress_bar(total=10, desc="epoch 1/2", file=buf, clock=clock, leave=False, dynamic_ncols=True)
    clock.t += 6.0
    bar.update(3)
    bar.close()
    assert lines_of(buf) == ["epoch 1/2:   0% 0/10 [00:00<?, ?it/s]", "epoch 1/2:  30% 3/10 [00:06<00:14,  2.00s/it]"]
    buf = io.StringIO()
    seen = []
    for x in progress_bar((i for i in range(4)), desc="gen", file=buf, clock=clock, interval=1):
        clock.t += 1.0
        seen.append(x)
    assert seen == [0, 1, 2, 3]
    assert lines_of(buf) == ["gen: 0it [00:00, ?it/s]", "gen: 1it [00:01,  1.00it/s]", "gen: 2it [00:02,  1.00it/s]",
                             "gen: 3it [00:03,  1.00it/s]", "gen: 4it [00:04,  1.00it/s]"]


def test_a_terminal_gets_tqdms_bar_and_disable_writes_nothing():
    term = Terminal()
    bar = progress_bar(total=3, desc="t", file=term)
    assert type(bar) is tqdm
    bar.update(3)
    bar.close()
    assert "\r" in term.getvalue()
    buf = io.StringIO()
    assert list(progress_bar(range(3), file=buf, disable=True)) == [0, 1, 2] and buf.getvalue() == ""


def test_without_a_description_a_line_starts_with_the_percentage():
    clock, buf = FakeClock(), io.StringIO()
    assert list(progress_bar(range(2), file=buf, clock=clock)) == [0, 1]
    assert lines_of(buf) == ["0% 0/2 [00:00<?, ?it/s]", "100% 2/2 [00:00<?, ?it/s]"]  # no time passed: no rate
