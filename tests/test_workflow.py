"""End to end: the Snakemake DAG on the embedded demo, in a temporary copy of the workflow.

One run of `eval_tables` (both datasets, every stage), then: a second run does nothing; changing
the resize re-runs extraction and what depends on it, nothing upstream; every shard verifies.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The default config.yaml, lighter still, so the whole DAG fits the CI budget on 2 CPU cores.
FAST = """
demo:
  keyframes_per_scene: 5
  sweeps_between: 1
  robotcar_frames_per_run: 24
cyclegan: {epochs: 1, epochs_decay: 1, ngf: 8, n_blocks: 2}
seg_teacher: {demo_max_steps: 120, demo_minutes: 2}
depth_teacher: {epochs: 1}
train: {epochs: 1, max_steps_per_epoch: 6}
"""


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "snakemake", *args, "--cores", "2", "--configfile", "fast.yaml"],
                          cwd=workdir, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        logs = "\n".join(f"== {p}\n{p.read_text()[-3000:]}" for p in sorted((workdir / "results/logs").rglob("*.log"))
                         if "Error" in p.read_text() or "error" in p.read_text())
        pytest.fail(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}\n{logs}")
    return proc


def job_counts(dry_run_output: str) -> dict[str, int]:
    block = dry_run_output.split("Job stats:")[-1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", block, re.M) if m.group(1) != "total"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    wd = tmp_path_factory.mktemp("wf")
    for name in ("Snakefile", "config.yaml"):
        shutil.copy(REPO / name, wd / name)
    for name in ("workflow", "envs"):
        shutil.copytree(REPO / name, wd / name)
    (wd / "pipeline").symlink_to(REPO / "pipeline")  # the code digests read the package beside the Snakefile
    (wd / "fast.yaml").write_text(FAST)
    snakemake(wd, "eval_tables")
    return wd


@pytest.mark.slow
def test_eval_tables_end_to_end(workdir):
    tables = (workdir / "results/tables/tables.md").read_text()
    assert "(paper)" in tables and "measured" in tables
    for ds, split in [("nuscenes", "test_day"), ("nuscenes", "test_night"), ("robotcar", "test_day"),
                      ("robotcar", "test_night")]:
        m = json.loads((workdir / f"results/eval/full/{ds}_{split}.json").read_text())
        assert m["n_frames"] > 0
        assert 0 < m["depth"]["abs_rel"] < 10
    teacher = json.loads((workdir / "results/eval/teachers/depth_nuscenes_test_day.json").read_text())
    assert teacher["n_frames"] > 0 and "Monodepth2 day teacher" in tables
    assert (workdir / "results/tables/tables.csv").stat().st_size > 0
    assert (workdir / "results/tables/tables.tex").read_text().count("\\begin{tabular}") >= 4
    assert list((workdir / "results/figures").glob("*.png"))


@pytest.mark.slow
def test_every_shard_verifies(workdir):
    from pipeline import shards

    groups = sorted(p for p in (workdir / "results").rglob("*.zarr") if p.is_dir())
    assert len(groups) >= 20
    for g in groups:
        assert shards.verify(g) == {}, g


@pytest.mark.slow
def test_second_run_does_nothing(workdir):
    proc = snakemake(workdir, "eval_tables", "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_changing_the_resize_reruns_extraction_and_downstream_only(workdir):
    (workdir / "resize.yaml").write_text("datasets:\n  nuscenes:\n    width: 224\n")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "eval_tables", "-n", "--cores", "2", "--configfile",
                           "fast.yaml", "resize.yaml"], cwd=workdir, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = job_counts(proc.stdout)
    assert jobs.get("extract_frames") == 4  # the four nuScenes splits, not RobotCar's
    for upstream in ("demo_data", "splits"):
        assert upstream not in jobs
    for downstream in ("gt_depth", "translate", "seg_pseudolabels", "train_student", "evaluate"):
        assert jobs.get(downstream, 0) >= 1, (downstream, jobs)
    extracted = re.findall(r"rule extract_frames:.*?wildcards: ds=(\w+)", proc.stdout, re.S)
    assert extracted and set(extracted) == {"nuscenes"}, extracted
