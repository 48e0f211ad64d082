"""Helpers shared by the tests that run the `snakemake` CLI on a copy of the workflow."""
from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def copy_workflow(dst: Path, **overlays: str) -> Path:
    """The workflow as a user has it (Snakefile, config, rules, envs, profiles) in `dst`, with
    pipeline/ linked (the code digests read the package beside the Snakefile) and each overlay
    written to `dst/<name>.yaml` for --configfile."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "config.yaml"):
        shutil.copy(REPO / name, dst / name)
    for name in ("workflow", "envs", "profiles"):
        shutil.copytree(REPO / name, dst / name, symlinks=True)
    (dst / "pipeline").symlink_to(REPO / "pipeline")
    for name, text in overlays.items():
        (dst / f"{name}.yaml").write_text(text)
    return dst
