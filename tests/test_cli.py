"""pipeline.cli: the line every job's log ends with (wall time, CPU-seconds, peak RSS), also on failure."""
from __future__ import annotations

import logging
import re
import time

import numpy as np

from pipeline import cli

USAGE = re.compile(r"([\d.]+) s wall, ([\d.]+) CPU-s, peak RSS (\d+) MB$")


def _parse(text: str) -> tuple[float, float, int]:
    m = USAGE.search(text)
    assert m, text
    return float(m.group(1)), float(m.group(2)), int(m.group(3))


def test_usage_counts_this_process_cpu_and_its_peak_memory():
    wall0, cpu0, peak0 = _parse(cli.usage())
    block = np.ones(400 * 2 ** 20, np.uint8)  # 400 MB, every page touched
    t = time.process_time()
    while time.process_time() - t < 0.3:
        pass
    del block
    wall1, cpu1, peak1 = _parse(cli.usage())
    assert cpu1 - cpu0 >= 0.29  # the busy loop, at least
    assert wall1 - wall0 >= 0.29
    assert peak1 >= 400 and peak1 >= peak0  # the high-water mark keeps the freed block


def test_a_failing_verb_still_logs_its_cost(tmp_path, caplog, capsys):
    with caplog.at_level(logging.INFO, logger="pipeline"):
        assert cli.main(["inspect", str(tmp_path / "missing.zarr")]) == 2
    assert "shard not found" in capsys.readouterr().err
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("inspect: "))
    wall, cpu, peak = _parse(line)
    assert wall >= 0 and cpu > 0 and peak > 0
