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


def pipeline_cli(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=workdir, capture_output=True, text=True)


@pytest.mark.slow
def test_provenance_of_a_metrics_json_reaches_frames_teachers_and_config(workdir):
    from pipeline import shards

    target = "results/eval/full/nuscenes_test_day.json"
    proc = pipeline_cli(workdir, "provenance", target, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    graph = json.loads(proc.stdout)
    nodes = graph["nodes"]
    assert graph["targets"] == [target] and list(nodes)[0] == target
    rules = {k: n["made_by"]["rule"] for k, n in nodes.items() if n["made_by"]}
    # the frames the student was tested and trained on, with the shard's own digest
    for split in ("test_day", "train_day", "train_night"):
        frames = f"results/nuscenes/frames/{split}.zarr"
        assert rules[frames] == "extract_frames"
        assert nodes[frames]["digest"] == shards.digest(workdir / frames)
        assert nodes[frames]["rows"] == shards.open_shard(workdir / frames).attrs["n_rows"]
    # both teachers' outputs: seg pseudo-labels, depth teacher weights and its pseudo-labels
    assert rules["results/nuscenes/seg_teacher/train_day.zarr"] == "seg_pseudolabels"
    assert rules["results/nuscenes/seg_teacher/test_day.zarr"] == "seg_pseudolabels"
    assert rules["results/nuscenes/depth_teacher/train_day.zarr"] == "depth_pseudolabels"
    assert rules["results/nuscenes/depth_teacher/weights"] == "train_depth_teacher"
    ckpt = "results/train/nuscenes/full/checkpoints/last.pt"
    assert nodes[ckpt]["digest"] == shards.file_sha256(workdir / ckpt)
    assert "data/demo/nuscenes" in nodes and rules["data/demo/nuscenes"] == "demo_data"
    # the config values that made it, by name (the shell commands' arguments), from config.yaml and fast.yaml
    ev = nodes[target]["made_by"]
    assert ev["verb"] == "evaluate" and ev["config"]["max-depth"] == 80.0 and ev["config"]["split"] == "test_day"
    assert ev["code_digest"] == codedigest.code_digest(workdir, "evaluate") and ev["code_is_current"] is True
    train = nodes[ckpt]["made_by"]["config"]
    assert train["settings.train.epochs"] == 1 and train["settings.train.max_steps_per_epoch"] == 6
    assert nodes["results/nuscenes/depth_teacher/weights"]["made_by"]["config"]["epochs"] == 1
    # when each was made: every input finished before the job that read it started
    for n in nodes.values():
        for k in (n["made_by"] or {}).get("inputs", []):
            if nodes[k]["made_by"]:
                assert nodes[k]["made_by"]["finished"] <= n["made_by"]["started"], (k, n["path"])
    text = pipeline_cli(workdir, "provenance", target).stdout
    assert "results/nuscenes/frames/test_day.zarr" in text and "max-depth" in text and "seg_pseudolabels" in text
    # the table files' provenance, as the report shows it
    md = (workdir / "results/tables/provenance.md").read_text()
    assert "`results/tables/tables.md`" in md and "`results/nuscenes/frames/test_day.zarr`" in md
    elsewhere = workdir.parent / "elsewhere.json"  # not under the workdir: no .snakemake above it
    elsewhere.write_text("{}")
    for path, says in [("Snakefile", "Snakemake has no record of Snakefile"), (str(elsewhere), "no .snakemake")]:
        bad = pipeline_cli(workdir, "provenance", path)
        assert bad.returncode == 2 and says in bad.stderr, bad.stderr


@pytest.mark.slow
def test_inspect_results_lists_every_shard_and_fails_on_a_flipped_byte(workdir, tmp_path):
    groups = sorted(str(p.relative_to(workdir / "results")) for p in (workdir / "results").rglob("*.zarr")
                    if p.is_dir() and not any(part.startswith(".") for part in p.parts))
    proc = pipeline_cli(workdir, "inspect", "results")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    listed = [line.split()[0] for line in proc.stdout.splitlines()[1:-1]]
    assert sorted(listed) == groups and len(groups) >= 20
    assert all(line.rstrip().endswith("OK") for line in proc.stdout.splitlines()[1:-1])
    # a copy of the tree (hard links), one shard file rewritten with one byte flipped
    copy = tmp_path / "results"
    shutil.copytree(workdir / "results", copy, copy_function=os.link)
    victim = "nuscenes/gt_depth/test_day.zarr"
    shard_file = next(p for p in sorted((copy / victim / "depth").rglob("*")) if p.is_file() and p.name != "zarr.json")
    data = bytearray(shard_file.read_bytes())
    data[len(data) // 3] ^= 0x01
    shard_file.unlink()  # break the hard link: the demo's own shard stays intact
    shard_file.write_bytes(bytes(data))
    bad = pipeline_cli(workdir, "inspect", str(copy))
    assert bad.returncode == 1
    failed = [line for line in bad.stdout.splitlines()[1:-1] if "FAILED" in line]
    assert len(failed) == 1 and failed[0].startswith(victim) and "'depth'" in failed[0], bad.stdout[-3000:]
    assert f"{len(groups)} shards under" in bad.stdout and "1 FAILED" in bad.stdout
    assert pipeline_cli(workdir, "inspect", "results").returncode == 0  # the original is untouched


# In the report (a React app: its view is component state, not the URL), a click on a menu entry of the
# navigation bar, and on the view (eye) or info button of a result's row (rows are labelled by `labels`).
CLICK_MENU = """(text) => { const a = [...document.querySelectorAll('nav a')].find(a => a.textContent.trim() === text);
  if (!a) return false; a.click(); return true; }"""
CLICK_ROW = """(label, button) => { const tr = [...document.querySelectorAll('nav table tbody tr')]
  .find(tr => [...tr.cells].some(td => td.textContent.trim() === label));
  if (!tr) return false; tr.cells[tr.cells.length - 1].querySelectorAll('a')[button].click(); return true; }"""


def report_results(html: str) -> dict:
    """The report's own record of its results (path -> name, mime_type, labels, caption, data_uri, ...)."""
    m = re.search(r'<script id="results">\s*var results = (.*?);\s*</script>', html, re.S)
    assert m, "no results script in the report"
    return json.loads(m.group(1))


def report_pngs(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for d in ("results/report", "results/figures") for p in (root / d).rglob("*.png")}


def chromium_or_skip() -> str:
    from browser import chromium_binary

    binary = chromium_binary()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run installs Debian's chromium package")
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); CI installs it and runs this")
    return binary


def _pixels(png: bytes, rect: dict):
    import cv2
    import numpy as np

    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    x0, y0 = max(0, int(rect["x"])), max(0, int(rect["y"]))
    return img[y0:int(rect["y"] + rect["height"]), x0:int(rect["x"] + rect["width"])].astype(int)


@pytest.mark.slow
def test_report_renders_tables_figures_and_curves_in_chromium(workdir):
    """`snakemake --report` on the demo, opened in headless Chromium: the navigation the app renders, the
    tables page in its frame (one <table> per table of tables.md, the measured rows shaded on screen), a
    training-curves figure decoded at its size and drawn, and its caption; screenshots are kept in
    results/ beside the report."""
    import cv2
    import numpy as np

    from browser import Chromium
    from pipeline.curves import read_epoch_scalars

    binary = chromium_or_skip()
    # the demo student's curves hold every term of eq. (18), one value per epoch
    curves = read_epoch_scalars(workdir / "results/train/nuscenes/full/tensorboard")
    assert {"total", "light", "sf", "cst", "ds", "seg"} <= set(curves)
    assert all([e for e, _ in curves[t]] == [1] for t in curves)  # fast.yaml: 1 epoch

    report = workdir / "results/report.html"
    snakemake(workdir, "--report", "results/report.html")
    html = report.read_text()
    results = report_results(html)
    pngs = {p for p, r in results.items() if r["mime_type"] == "image/png"}
    assert pngs == report_pngs(workdir) and len(pngs) == 10 + 4 + 2 + 5  # previews, teacher/student curves, figures
    assert "results/tables/tables.html" in results
    n_tables = (workdir / "results/tables/tables.md").read_text().count("\n## ")
    print(f"report: {report.stat().st_size / 1e6:.2f} MB, {len(results)} results: {len(pngs)} PNG figures, "
          f"{sum(r['mime_type'] == 'text/html' for r in results.values())} HTML page of {n_tables} tables, "
          f"{len(results) - len(pngs) - 1} other")

    shots = {}
    with Chromium(binary, width=1400, height=1000) as browser:
        browser.open(report)
        browser.wait_for("document.querySelectorAll('nav a').length > 0")
        cats = browser.evaluate("Object.keys(categories).sort()")  # the app's own data, in the page
        assert {"data", "teachers", "student", "evaluation"} <= set(cats), cats
        assert browser.evaluate("Object.keys(results).length") == len(results)

        # evaluation > tables > tables.html: the tables page in the content frame
        assert browser.evaluate(f"({CLICK_MENU})('evaluation')")
        browser.wait_for(f"({CLICK_MENU})('tables')")
        browser.wait_for(f"({CLICK_ROW})('tables.html', 0)")
        browser.wait_for("(document.querySelector('iframe') || {src: ''}).src.startsWith('data:text/html')")
        got = browser.wait_for(
            "document.readyState === 'complete' && document.querySelectorAll('table').length > 0 && "
            "[...document.querySelectorAll('table')].map(t => ({key: t.dataset.key, rows: t.tBodies[0].rows.length,"
            " measured: t.querySelectorAll('tr.measured').length, height: t.getBoundingClientRect().height,"
            " text: t.innerText}))", frame_url_prefix="data:text/html")
        assert len(got) == n_tables >= 7
        assert all(t["rows"] >= 1 and t["height"] > 20 for t in got), got
        assert sum(t["measured"] for t in got) >= 8 and "(measured, this run)" in got[0]["text"]
        frame_rect = browser.evaluate("JSON.parse(JSON.stringify(document.querySelector('iframe')"
                                      ".getBoundingClientRect()))")
        shots["tables"] = browser.screenshot()
        shaded = (np.abs(_pixels(shots["tables"], frame_rect) - [214, 244, 255]).sum(axis=2) <= 6).sum()
        assert shaded > 500, f"no shaded (measured) table rows drawn in the frame: {shaded} pixels"

        # student > training curves > nuscenes: the figure in the content pane, then its caption
        browser.open(report)
        browser.wait_for("document.querySelectorAll('nav a').length > 0")
        assert browser.evaluate(f"({CLICK_MENU})('student')")
        browser.wait_for(f"({CLICK_ROW})('nuscenes', 0)")
        img = browser.wait_for(
            "(() => { const i = [...document.images].find(i => i.src.startsWith('data:image/png'));"
            " return i && i.complete && i.naturalWidth > 0 && {w: i.naturalWidth, h: i.naturalHeight,"
            " rect: JSON.parse(JSON.stringify(i.getBoundingClientRect()))}; })()")
        png = cv2.imread(str(workdir / "results/report/curves/student_nuscenes_full.png"))
        assert (img["h"], img["w"]) == png.shape[:2]
        shots["curves"] = browser.screenshot()
        drawn = _pixels(shots["curves"], img["rect"])
        assert drawn.std() > 20  # axes, text and points, not an empty box
        assert (np.abs(drawn - [180, 119, 31]).sum(axis=2) < 60).sum() > 50  # the curves' points (C0 blue)
        assert browser.evaluate(f"({CLICK_ROW})('nuscenes', 1)")
        browser.wait_for("document.querySelector('nav').innerText.includes('eq. (18)')")
        shots["caption"] = browser.screenshot()
    for name, data in shots.items():
        (workdir / f"results/report_screenshot_{name}.png").write_bytes(data)


@pytest.mark.slow
def test_report_of_a_partial_run_shows_what_exists(workdir, tmp_path):
    """A run stopped after the teachers: no students, evaluation or tables. `snakemake --report` still
    builds, with the previews and the teachers' curves, and without what does not exist."""
    part = tmp_path / "partial"
    part.mkdir()
    for name in ("Snakefile", "config.yaml", "fast.yaml"):
        shutil.copy(workdir / name, part / name)
    for name in ("workflow", "envs", "pipeline"):
        shutil.copytree(workdir / name, part / name)
    shutil.copytree(workdir / ".snakemake" / "metadata", part / ".snakemake" / "metadata")
    (part / "audit").mkdir()
    later = {"train", "eval", "tables", "figures", "state", "report.html"}

    def ignore(folder, names):
        top = Path(folder) == workdir / "results"
        return [n for n in names if (top and n in later) or n.startswith(("student_", "report_screenshot"))]

    shutil.copytree(workdir / "results", part / "results", ignore=ignore, copy_function=os.link)
    snakemake(part, "--report", "results/report.html")
    results = report_results((part / "results/report.html").read_text())
    assert set(results) == report_pngs(part)
    assert len(results) == 10 + 4  # the preview panels and the teachers' curves
    cats = {r["job_properties"]["rule"] for r in results.values()}
    assert cats == {"preview_panels", "teacher_curves"}


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
        # the provenance rule reads the digests of the whole upstream chain, which it cannot declare
        # (workflow/rules/provenance.smk), and writes only its declared output
        reads_chain = job["rule"] == "provenance"
        undeclared = [p for p, mode in a["opened"].items()
                      if any(r in Path(p).parents for r in roots) and not declared(workdir, job, p)
                      and not (reads_chain and not set(mode) & set("wax+"))]
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
                         "--split", "test_day", "--max-depth", "40", "--protocol", "adds", "--teacher-min-depth", "0.1",
                         "--teacher-max-depth", "100", "--batch-size", "2", "--device", "cpu",
                         "--out", str(tmp_path / "t.json")], cwd=workdir, capture_output=True, text=True)
    assert ev.returncode == 2, ev.stderr[-2000:]
    assert str(copy) in ev.stderr and "'image'" in ev.stderr and "corrupt" in ev.stderr
    assert not (tmp_path / "t.json").exists()
