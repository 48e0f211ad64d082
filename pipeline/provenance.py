"""Where a result came from: Snakemake's own records, walked back from a file to the roots.

Snakemake keeps one JSON record per output file it made, under `.snakemake/metadata/` of the working
directory: the rule, its input files, the shell command (every verb gets its config values as explicit
`--flag value` arguments, so the command holds them by name; the record's `params` holds the same
values only as unnamed reprs), the params (the rule's `code` param is the verb's code digest), the
start and end times and the checksums of the small input files it read. `trace` follows the inputs of
each record recursively; a path without a record is a root (data the pipeline did not make).

Digests: a shard's is `pipeline.shards.digest` (a hash of the per-array sha256s in its attrs, which
`inspect --verify` recomputes), a file's or a non-shard folder's the sha256 of its bytes (up to
`HASH_LIMIT`; a folder's over its files' relative paths and bytes).

Snakemake has no public API to read these records outside a running workflow (its persistence
classes are internal and create folders under `.snakemake` when constructed), so `record_path`
mirrors `FilePersistence._record_path` of Snakemake 9 (tests/test_provenance.py checks it against
Snakemake's own code). Only the default file backend is read (not `--persistence-backend db`).
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shlex
import time
from pathlib import Path
from typing import Any, Iterable

from pipeline import codedigest, shards

HASH_LIMIT = 4 << 30  # files and folders larger than this (4 GiB) are not hashed (their size is shown)
_CODE_PARAM = re.compile(r"^'([0-9a-f]{16})'$")  # how Snakemake stores the repr of a code digest param
_REDIRECTS = (">", ">>", "2>", "2>&1", "&>", "|", "&&", ";")
_IGNORED = {".snakemake_timestamp"}  # Snakemake's marker in directory outputs


class NoRecord(FileNotFoundError):
    """PATH has no Snakemake record: not made by the pipeline, or `.snakemake` is missing."""


# ---- Snakemake's records
def find_workdir(path: str | os.PathLike) -> Path:
    """The nearest folder at or above `path` that holds `.snakemake/metadata` (Snakemake's working directory)."""
    p = Path(os.path.abspath(path))
    for d in [p, *p.parents]:
        if (d / ".snakemake" / "metadata").is_dir():
            return d
    raise NoRecord(f"{path}: no .snakemake/metadata folder at or above it: it was not made by a Snakemake run "
                   f"of this pipeline, or the run's .snakemake folder was removed (pass --directory if the run "
                   f"was made elsewhere)")


def record_path(metadata_dir: str | os.PathLike, key: str) -> Path:
    """Where Snakemake keeps the record of output `key` (its path as the rule names it, relative to the working
    directory): the url-safe base64 of the key, cut into pieces of at most NAME_MAX - 1 characters, every piece
    but the last a folder prefixed with '@' (Snakemake 9 `FilePersistence._record_path`)."""
    metadata_dir = Path(metadata_dir)
    max_len = (os.pathconf(metadata_dir, "PC_NAME_MAX") if os.name == "posix" else 255) or 255
    b64 = base64.urlsafe_b64encode(key.encode()).decode()
    pieces = [b64[i:i + max_len - 1] for i in range(0, len(b64), max_len - 1)]
    return metadata_dir.joinpath(*["@" + s for s in pieces[:-1]], pieces[-1])


def read_record(workdir: Path, key: str) -> dict | None:
    path = record_path(workdir / ".snakemake" / "metadata", key)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: Snakemake's record of {key} is not valid JSON ({exc}): is a run writing it?")
    return None if record.get("incomplete") else record


def key_of(path: str | os.PathLike, workdir: Path) -> str:
    """The record key of `path`: relative to the working directory, normalised, no trailing slash."""
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(workdir).as_posix()
    except ValueError:
        return absolute.as_posix()  # Snakemake keys absolute paths outside the working directory as they are


# ---- the shell command: verb, config values and file arguments
def verb_arguments(shellcmd: str) -> tuple[str | None, list[tuple[str, list[str]]]]:
    """(verb, [(flag, values)]) of the `python -m pipeline VERB --flag value ...` part of a rule's command."""
    try:
        tokens = shlex.split(shellcmd)
    except ValueError:
        return None, []
    for i in range(len(tokens) - 2):
        if tokens[i] == "-m" and tokens[i + 1] == "pipeline":
            break
    else:
        return None, []
    verb, args = tokens[i + 2], []
    for tok in tokens[i + 3:]:
        if tok in _REDIRECTS or tok.startswith((">", "2>", "&>")):
            break
        if tok.startswith("--"):
            args.append((tok[2:], []))
        elif args:
            args[-1][1].append(tok)
    return verb, args


def _leaves(value: Any) -> Iterable[Any]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


def _flatten(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(f"{prefix}.{k}", v))
        return out
    return {prefix: value}


def split_arguments(args: list[tuple[str, list[str]]], is_file) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Config values ({name: value}; JSON values flattened to dotted names) and file arguments ({flag: paths})."""
    config: dict[str, Any] = {}
    files: dict[str, list[str]] = {}
    for flag, values in args:
        if values and (all(is_file(v) for v in values) or (flag.endswith("dir") and "/" in values[0])):
            files[flag] = values
            continue
        if len(values) == 1:
            try:
                parsed = json.loads(values[0])
            except json.JSONDecodeError:
                parsed = values[0]
            if isinstance(parsed, (dict, list)):
                leaves = [v for v in _leaves(parsed)]
                if leaves and all(isinstance(v, str) and is_file(v) for v in leaves):
                    files[flag] = leaves  # e.g. train --shards '{"day_frames": "results/...", ...}'
                    continue
            config.update(_flatten(flag, parsed) if isinstance(parsed, dict) else {flag: parsed})
        else:
            config[flag] = " ".join(values) if values else True
    return config, files


# ---- digests
def _tree_files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file() and p.name not in _IGNORED)


def describe_file(path: Path, walk: bool = True) -> dict[str, Any]:
    """Kind, size, digest and (for a shard) rows and write time of an existing path. `walk=False`: a folder
    is not read (a dataset root the pipeline was given can hold millions of files)."""
    if not path.exists():
        return {"kind": "missing", "size": None, "digest": None}
    if path.is_dir() and (path / "zarr.json").is_file():
        info: dict[str, Any] = {"kind": "shard", "size": sum(p.stat().st_size for p in _tree_files(path))}
        try:
            group = shards.open_shard(path)
            info.update(digest=shards.digest(path), digest_of="the shard's recorded per-array sha256s",
                        rows=group.attrs.get("n_rows"), written_at=group.attrs.get("written_at"),
                        shard_inputs=dict(group.attrs.get("inputs") or {}))
        except shards.ShardError as exc:
            info.update(digest=None, error=str(exc))
        return info
    if path.is_dir() and not walk:
        return {"kind": "folder", "size": None, "digest": None}
    if path.is_dir():
        files = _tree_files(path)
        size = sum(p.stat().st_size for p in files)
        info = {"kind": "folder", "size": size, "files": len(files), "digest": None}
        if size <= HASH_LIMIT:
            h = hashlib.sha256()
            for p in files:
                h.update(p.relative_to(path).as_posix().encode() + b"\0")
                with open(p, "rb") as f:
                    while block := f.read(1 << 20):
                        h.update(block)
                h.update(b"\0")
            info.update(digest=h.hexdigest(), digest_of="sha256 of its files' paths and bytes")
        return info
    size = path.stat().st_size
    info = {"kind": "file", "size": size, "digest": None}
    if size <= HASH_LIMIT:
        info.update(digest=shards.file_sha256(path), digest_of="sha256")
    return info


def _iso(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _code_root(workdir: Path) -> Path:
    """The package the rules ran: the working directory's copy if it has one, else the installed package."""
    return workdir if (workdir / "pipeline" / "cli.py").is_file() else Path(shards.__file__).resolve().parents[1]


def _code_digest(record: dict, verb: str | None, workdir: Path) -> tuple[str | None, bool | None]:
    """(digest the job ran with, whether the package's code still has it); from the record's params."""
    recorded = [m.group(1) for p in record.get("params") or [] if (m := _CODE_PARAM.match(str(p)))]
    current = None
    if verb:
        try:
            current = codedigest.code_digest(_code_root(workdir), verb)
        except FileNotFoundError:
            current = None
    if current is not None and current in recorded:
        return current, True
    if len(recorded) == 1:
        return recorded[0], False if current is not None else None
    return None, None


# ---- the walk
def trace(paths: Iterable[str | os.PathLike], workdir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The provenance graph of `paths`: {"workdir", "targets", "nodes": {key: node}}, nodes in the order found
    (targets first, then their inputs breadth first). A node made by a rule has `made_by`; a root has none."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no path given")
    wd = Path(os.path.abspath(workdir)) if workdir else find_workdir(paths[0])
    if not (wd / ".snakemake" / "metadata").is_dir():
        raise NoRecord(f"{wd}: no .snakemake/metadata folder: this is not the working directory of a Snakemake "
                       f"run of the pipeline")
    targets = [key_of(p, wd) for p in paths]
    for p, key in zip(paths, targets):
        if read_record(wd, key) is None:
            where = "exists" if (wd / key).exists() else "does not exist"
            raise NoRecord(f"{p}: Snakemake has no record of {key} in {wd / '.snakemake' / 'metadata'} (the file "
                           f"{where}): it was not made by a finished job of this pipeline's workflow, or its "
                           f"record was removed")
    nodes: dict[str, dict] = {}
    todo = list(dict.fromkeys(targets))
    while todo:
        key = todo.pop(0)
        if key in nodes:
            continue
        record = read_record(wd, key)
        node = {"path": key, **describe_file(wd / key, walk=record is not None), "made_by": None}
        if record is not None:
            node["made_by"] = _made_by(record, key, wd)
            todo += [k for k in node["made_by"]["inputs"] if k not in nodes]
        nodes[key] = node
    for node in nodes.values():
        # a shard's attrs hold the digests of the inputs its verb read: which of them match an input's digest now
        made = node["made_by"]
        if made and node.get("shard_inputs"):
            now = {nodes[k].get("digest") for k in made["inputs"] if k in nodes}
            node["shard_inputs_unmatched"] = sorted(k for k, d in node["shard_inputs"].items() if d not in now)
        # Snakemake recorded a checksum of each small input file a job read: flag files changed since
        for key, checksum in (made or {}).get("input_checksums", {}).items():
            algo, _, value = str(checksum).partition(":")
            other = nodes.get(key)
            if other and algo == "sha256" and other.get("kind") == "file" and other.get("digest") not in (None, value):
                other.setdefault("changed_since_read_by", []).append(made["rule"])
    return {"workdir": str(wd), "targets": targets, "nodes": nodes}


def _made_by(record: dict, key: str, wd: Path) -> dict[str, Any]:
    inputs = sorted(dict.fromkeys(str(p) for p in record.get("input") or []))
    logs = [str(p) for p in record.get("log") or []]
    verb, args = verb_arguments(record.get("shellcmd") or "")
    known = set(inputs) | set(logs) | {key}

    def is_file(value: str) -> bool:  # an input, a log, or an output of some job (it has a record)
        return value in known or (("/" in value) and read_record(wd, value) is not None)

    config, files = split_arguments(args, is_file)
    code, current = _code_digest(record, verb, wd)
    start, end = record.get("starttime"), record.get("endtime")
    return {
        "rule": record.get("rule"), "verb": verb, "inputs": inputs, "log": logs,
        "config": config, "file_arguments": files, "code_digest": code, "code_is_current": current,
        "started": _iso(start), "finished": _iso(end),
        "seconds": round(end - start, 1) if start is not None and end is not None else None,
        "shellcmd": record.get("shellcmd"), "input_checksums": dict(record.get("input_checksums") or {}),
    }


# ---- rendering
def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def _lines(graph: dict) -> list[tuple[str, dict, dict[str, int]]]:
    number = {key: i + 1 for i, key in enumerate(graph["nodes"])}
    return [(key, node, number) for key, node in graph["nodes"].items()]


def _digest_text(node: dict) -> str:
    parts = [node["kind"], _size(node.get("size"))]
    if node.get("rows") is not None:
        parts.append(f"{node['rows']} rows")
    if node.get("digest"):
        parts.append(f"digest {node['digest'][:16]}")
    elif node.get("error"):
        parts.append(f"not hashed: {node['error']}")
    elif node["kind"] != "missing":
        parts.append("not hashed (" + ("not made by a rule" if node.get("size") is None else "large") + ")")
    if node.get("changed_since_read_by"):
        parts.append("CHANGED since rule(s) " + ", ".join(node["changed_since_read_by"]) + " read it")
    return ", ".join(parts)


def summary(graph: dict) -> dict[str, list[str]]:
    """{rule: [outputs in the chain]} in the order found; roots (made by no rule) under '(not made by a rule)'."""
    out: dict[str, list[str]] = {}
    for key, node in graph["nodes"].items():
        rule = node["made_by"]["rule"] if node["made_by"] else "(not made by a rule)"
        out.setdefault(rule, []).append(key)
    return out


def render_text(graph: dict) -> str:
    nodes = graph["nodes"]
    lines = [f"provenance of {', '.join(graph['targets'])}",
             f"  from Snakemake's records in {graph['workdir']}/.snakemake/metadata: {len(nodes)} files, "
             f"{sum(1 for n in nodes.values() if n['made_by'])} made by the pipeline", "", "by rule:"]
    for rule, keys in summary(graph).items():
        shown = ", ".join(f"{k} ({(nodes[k].get('digest') or '-')[:12]})" for k in keys[:6])
        lines.append(f"  {rule:<24} {shown}" + (f", ... ({len(keys)} in all)" if len(keys) > 6 else ""))
    lines.append("")
    for key, node, number in _lines(graph):
        lines.append(f"[{number[key]}] {key}  ({_digest_text(node)})")
        made = node["made_by"]
        if made is None:
            lines.append("    not made by a rule (no Snakemake record): an input the pipeline was given")
            continue
        took = f" ({made['seconds']:.0f} s)" if made["seconds"] is not None else ""
        lines.append(f"    made by   rule {made['rule']}, python -m pipeline {made['verb']}, "
                     f"started {made['started']}, finished {made['finished']}{took}")
        if node.get("written_at"):
            lines.append(f"    written   {node['written_at']} (the shard's attrs)")
        if node.get("shard_inputs"):
            unmatched = node["shard_inputs_unmatched"]
            lines.append("    attrs     input digests recorded by the verb: " + (
                "all equal to its inputs' digests" if not unmatched
                else f"{', '.join(unmatched)} not equal to any input's digest shown"))
        state = {True: "the package's current code", False: "the code has changed since", None: "unknown"}
        lines.append(f"    code      {made['code_digest'] or '?'} ({state[made['code_is_current']]})")
        if made["config"]:
            width = max(len(k) for k in made["config"])
            lines.append("    config    " + "\n              ".join(
                f"{k:<{width}} = {_value(v)}" for k, v in made["config"].items()))
        refs = [f"[{number[k]}] {k}" for k in made["inputs"] if k in number]
        lines.append("    inputs    " + ("\n              ".join(refs) if refs else "none"))
    return "\n".join(lines) + "\n"


def render_markdown(graph: dict) -> str:
    nodes = graph["nodes"]
    lines = ["# Provenance", "",
             f"Of {', '.join(f'`{t}`' for t in graph['targets'])}: every file they were made from, back to the "
             f"pipeline's inputs, from Snakemake's records (`.snakemake/metadata`). Digests: a shard's is the hash "
             f"of its recorded per-array sha256s (`python -m pipeline inspect --verify` recomputes them), a file's "
             f"its sha256 (first 16 hex digits here).", "",
             "| # | file | kind | digest | made by rule | finished (UTC) |", "|---|---|---|---|---|---|"]
    for key, node, number in _lines(graph):
        made = node["made_by"]
        lines.append(f"| {number[key]} | `{key}` | {node['kind']} | `{(node.get('digest') or '-')[:16]}` | "
                     f"{made['rule'] if made else '(input)'} | {made['finished'] if made else ''} |")
    for key, node, number in _lines(graph):
        made = node["made_by"]
        lines += ["", f"## {number[key]}. `{key}`", "", f"- {_digest_text(node)}"]
        if made is None:
            lines.append("- not made by a rule: an input the pipeline was given")
            continue
        lines.append(f"- made by rule `{made['rule']}` (`python -m pipeline {made['verb']}`), started "
                     f"{made['started']}, finished {made['finished']}")
        current = {True: "current", False: "changed since", None: "unknown"}[made["code_is_current"]]
        lines.append(f"- code digest `{made['code_digest'] or '?'}` ({current})")
        if made["config"]:
            lines.append("- config: " + ", ".join(f"`{k}` = `{_value(v)}`" for k, v in made["config"].items()))
        refs = [f"{number[k]} (`{k}`)" for k in made["inputs"] if k in number]
        lines.append("- inputs: " + (", ".join(refs) if refs else "none"))
    return "\n".join(lines) + "\n"
