"""The SLURM profile against a real SLURM: a single-node cluster with two fake GPUs on this machine.

`.ci/slurm.sh up` installs Debian's SLURM and munge when missing, starts munged, slurmctld and
slurmd, with partitions `cpu` and `gpu` as named in workflow/profiles/slurm/partitions.yaml. The
demo DAG (light overlay, RobotCar only) runs through `--profile workflow/profiles/slurm` up to one
CycleGAN translation: CPU rules demo_data, splits, extract_frames; GPU rules train_cyclegan (1 GPU)
and translate (2 GPUs here). Then, for every job of the dry run: it was submitted (the plugin's
log names its SLURM job id) and completed (`scontrol show job`: there is no accounting database,
and the cluster keeps finished jobs there for an hour); a GPU rule's job went to the `gpu`
partition and was allocated its GPUs (the scheduler's JOB_GRES) and its tasks saw them
(CUDA_VISIBLE_DEVICES, written by the cluster's TaskProlog); a CPU rule's job went to `cpu` with no
GPU in either. `.ci/slurm.sh down` stops the daemons it started, by their pids.

Runs as root only (apt-get, daemons); skipped elsewhere, except under CI=true where it must run.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from conftest import REPO, copy_workflow
from test_workflow import FAST  # the light overlay of the end-to-end test

SLURM_SH = REPO / ".ci" / "slurm.sh"
TARGET = "results/robotcar/synth/train_day.zarr"  # demo_data -> splits -> extract_frames x2 -> train_cyclegan -> translate
# One dataset; one thread per extraction job, so the two fit the 2-CPU node side by side.
ONE_DATASET = "datasets:\n  nuscenes: {enabled: false}\nextract: {threads: 1}\n"

# One rule asks for both GPUs of the node: an N-GPU request end to end (what train_student does with
# train.gpus: `gpu=N` -> sbatch --gpus=N -> the jobstep's srun --gpus=N -> CUDA_VISIBLE_DEVICES=0,1),
# without the cost of training the student. A test-only override: the profile sets no GPU counts.
TWO_GPUS = ["--set-resources", "translate:gpu=2"]
# Overrides for this local cluster only (the shipped profile stays a real cluster's): no accounting
# database, so status from squeue and no account; first status check after 5 s; logs kept.
LOCAL = ["--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "5",
         "--slurm-no-account", "--slurm-keep-successful-logs", "--latency-wait", "10", "--retries", "0"]

pytestmark = pytest.mark.slurm


def _skip_or_fail(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the SLURM test: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        _skip_or_fail("needs root (installs SLURM with apt-get, starts its daemons)")
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        _skip_or_fail("SLURM is not installed and there is no apt-get to install it")
    state = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "SLURM_CONF": str(state / "slurm.conf")}
    up = subprocess.run(["bash", str(SLURM_SH), "up", str(state)], capture_output=True, text=True, env=env,
                        timeout=600)
    try:
        assert up.returncode == 0, f"slurm.sh up failed:\n{up.stdout}\n{up.stderr}"
        yield {"env": env, "state": state}
    finally:
        subprocess.run(["scancel", "--full", "--user", "root"], env=env, capture_output=True)  # our cluster only
        down = subprocess.run(["bash", str(SLURM_SH), "down", str(state)], capture_output=True, text=True, env=env)
        assert down.returncode == 0, down.stderr
        for name in ("slurmctld", "slurmd", "munged"):
            assert not (state / f"{name}.pid").exists()


def scontrol_job(job_id: str, env: dict) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-d", job_id], capture_output=True, text=True, env=env,
                         check=True).stdout
    return dict(re.findall(r"(?:^|\s)([A-Za-z_/:]+)=(\S*)", out))


def dry_run_jobs(stdout: str) -> list[dict]:
    """(rule, wildcards, gpu count) of each job that a dry run lists."""
    jobs = []
    for block in re.split(r"\n(?=\[[^\]]+\]\nrule )", stdout):
        m = re.search(r"^rule (\w+):", block, re.M)
        if not m:
            continue
        wc = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        res = re.search(r"^\s+resources: (.*)$", block, re.M)
        gpu = re.search(r"(?:^|, )gpu=(\d+)", res.group(1)) if res else None
        jobs.append({"rule": m.group(1), "wildcards": wc.group(1) if wc else "",
                     "gpu": int(gpu.group(1)) if gpu else 0})
    return jobs


def key(job: dict) -> tuple[str, str]:
    """A dry-run job as the plugin names it in the SLURM job's comment: rule, wildcard values joined by _."""
    values = [kv.split("=", 1)[1] for kv in job["wildcards"].split(", ")] if job["wildcards"] else []
    return job["rule"], "_".join(values)


def test_demo_dag_through_the_slurm_profile(cluster, tmp_path):
    env = {**cluster["env"], "PYTHONUNBUFFERED": "1"}
    wd = copy_workflow(tmp_path / "wf", fast=FAST, one_dataset=ONE_DATASET)
    base = [sys.executable, "-m", "snakemake", TARGET, "--profile", "workflow/profiles/slurm",
            "--configfile", "fast.yaml", "one_dataset.yaml", *TWO_GPUS]

    dry = subprocess.run(base + ["-n"], cwd=wd, capture_output=True, text=True, env=env)
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    expected = dry_run_jobs(dry.stdout + dry.stderr)
    assert sum(j["gpu"] == 0 for j in expected) >= 1 and sum(j["gpu"] > 0 for j in expected) >= 2, expected
    assert any(j["gpu"] == 2 for j in expected), expected

    t0 = time.monotonic()
    try:
        run = subprocess.run(base + LOCAL, cwd=wd, capture_output=True, text=True, env=env, timeout=1200)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"snakemake on SLURM did not finish in 20 min:\n{(e.stdout or b'')[-4000:]}")
    wall = time.monotonic() - t0
    out = run.stdout + run.stderr
    print(f"\nSLURM run: {len(expected)} jobs in {wall:.0f} s wall")
    if run.returncode != 0:
        logs = "\n".join(f"== {p}\n{p.read_text()[-2000:]}" for p in sorted(wd.rglob("*.log"))
                         if "slurm_logs" in str(p) or "results/logs" in str(p))
        pytest.fail(f"snakemake on SLURM failed:\n{out[-6000:]}\n{logs}")
    assert "100%) done" in out

    # Every job of the dry run was submitted, once, and completed.
    submitted = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+)", out)
    assert len(submitted) == len(set(submitted)) == len(expected), (submitted, out[-4000:])
    records = {jid: scontrol_job(jid, env) for jid in submitted}
    by_job = {}
    for jid, rec in records.items():
        assert rec["JobState"] == "COMPLETED", (jid, rec)
        assert rec["Comment"].startswith("rule_"), rec["Comment"]  # rule_<rule>_wildcards_<values joined by _>
        rule, _, values = rec["Comment"][len("rule_"):].partition("_wildcards_")
        by_job[(rule, values)] = jid
    assert sorted(by_job) == sorted(key(j) for j in expected), (sorted(by_job), expected)

    # GPUs: what the scheduler allocated, and what each job's task saw (TaskProlog's record).
    task_env = {}
    for line in (cluster["state"] / "task_env.log").read_text().splitlines():
        jid, step, cvd = line.split()
        task_env.setdefault(jid, []).append((step, cvd))
    lines = []
    for j in expected:
        jid = by_job[key(j)]
        rec, steps = records[jid], task_env.get(jid, [])
        assert steps, (jid, j)
        if j["gpu"]:
            assert rec["Partition"] == "gpu", (j, rec)
            assert rec["JOB_GRES"] == f"gpu:{j['gpu']}", (j, rec)
            assert all(len(cvd.split(",")) == j["gpu"] and cvd != "-" for _, cvd in steps), (j, steps)
        else:
            assert rec["Partition"] == "cpu", (j, rec)
            assert rec["JOB_GRES"] == "(null)", (j, rec)
            assert all(cvd == "-" for _, cvd in steps), (j, steps)
        lines.append(f"  {j['rule']:15} {' '.join(key(j)[1:]):20} slurm job {jid:>3}  partition {rec['Partition']:3}  "
                     f"JOB_GRES {rec['JOB_GRES']:7} CUDA_VISIBLE_DEVICES in its tasks: {[c for _, c in steps]}")
    print("\n".join(lines))
    assert (wd / TARGET).is_dir()
