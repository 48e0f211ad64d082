"""Code digests are computed from the import closure of each rule's verb (pipeline.codedigest).

For every rule: its `code` param is the digest of the verb its shell command runs; the digest changes
when any module of the verb's closure changes and stays the same when a module outside it changes.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from pipeline import codedigest
from pipeline.cli import VERBS

REPO = Path(__file__).resolve().parents[1]
RULES = sorted((REPO / "workflow" / "rules").glob("*.smk"))


def rules_with_code():
    """(rule, verb of its code param, verb its shell runs) for every rule with a shell command."""
    found = []
    for smk in RULES:
        for block in re.split(r"^rule ", smk.read_text(), flags=re.M)[1:]:
            name = block.split(":", 1)[0].strip()
            if "shell:" not in block:
                continue
            code = re.search(r'code=code_digest\("([\w-]+)"\)', block)
            shell = re.search(r"-m pipeline ([\w-]+)|\{PY\} ([\w-]+)", block)
            found.append((name, code and code.group(1), shell and (shell.group(1) or shell.group(2))))
    return found


def test_every_rule_digests_the_verb_it_runs():
    rules = rules_with_code()
    assert len(rules) >= 15
    for name, code_verb, shell_verb in rules:
        assert code_verb is not None, f"rule {name} has no code=code_digest(VERB) param"
        assert code_verb == shell_verb, f"rule {name} digests {code_verb!r} but runs {shell_verb!r}"
        assert code_verb in VERBS


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory):
    root = tmp_path_factory.mktemp("pkg")
    shutil.copytree(REPO / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _all_modules(root: Path) -> list[str]:
    return sorted(".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
                  for p in (root / "pipeline").rglob("*.py"))


@pytest.mark.parametrize("verb", VERBS)
def test_digest_follows_exactly_the_import_closure(package_copy, verb):
    root = package_copy
    closure = set(codedigest.closure(root, [codedigest.verb_module(verb), *codedigest.ENTRY]))
    assert codedigest.verb_module(verb) in closure and "pipeline.cli" in closure and "pipeline" in closure
    before = codedigest.code_digest(root, verb)
    for module in _all_modules(root):
        path = codedigest.module_file(root, module)
        original = path.read_bytes()
        try:
            path.write_bytes(original + b"\n# edited\n")
            changed = codedigest.code_digest(root, verb) != before
        finally:
            path.write_bytes(original)
        assert changed == (module in closure), (verb, module, changed)
    assert codedigest.code_digest(root, verb) == before


def test_closure_follows_relative_nested_and_from_imports(tmp_path):
    pkg = tmp_path / "pipeline"
    (pkg / "verbs").mkdir(parents=True)
    (pkg / "sub").mkdir()
    for f in ("__init__.py", "verbs/__init__.py", "sub/__init__.py", "__main__.py", "cli.py", "unused.py"):
        (pkg / f).write_text("")
    (pkg / "verbs" / "x.py").write_text("def run():\n    from pipeline.sub import leaf\n    from . import helper\n")
    (pkg / "verbs" / "helper.py").write_text("import pipeline.deep\n")
    (pkg / "sub" / "leaf.py").write_text("from ..other import thing\n")
    (pkg / "other.py").write_text("thing = 1\n")
    (pkg / "deep.py").write_text("")
    got = set(codedigest.closure(tmp_path, ["pipeline.verbs.x"]))
    assert got == {"pipeline", "pipeline.verbs", "pipeline.verbs.x", "pipeline.verbs.helper", "pipeline.sub",
                   "pipeline.sub.leaf", "pipeline.other", "pipeline.deep"}
    with pytest.raises(FileNotFoundError, match="no module pipeline.verbs.nope"):
        codedigest.code_digest(tmp_path, "nope")
