"""`provenance`: Snakemake's records, written here by Snakemake's own persistence code, walked back to the roots.

(The end-to-end check on the demo DAG is in tests/test_workflow.py.)"""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from snakemake.persistence import MetadataRecord
from snakemake.persistence.file import FilePersistence

from pipeline import codedigest, provenance as prov

REPO = Path(__file__).resolve().parents[1]


def snakemake_record_path(metadata_dir: Path, key: str) -> str:
    """Snakemake's own encoding (FilePersistence._record_path), without constructing a persistence object."""
    p = object.__new__(FilePersistence)
    p._max_len = None
    return p._record_path(str(metadata_dir), key)


@pytest.mark.parametrize("key", ["results/a.txt", "results/eval/full/nuscenes_test_day.json",
                                 "results/" + "very_long_folder_name/" * 12 + "x.zarr"])
def test_record_path_is_snakemakes(tmp_path, key):
    assert str(prov.record_path(tmp_path, key)) == snakemake_record_path(tmp_path, key)
    if len(key) > 200:  # longer than a file name may be: Snakemake splits it into '@' folders
        assert "@" in str(prov.record_path(tmp_path, key).relative_to(tmp_path))


@pytest.fixture
def run(tmp_path):
    """A working directory with a root (no record), a.txt made by `splits` from it, b.txt made by
    `extract-frames` from a.txt; records written by Snakemake's FilePersistence."""
    wd = tmp_path / "wd"
    (wd / "data").mkdir(parents=True)
    (wd / "results").mkdir()
    (wd / "data" / "raw.txt").write_text("raw\n")
    (wd / "results" / "a.txt").write_text("a\n")
    (wd / "results" / "b.txt").write_text("b\n")
    persistence = FilePersistence(path=wd / ".snakemake")
    current = codedigest.code_digest(REPO, "extract-frames")
    persistence._write_record("results/a.txt", MetadataRecord(
        rule="splits", input=["data/raw.txt"], log=["results/logs/a.log"],
        shellcmd="OMP_NUM_THREADS=1 python -m pipeline splits --dataset nuscenes --root data/raw.txt --options "
                 "'{\"version\": \"v1.0-mini\", \"day_clear_only\": true}' --out-dir results/splits "
                 "> results/logs/a.log 2>&1",
        params=["'0123456789abcdef'", "'nuscenes'"], starttime=1000.0, endtime=1010.0))
    persistence._write_record("results/b.txt", MetadataRecord(
        rule="extract_frames", input=["results/a.txt"], log=["results/logs/b.log"],
        shellcmd="python -m pipeline extract-frames --split-file results/a.txt --out results/b.txt "
                 "--crop 0 0 10 20 --width 64 --seed 0 > results/logs/b.log 2>&1",
        params=[repr(current), "64"], starttime=1020.0, endtime=1050.0,
        input_checksums={"results/a.txt": "sha256:" + "0" * 64}))  # a.txt has changed since
    return wd


def test_trace_walks_the_records_back_to_the_root(run):
    graph = prov.trace([run / "results" / "b.txt"])
    assert graph["workdir"] == str(run) and graph["targets"] == ["results/b.txt"]
    assert list(graph["nodes"]) == ["results/b.txt", "results/a.txt", "data/raw.txt"]
    b, a, raw = graph["nodes"].values()
    assert b["digest"] == hashlib.sha256(b"b\n").hexdigest() and raw["digest"] == hashlib.sha256(b"raw\n").hexdigest()
    assert raw["made_by"] is None
    mb = b["made_by"]
    assert mb["rule"] == "extract_frames" and mb["verb"] == "extract-frames" and mb["inputs"] == ["results/a.txt"]
    assert mb["config"] == {"crop": "0 0 10 20", "width": 64, "seed": 0}
    assert mb["file_arguments"] == {"split-file": ["results/a.txt"], "out": ["results/b.txt"]}
    assert mb["code_is_current"] is True and mb["code_digest"] == codedigest.code_digest(REPO, "extract-frames")
    assert (mb["started"], mb["finished"], mb["seconds"]) == ("1970-01-01T00:17:00Z", "1970-01-01T00:17:30Z", 30.0)
    ma = a["made_by"]
    assert ma["config"] == {"dataset": "nuscenes", "options.version": "v1.0-mini", "options.day_clear_only": True}
    assert ma["file_arguments"] == {"root": ["data/raw.txt"], "out-dir": ["results/splits"]}
    assert ma["code_digest"] == "0123456789abcdef" and ma["code_is_current"] is False
    assert a["changed_since_read_by"] == ["extract_frames"]  # Snakemake's recorded checksum differs


def test_renderings_name_every_file_config_value_and_input(run):
    graph = prov.trace([run / "results" / "b.txt"])
    text = prov.render_text(graph)
    assert "[3] data/raw.txt" in text and "not made by a rule" in text
    assert re.search(r"options\.version +  = v1\.0-mini", text) and "crop  = 0 0 10 20" in text
    assert "0123456789abcdef (the code has changed since)" in text and "CHANGED since rule(s) extract_frames" in text
    md = prov.render_markdown(graph)
    assert "| 2 | `results/a.txt` | file |" in md and "- inputs: 2 (`results/a.txt`)" in md


def test_cli_json_out_and_errors(run, tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "pipeline", "provenance", *args], cwd=run,
                              capture_output=True, text=True)

    out = run / "results" / "prov.json"
    proc = cli("results/b.txt", "--json", "--out", str(out))
    assert proc.returncode == 0 and proc.stdout == ""
    assert json.loads(out.read_text()) == json.loads(json.dumps(prov.trace([run / "results" / "b.txt"])))
    assert not list(out.parent.glob(".prov.json.tmp-*"))
    bad = cli("data/raw.txt")
    assert bad.returncode == 2 and "Snakemake has no record of data/raw.txt" in bad.stderr
    (tmp_path / "loose.txt").write_text("x")
    bad = cli(str(tmp_path / "loose.txt"))
    assert bad.returncode == 2 and "no .snakemake/metadata folder" in bad.stderr


def test_verb_arguments_stop_at_the_redirection_and_read_a_launcher():
    verb, args = prov.verb_arguments("OMP_NUM_THREADS=2 torchrun --standalone --nproc_per_node 2 -m pipeline train "
                                     "--shards '{\"a\": {\"x\": \"r/x.zarr\"}}' --device cpu > log 2>&1")
    assert verb == "train" and args == [("shards", ['{"a": {"x": "r/x.zarr"}}']), ("device", ["cpu"])]
    config, files = prov.split_arguments(args, lambda v: v == "r/x.zarr")
    assert config == {"device": "cpu"} and files == {"shards": ["r/x.zarr"]}
    assert prov.verb_arguments("echo hello") == (None, [])
