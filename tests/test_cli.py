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


def test_the_entry_point_keeps_exit_status_output_and_log_with_its_collector_settings(tmp_path):
    """`python -m pipeline` tunes the garbage collector and freezes the heap before exiting
    (pipeline/__main__.py): the process must still flush what it printed and logged and return the
    verb's status."""
    import subprocess
    import sys

    from pipeline.shards import ShardWriter

    with ShardWriter(tmp_path / "s.zarr", 5, {"rule": "test"}) as w:
        w.write_all("value", np.arange(5, dtype=np.int32) * 3)
    script = ("import gc, runpy, sys; sys.argv = ['pipeline', *sys.argv[1:]]\n"
              "try:\n    runpy.run_module('pipeline', run_name='__main__')\n"
              "finally:\n    print('threshold', gc.get_threshold(), 'frozen', gc.get_freeze_count() > 0)")
    ok = subprocess.run([sys.executable, "-c", script, "inspect", str(tmp_path / "s.zarr")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "value" in ok.stdout and "(5,)" in ok.stdout and "max 12" in ok.stdout
    assert "threshold (50000, 20, 20) frozen True" in ok.stdout
    assert re.search(r"inspect: .* s wall, .* CPU-s, peak RSS \d+ MB", ok.stderr)
    missing = subprocess.run([sys.executable, "-m", "pipeline", "inspect", str(tmp_path / "missing.zarr")],
                             capture_output=True, text=True)
    assert missing.returncode == 2
    assert "shard not found" in missing.stderr and "inspect: " in missing.stderr
