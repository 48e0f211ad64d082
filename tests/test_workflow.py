"""End to end: the Snakemake DAG on the embedded demo, in a temporary copy of the workflow.

One run of `eval_tables` (both datasets, every stage) with an audit hook in every job
(tests/audit/sitecustomize.py), then: every job opened only files its rule declares and imported only
modules its code digest covers; a second run does nothing; changing the resize re-runs extraction and
what depends on it, nothing upstream; editing one module re-runs exactly the rules that import it;
every shard verifies, and a flipped byte fails the next stage that reads it, naming shard and array.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import codedigest

REPO = Path(__file__).resolve().parents[1]

# The default config.yaml, lighter still, so the whole DAG fits the CI budget on 2 CPU cores.
FAST = """
demo:
  keyframes_per_scene: 5
  sweeps_between: 1
  robotcar_frames_per_run: 24
cyclegan: {epochs: 1, epochs_decay: 1, ngf: 8, n_blocks: 2}
seg_teacher: {demo_max_steps: 120}
depth_teacher: {epochs: 1}
train: {epochs: 1, max_steps_per_epoch: 6}
"""


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PIPELINE_AUDIT_DIR": str(workdir / "audit"),
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "audit"), os.environ.get("PYTHONPATH", "")])}
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
    # a copy of the package: the jobs run it (python -m, cwd first) and the code digests read it
    shutil.copytree(REPO / "pipeline", wd / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    (wd / "audit").mkdir()
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
        assert (workdir / f"results/figures/qualitative_full_{ds}_{split}.png").stat().st_size > 0
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


def jobs_of_run(workdir: Path) -> list[dict]:
    """The jobs Snakemake ran, from its own metadata: rule, shell command, inputs, outputs, logs."""
    jobs: dict[str, dict] = {}
    for f in (workdir / ".snakemake" / "metadata").rglob("*"):
        if not f.is_file():
            continue
        rec = json.loads(f.read_text())
        output = base64.urlsafe_b64decode(f.name.encode()).decode()
        job = jobs.setdefault(rec["shellcmd"], {"rule": rec["rule"], "shellcmd": rec["shellcmd"], "outputs": [],
                                                 "inputs": rec.get("input", []), "logs": rec.get("log", [])})
        job["outputs"].append(output)
    return list(jobs.values())


def verb_argv(argv: list[str]) -> list[str]:
    i = argv.index("pipeline")
    tail = argv[i + 1:]
    return tail[:tail.index(">")] if ">" in tail else tail


def declared(workdir: Path, job: dict, path: str) -> bool:
    p = Path(path)
    named = [workdir / x for x in job["inputs"] + job["outputs"] + job["logs"]]
    if any(p == n or n in p.parents for n in named):
        return True
    for out in (workdir / x for x in job["outputs"]):  # the outputs' atomic temporaries
        if any(q.parent == out.parent and q.name.startswith((f".{out.name}.tmp-", f".{out.name}.old-"))
               for q in [p, *p.parents]):
            return True
    return workdir / "results" / "state" / job["rule"] in p.parents


@pytest.mark.slow
def test_every_job_opens_only_declared_files_and_imports_only_digested_code(workdir):
    jobs = jobs_of_run(workdir)
    audits = [json.loads(f.read_text()) for f in (workdir / "audit").glob("*.json")]
    assert len(jobs) >= 40 and len(audits) >= len(jobs)
    by_argv = {tuple(verb_argv(shlex.split(j["shellcmd"]))): j for j in jobs}
    roots = [workdir / "results", workdir / "data"]
    checked = 0
    for a in audits:
        job = by_argv.get(tuple(verb_argv(a["argv"])))
        assert job is not None, f"no Snakemake job ran {a['argv']}"
        undeclared = [p for p, mode in a["opened"].items()
                      if any(r in Path(p).parents for r in roots) and not declared(workdir, job, p)]
        assert not undeclared, f"rule {job['rule']} opened undeclared files: {undeclared[:5]}"
        verb = verb_argv(a["argv"])[0]
        closure = set(codedigest.closure(workdir, [codedigest.verb_module(verb), *codedigest.ENTRY]))
        missed = sorted(set(a["imported"]) - closure)
        assert not missed, f"rule {job['rule']} ran modules its code digest does not cover: {missed}"
        checked += 1
    assert checked >= 40


def scheduled(workdir: Path) -> dict[str, int]:
    proc = subprocess.run([sys.executable, "-m", "snakemake", "eval_tables", "-n", "--cores", "2", "--configfile",
                           "fast.yaml"], cwd=workdir, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {} if "Nothing to be done" in proc.stdout + proc.stderr else job_counts(proc.stdout)


@pytest.mark.slow
def test_editing_a_module_reruns_exactly_the_rules_that_import_it(workdir):
    module = workdir / "pipeline" / "cityscapes.py"
    from test_codedigest import rules_with_code

    rules = {r: v for r, v, _ in rules_with_code()}
    importers = {r for r, verb in rules.items()
                 if "pipeline.cityscapes" in codedigest.closure(workdir, [codedigest.verb_module(verb),
                                                                          *codedigest.ENTRY])}
    assert {"seg_pseudolabels", "train_student", "evaluate"} <= importers
    original = module.read_bytes()
    try:
        module.write_bytes(original + b"# a comment\n")
        jobs = scheduled(workdir)
    finally:
        module.write_bytes(original)
    assert importers & set(jobs) == importers & set(rules), (importers, jobs)
    upstream = {"demo_data", "splits", "extract_frames", "gt_depth", "train_cyclegan", "translate",
                "train_depth_teacher", "depth_pseudolabels"} - importers
    assert not upstream & set(jobs), jobs
    assert scheduled(workdir) == {}


@pytest.mark.slow
def test_a_flipped_byte_fails_the_next_stage_naming_shard_and_array(workdir, tmp_path):
    import numpy as np

    from pipeline.shards import open_shard

    copy = tmp_path / "test_day.zarr"
    shutil.copytree(workdir / "results/robotcar/frames/test_day.zarr", copy)
    g = open_shard(copy)
    row = int(np.flatnonzero(g["target"][:])[0])  # a row the next stage reads
    rps = g["image"].shards[0]
    shard_file = copy / "image" / "c" / str(row // rps) / "0" / "0" / "0"
    data = bytearray(shard_file.read_bytes())
    index = np.frombuffer(bytes(data[-16 * rps - 4:-4]), "<u8").reshape(-1, 2)  # (offset, nbytes) per chunk
    data[int(index[row % rps, 0]) + 100] ^= 0xFF
    shard_file.write_bytes(bytes(data))
    proc = subprocess.run([sys.executable, "-m", "pipeline", "inspect", str(copy), "--verify"], cwd=workdir,
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "image" in proc.stdout
    ev = subprocess.run([sys.executable, "-m", "pipeline", "evaluate-depth-teacher", "--weights",
                         str(workdir / "results/robotcar/depth_teacher/weights"), "--frames", str(copy), "--gt",
                         str(workdir / "results/robotcar/gt_depth/test_day.zarr"), "--dataset", "robotcar",
                         "--split", "test_day", "--max-depth", "40", "--teacher-min-depth", "0.1",
                         "--teacher-max-depth", "100", "--batch-size", "2", "--device", "cpu",
                         "--out", str(tmp_path / "t.json")], cwd=workdir, capture_output=True, text=True)
    assert ev.returncode == 2, ev.stderr[-2000:]
    assert str(copy) in ev.stderr and "'image'" in ev.stderr and "corrupt" in ev.stderr
    assert not (tmp_path / "t.json").exists()
