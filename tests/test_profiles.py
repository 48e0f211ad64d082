"""Profiles and the conda env, as Snakemake and the executor plugins read them.

- The workflow profile profiles/default is found by a plain `snakemake` call and makes a local run
  work without --cores, but leaves --cores unset on a cluster run (where it would cap job threads).
- The submit commands: every job of the demo DAG (with train.gpus: 4), with the resources Snakemake
  gives it under the slurm/lsf profile (read from a dry run), goes through the plugins' own
  command builders (`Executor.run_job`, with the sbatch/bsub call captured instead of run): GPU
  rules ask for their GPUs on the GPU partition, CPU rules for none on the CPU partition/queue.
- envs/pipeline.yaml lists pyproject.toml's dependencies, and no path.
"""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import REPO, copy_workflow
from test_workflow import FAST

FOUR_GPUS = "train: {gpus: 4}\n"


def snakemake(wd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=wd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.fixture(scope="module")
def wd(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("wf"), fast=FAST, four_gpus=FOUR_GPUS)


# ---- the default profile -------------------------------------------------------------------------

def test_plain_snakemake_uses_the_default_profile(wd):
    proc = snakemake(wd, "-n", "eval_tables", "--configfile", "fast.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Using workflow specific profile profiles/default for setting default command line arguments" \
        in proc.stderr
    assert "Shell command:" in proc.stdout + proc.stderr  # printshellcmds, from the profile


def test_a_local_run_needs_no_cores(wd):
    """A real (not dry) run without --cores: the default profile provides them. The target is made
    up to date by hand so that nothing runs; without the profile the same call fails."""
    (wd / "data/demo/robotcar").mkdir(parents=True, exist_ok=True)
    (wd / "data/demo/robotcar/marker").write_text("")
    proc = snakemake(wd, "data/demo/robotcar")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to be done" in proc.stderr
    bare = snakemake(wd, "data/demo/robotcar", "--workflow-profile", "none")
    assert bare.returncode != 0 and "cores have to be specified" in bare.stderr


@pytest.mark.parametrize("argv, cores", [
    ([], "all"),
    (["--profile", "workflow/profiles/slurm"], None),  # a cluster run: no cap on job threads
    (["--profile", "workflow/profiles/lsf"], None),
    (["--executor", "slurm"], None),
    (["-j", "3"], None),  # locally, -j N stands for --cores N while --cores is unset
    (["--cores", "1"], 1),
])
def test_default_profile_sets_cores_for_local_runs_only(wd, monkeypatch, argv, cores):
    from snakemake.cli import parse_args
    from snakemake.utils import available_cpu_count

    monkeypatch.chdir(wd)
    monkeypatch.delenv("SNAKEMAKE_PROFILE", raising=False)
    monkeypatch.setattr(sys, "argv", ["snakemake", *argv, "-n"])  # the profile reads the command line
    _, args = parse_args(sys.argv[1:])
    assert args.cores == (available_cpu_count() if cores == "all" else cores)
    assert args.printshellcmds and args.rerun_incomplete and args.show_failed_logs


def test_one_source_of_truth_for_the_default_profile():
    link = REPO / "workflow/profiles/default"
    assert not link.exists() or (link.is_symlink() and link.resolve() == (REPO / "profiles/default").resolve())


# ---- cluster profiles ----------------------------------------------------------------------------

def profile(name: str) -> dict:
    return yaml.safe_load((REPO / "workflow/profiles" / name / "config.yaml").read_text())


@pytest.mark.parametrize("name", ["slurm", "lsf"])
def test_cluster_profiles_pin_no_gpus_and_scale_memory_on_retry(name):
    p = profile(name)
    assert "set-resources" not in p  # a profile value would overrule the rules' own `gpu`
    assert p["retries"] >= 1
    from snakemake.resources import Resource

    mem = [Resource.cli_evaluator("mem_mb", str(p["default-resources"]["mem_mb"]), wildcards={}, input=[],
                                  attempt=a, async_run=None) for a in (1, 2, 3)]
    assert mem[0] < mem[1] < mem[2], mem
    assert "slurm_partition" not in p["default-resources"]  # it would overrule the partition choice


def test_local_priorities_run_the_chain_to_the_students_first(wd):
    """Local runs start the ready job of highest priority: the training-split chain to each student
    (data 40, Monodepth2 teachers 30, CycleGAN and seg-teacher fits 20, the students' pseudo-label
    inputs and the students 15), RobotCar's one above nuScenes' (its student trains longest), and
    every job the students do not need (test splits, evaluation, curves, efficiency) at 0."""
    proc = snakemake(wd, "-n", "eval_tables", "--cores", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    prio = {}
    for block in re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule )", proc.stdout + proc.stderr):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if not rule:
            continue
        wc = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        wildcards = dict(kv.split("=", 1) for kv in wc.group(1).split(", ")) if wc else {}
        p = re.search(r"^\s+priority: (-?\d+)$", block, re.M)
        prio[rule.group(1), wildcards.get("ds"), wildcards.get("split")] = int(p.group(1)) if p else 0
    chain = {"splits": 40, "extract_frames": 40, "gt_depth": 40, "train_depth_teacher": 30, "demo_seg_teacher": 20,
             "train_cyclegan": 20, "translate": 15, "seg_pseudolabels": 15, "depth_pseudolabels": 15,
             "train_student": 15}
    seen = set()
    for (rule, ds, split), value in prio.items():
        if rule in chain and split in (None, "train_day", "train_night"):
            assert value == chain[rule] + (ds == "robotcar"), (rule, ds, split, value)
            seen.add(rule)
        else:
            assert value == 0, (rule, ds, split, value)
    assert seen == set(chain)
    assert prio["seg_pseudolabels", "robotcar", "test_day"] == 0 and prio["evaluate_depth_teacher", "robotcar",
                                                                          "test_day"] == 0


def dry_run_jobs(wd: Path, profile_name: str, overlays=("fast.yaml", "four_gpus.yaml")) -> list[Job]:
    """Every job of the demo DAG that Snakemake would submit, with the threads and resources it gives
    it under the profile (train.gpus: 4), and its shell command."""
    proc = snakemake(wd, "-n", "eval_tables", "--profile", f"workflow/profiles/{profile_name}", "--cores", "64",
                     "--configfile", *overlays)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = []
    for block in re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule )", proc.stdout + proc.stderr):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if not rule or not re.search(r"^\s+output: ", block, re.M):
            continue  # a target rule (input only): nothing is submitted
        res = re.search(r"^\s+resources: (.*)$", block, re.M).group(1)
        resources = {}
        for item in res.split(", "):
            k, _, v = item.partition("=")
            resources[k] = int(v) if v.isdigit() else v
        wc = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        threads = re.search(r"^\s+threads: (\d+)$", block, re.M)
        jobs.append(Job(rule.group(1), int(threads.group(1)) if threads else 1, resources,
                        dict(kv.split("=", 1) for kv in wc.group(1).split(", ")) if wc else {}))
        shell = re.search(r"^Shell command: (.*)$", block, re.M)
        jobs[-1].shell = shell.group(1) if shell else None
    assert jobs
    return jobs


class Res(dict):
    """Job resources as the plugins read them: `.get(name)` and `.name`."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(name) from e


class Job:
    """The part of snakemake's JobExecutorInterface that the plugins' run_job reads."""

    def __init__(self, rule: str, threads: int, resources: dict, wildcards: dict):
        self.name = rule
        self.rule = SimpleNamespace(name=rule)
        self.threads = threads
        self.resources = Res(resources)
        self.wildcards_dict = wildcards
        self.wildcards = list(wildcards.values())
        self.jobid = 1

    def is_group(self):
        return False

    def __repr__(self):
        return f"{self.name}{self.wildcards_dict}"


@pytest.fixture(scope="module")
def slurm_jobs(wd):
    return dry_run_jobs(wd, "slurm")


@pytest.fixture(scope="module")
def lsf_jobs(wd):
    return dry_run_jobs(wd, "lsf")


def sbatch_call(job: Job, monkeypatch, tmp_path) -> str:
    """The sbatch command line that the SLURM plugin's run_job builds for `job` with the slurm profile."""
    import snakemake_executor_plugin_slurm as plugin
    from snakemake_executor_plugin_slurm.partitions import read_partition_file

    settings = plugin.ExecutorSettings(partition_config=REPO / "workflow/profiles/slurm/partitions.yaml")
    ex = object.__new__(plugin.Executor)  # no __init__: it would query the cluster
    ex.logger = logging.getLogger("test-slurm-plugin")
    ex.workflow = SimpleNamespace(executor_settings=settings, workdir_init=str(tmp_path))
    ex.run_uuid = "run"
    ex.slurm_logdir = tmp_path / "slurm_logs"
    ex._partitions = read_partition_file(settings.partition_config)
    ex._fallback_partition = "NO-PARTITION-CHOSEN"  # instead of asking sinfo for the default one
    ex._fallback_account_arg = ""
    ex._failed_nodes = set()
    ex._main_event_loop = None
    ex.format_job_exec = lambda job: "JOBSTEP"
    ex.report_job_submission = lambda info: None
    errors = []
    ex.report_job_error = lambda info, msg=None, **kw: errors.append(msg)
    calls = []

    class Popen:
        def __init__(self, call, **kw):
            calls.append(call)
            self.returncode = 0

        def communicate(self, input=None):
            return "4242\n", ""

    with monkeypatch.context() as m:  # only around run_job: the settings above ran subprocesses too
        m.setattr(plugin.subprocess, "Popen", Popen)
        m.setattr(plugin.time, "sleep", lambda s: None)  # run_job waits 5 s before each sbatch
        ex.run_job(job)
    assert not errors and len(calls) == 1, (errors, calls)
    return calls[0]


def bsub_call(job: Job, monkeypatch, tmp_path) -> str:
    """The bsub command line that the LSF plugin's run_job builds for `job`."""
    import snakemake_executor_plugin_lsf as plugin

    ex = object.__new__(plugin.Executor)  # no __init__: it would run badmin and lsclusters
    ex.logger = logging.getLogger("test-lsf-plugin")
    ex.workflow = SimpleNamespace(workdir_init=str(tmp_path))
    ex.run_uuid = "run"
    ex._fallback_project_arg = ""
    ex._fallback_queue = ""
    ex.lsf_config = {"LSF_UNIT_FOR_LIMITS": "MB", "LSF_MEMFMT": "percpu"}
    ex.format_job_exec = lambda job: "JOBSTEP"
    ex.report_job_submission = lambda info: None
    calls = []

    def check_output(call, **kw):
        calls.append(call)
        return "Job <4242> is submitted to queue <q>."

    with monkeypatch.context() as m:
        m.setattr(plugin.subprocess, "check_output", check_output)
        m.chdir(tmp_path)  # the plugin writes .snakemake/lsf_logs/ here
        ex.run_job(job)
    assert len(calls) == 1
    return calls[0]


def gpus(job: Job) -> int:
    return int(job.resources.get("gpu", 0))


# The rules that DESIGN.md's DAG table runs on a GPU (`train` there is the rule train_student).
DESIGN_GPU_RULES = {"train_cyclegan", "translate", "seg_pseudolabels", "train_depth_teacher", "depth_pseudolabels",
                    "train_student", "evaluate"}


def test_dry_run_has_cpu_and_gpu_rules_and_a_four_gpu_student(slurm_jobs):
    assert any(gpus(j) == 0 for j in slurm_jobs)
    assert {j.name for j in slurm_jobs if gpus(j)} >= DESIGN_GPU_RULES
    student = [gpus(j) for j in slurm_jobs if j.name == "train_student"]
    assert student and set(student) == {4}, student


def test_sbatch_gpu_rules_get_their_gpus_on_the_gpu_partition(slurm_jobs, monkeypatch, tmp_path):
    for job in slurm_jobs:
        call = sbatch_call(job, monkeypatch, tmp_path)
        assert f"--mem {job.resources['mem_mb']}" in call, (job, call)
        if gpus(job):
            assert f" --gpus={gpus(job)}" in call and " -p gpu " in call, (job, call)
        else:
            assert "--gpus" not in call and "gres" not in call and " -p cpu " in call, (job, call)


def test_sbatch_mocked_jobs_one_and_four_gpus(monkeypatch, tmp_path):
    """Without the workflow: the same through the plugin for a hand-made job of each kind."""
    base = {"mem_mb": 16000, "runtime": 60}
    one = sbatch_call(Job("translate", 1, {**base, "gpu": 1}, {"ds": "x"}), monkeypatch, tmp_path)
    four = sbatch_call(Job("train_student", 2, {**base, "gpu": 4}, {"variant": "full"}), monkeypatch, tmp_path)
    cpu = sbatch_call(Job("extract_frames", 2, base, {"ds": "x"}), monkeypatch, tmp_path)
    assert " --gpus=1" in one and " -p gpu " in one
    assert " --gpus=4" in four and " -p gpu " in four and "--mem 16000" in four
    assert "--gpus" not in cpu and " -p cpu " in cpu and "--cpus-per-task=2" in cpu


def test_bsub_cpu_rules_go_to_the_cpu_queue_without_gpus(lsf_jobs, monkeypatch, tmp_path):
    queue = profile("lsf")["default-resources"]["lsf_queue"]
    for job in lsf_jobs:
        if gpus(job):
            continue
        call = bsub_call(job, monkeypatch, tmp_path)
        assert f" -q {queue} " in call and "-gpu" not in call, (job, call)


def test_bsub_gpu_rules_get_their_gpus_in_the_gpu_queue(lsf_jobs, monkeypatch, tmp_path):
    gpu_queue = profile("lsf")["config"]["lsf_gpu_queue"]
    for job in lsf_jobs:
        if gpus(job):
            call = bsub_call(job, monkeypatch, tmp_path)
            assert f" -gpu num={gpus(job)} " in call and f" -q {gpu_queue} " in call, (job, call)


def test_bsub_mocked_jobs_one_and_four_gpus(monkeypatch, tmp_path):
    """What the rule-side helper gives a job of N GPUs (lsf_extra "-gpu num=N", lsf_queue the GPU queue)
    reaches bsub through the plugin as such, for 1 and 4 GPUs."""
    for n in (1, 4):
        res = {"mem_mb": 16000, "runtime": 60, "gpu": n, "lsf_extra": f"-gpu num={n}", "lsf_queue": "gpuq"}
        call = bsub_call(Job("train_student", 2, res, {"variant": "full"}), monkeypatch, tmp_path)
        assert f" -gpu num={n} " in call and " -q gpuq " in call and " -n 2 " in call, call


# ---- jobs_per_split and multi-node training ---------------------------------------------------------

PARTS_AND_NODES = """
jobs_per_split: {extract_frames: 3, translate: 3, seg_pseudolabels: 3, depth_pseudolabels: 3}
train: {gpus: 4, nodes: 2}
"""


@pytest.fixture(scope="module")
def parted_jobs(wd):
    """The demo DAG under the slurm profile with every chunkable stage in 3 jobs and a 2-node x 4-GPU student."""
    (wd / "parts_nodes.yaml").write_text(PARTS_AND_NODES)
    return dry_run_jobs(wd, "slurm", ("fast.yaml", "parts_nodes.yaml"))


def test_jobs_per_split_schedules_n_jobs_per_stage_and_split_and_one_assembly(slurm_jobs, parted_jobs):
    from collections import Counter

    one, three = Counter(j.name for j in slurm_jobs), Counter(j.name for j in parted_jobs)
    stages = {"extract_frames": "frames", "translate": "synth", "seg_pseudolabels": "seg_teacher",
              "depth_pseudolabels": "depth_teacher"}
    assert "assemble_parts" not in one  # jobs_per_split 1: the DAG without parts
    for rule, stage in stages.items():
        assert one[rule] > 0 and three[rule] == 3 * one[rule], (rule, one[rule], three[rule])
        parts = sorted(j.wildcards_dict["part"] for j in parted_jobs if j.name == rule)
        assert parts == sorted(["0", "1", "2"] * one[rule])
        assembled = [j for j in parted_jobs if j.name == "assemble_parts" and j.wildcards_dict["stage"] == stage]
        assert len(assembled) == one[rule]
        assert all(j.shell.count(f"/{stage}/") == 4 and ".parts/2.zarr" in j.shell for j in assembled), assembled
    assert three["assemble_parts"] == sum(one[r] for r in stages)
    assert {k: v for k, v in three.items() if k not in stages and k != "assemble_parts"} == \
        {k: v for k, v in one.items() if k not in stages}


def test_sbatch_two_nodes_four_gpus_each_and_torchrun_rendezvous(parted_jobs, slurm_jobs, monkeypatch, tmp_path):
    student = [j for j in parted_jobs if j.name == "train_student"]
    assert student
    for job in student:
        call = sbatch_call(job, monkeypatch, tmp_path)
        # 2 nodes, 4 GPUs on EACH (--gres is per node; --gpus=8 could land 6 + 2), one task per node
        assert " --nodes=2" in call and " --gres=gpu:4" in call and " --ntasks=2" in call, call
        assert "--gpus" not in call and " -p gpu " in call and "--ntasks-per-gpu" not in call, call
        # the job's shell: one torchrun per node (srun), meeting at the first node
        assert re.search(r"srun --nodes=2 --ntasks=2 --ntasks-per-node=1 --cpus-per-task=\d+ --gres=gpu:4 ",
                         job.shell), job.shell
        assert re.search(r"torchrun --nnodes 2 --nproc_per_node 4 --rdzv_id \$\{SLURM_JOB_ID:\?[^}]*\} "
                         r"--rdzv_backend c10d --rdzv_endpoint \$\(hostname\):29500 -m pipeline train ", job.shell)
        assert jobstep_call(job, monkeypatch) == "JOBSTEP"  # run as is: not wrapped in `srun -n1`
    # the single-node student (train.gpus 4) is wrapped, with its 4 GPUs, and runs torchrun --standalone
    single = next(j for j in slurm_jobs if j.name == "train_student")
    assert "torchrun --standalone --nproc_per_node 4 -m pipeline train" in single.shell
    wrapped = jobstep_call(single, monkeypatch)
    assert wrapped.startswith("srun -n1") and "--gpus=4" in wrapped and "--nodes=1" in wrapped


def test_the_multinode_launcher_fails_clearly_outside_slurm(parted_jobs):
    shell = next(j.shell for j in parted_jobs if j.name == "train_student")
    rdzv = re.search(r"--rdzv_id (\$\{SLURM_JOB_ID:\?[^}]*\})", shell).group(1)
    env = {k: v for k, v in os.environ.items() if k != "SLURM_JOB_ID"}
    proc = subprocess.run(["bash", "-c", f"echo {rdzv}"], capture_output=True, text=True, env=env)
    assert proc.returncode != 0 and "needs a SLURM job: --profile workflow/profiles/slurm" in proc.stderr
    proc = subprocess.run(["bash", "-c", f"echo {rdzv}"], capture_output=True, text=True,
                          env={**env, "SLURM_JOB_ID": "4242"})
    assert proc.stdout.strip() == "4242"


def test_lsf_refuses_multinode_training_at_parse_time(wd):
    proc = snakemake(wd, "-n", "train", "--profile", "workflow/profiles/lsf", "--configfile", "fast.yaml",
                     "parts_nodes.yaml")
    assert proc.returncode != 0
    assert "config key train.nodes is 2: multi-node training runs on SLURM only" in proc.stdout + proc.stderr


def jobstep_call(job: Job, monkeypatch) -> str:
    """The command the SLURM jobstep plugin (inside the sbatch job) runs for `job`."""
    import snakemake_executor_plugin_slurm_jobstep as plugin

    ex = object.__new__(plugin.Executor)
    ex.logger = logging.getLogger("test-slurm-jobstep")
    ex.workflow = SimpleNamespace(executor_settings=plugin.ExecutorSettings())
    ex.gpu_job, ex.job_array_task = None, False
    ex.format_job_exec = lambda job: "JOBSTEP"
    ex.report_job_submission = ex.report_job_success = ex.report_job_error = lambda *a, **k: None
    calls = []

    class Popen:
        def __init__(self, call, **kw):
            calls.append(call)

        def wait(self):
            return 0

    with monkeypatch.context() as m:
        m.setattr(plugin.subprocess, "Popen", Popen)
        ex.run_job(job)
    assert len(calls) == 1
    return " ".join(calls[0].split())


# ---- the conda env -------------------------------------------------------------------------------

def test_conda_env_lists_the_package_dependencies():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((REPO / "envs/pipeline.yaml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))

    def norm(spec: str) -> tuple[str, str]:
        r = Requirement(spec)
        return canonicalize_name(r.name), str(r.specifier)

    assert sorted(map(norm, pip)) == sorted(map(norm, project["dependencies"]))
    assert not any(p.startswith(("-e", ".", "/", "file:")) or "/" in p for p in pip), pip  # no path to resolve
    python = next(d for d in conda if d.startswith("python="))
    from packaging.specifiers import SpecifierSet

    assert SpecifierSet(project["requires-python"]).contains(python.split("=", 1)[1] + ".0")
