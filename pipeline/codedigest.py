"""Code digests of the verbs: what each Snakemake rule passes as its `code` param (a rerun trigger).

A verb's digest covers the import closure of `pipeline.verbs.<verb>` inside the package, plus the
entry point (`pipeline/__main__.py`, `pipeline/cli.py`) and every package `__init__.py` on the way.
The closure is found by walking the `import` / `from ... import` statements of each module (at any
depth, so imports inside functions count too): editing a module re-runs exactly the rules whose verbs
import it, directly or not. Standard library only: the Snakefile loads this file by path.
"""
from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = "pipeline"
ENTRY = ("pipeline.__main__", "pipeline.cli")


def module_file(root: Path, name: str) -> Path | None:
    """The file of module `name` (dotted, inside the package) under `root` (the folder holding the package)."""
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_package(root: Path, name: str) -> bool:
    return (root.joinpath(*name.split(".")) / "__init__.py").is_file()


def imported_modules(root: Path, name: str) -> set[str]:
    """Package modules imported anywhere in module `name` (absolute and relative imports)."""
    path = module_file(root, name)
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = _imported_names(path.read_bytes(), here)
    return {m for m in found if (m == PACKAGE or m.startswith(PACKAGE + ".")) and module_file(root, m)}


@functools.lru_cache(maxsize=4096)
def _imported_names(source: bytes, here: str) -> frozenset[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = here.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return frozenset(found)


def closure(root: Path, names) -> list[str]:
    """Every package module reached from `names`, with the parent packages each import executes."""
    todo, seen = list(names), set()
    while todo:
        name = todo.pop()
        if name in seen or module_file(root, name) is None:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts)) if _is_package(root, ".".join(parts[:i]))]
        todo += sorted(imported_modules(root, name) - seen)
    return sorted(seen)


def verb_module(verb: str) -> str:
    return f"{PACKAGE}.verbs.{verb.replace('-', '_')}"


def verb_files(root: str | Path, verb: str) -> list[Path]:
    root = Path(root)
    if module_file(root, verb_module(verb)) is None:
        raise FileNotFoundError(f"no module {verb_module(verb)} under {root} for verb {verb!r}")
    return [module_file(root, m) for m in closure(root, [verb_module(verb), *ENTRY])]


def code_digest(root: str | Path, verb: str) -> str:
    """sha256 (16 hex digits) over the paths and bytes of the verb's closure."""
    root = Path(root)
    h = hashlib.sha256()
    for path in verb_files(root, verb):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]
