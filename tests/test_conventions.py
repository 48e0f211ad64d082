"""Workflow conventions, checked as CI runs them: `snakemake --lint` and `snakefmt --check` are clean,
the LICENSE matches pyproject.toml, and every rule has a log and a benchmark file."""
from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO, copy_workflow


def test_snakemake_lint_is_clean(tmp_path):
    wd = copy_workflow(tmp_path / "wf")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=wd, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_snakefmt_leaves_the_workflow_unchanged():
    files = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    proc = subprocess.run([sys.executable, "-m", "snakefmt", "--check", *map(str, files)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_every_rule_with_a_shell_has_a_log_and_a_benchmark():
    rules = 0
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"^rule ", smk.read_text(), flags=re.M)[1:]:
            if "shell:" in block:
                rules += 1
                name = block.split(":", 1)[0]
                assert "\n    log:" in block and "\n    benchmark:" in block, name
    assert rules >= 15


def test_license_matches_pyproject():
    text = (REPO / "LICENSE").read_text()
    assert 'license = { text = "MIT" }' in (REPO / "pyproject.toml").read_text()
    assert text.startswith("MIT License") and "Permission is hereby granted, free of charge" in text


def test_data_stages_do_not_import_torch():
    # extract_frames, gt_depth and splits run once per split and dataset: importing torch (~4 CPU-s)
    # in each of them was a fixed cost of the demo's critical path (pipeline.projection is numpy only)
    code = ("import sys\n"
            "import pipeline.datasets.nuscenes, pipeline.datasets.robotcar_dataset, pipeline.datasets.ground_truth\n"
            "import pipeline.datasets.frames, pipeline.projection\n"
            "import pipeline.verbs.extract_frames, pipeline.verbs.gt_depth, pipeline.verbs.splits\n"
            "from pipeline.datasets.adapter import open_dataset\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stdout
