"""Config validation: the default and the paper overlay validate; wrong keys and values are named."""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import update_config, validate

REPO = Path(__file__).resolve().parents[1]
SCHEMA = str(REPO / "workflow" / "schemas" / "config.schema.yaml")


def load(name: str) -> dict:
    return yaml.safe_load((REPO / name).read_text())


def merged_paper() -> dict:
    cfg = copy.deepcopy(load("config.yaml"))
    update_config(cfg, load("workflow/configs/paper.yaml"))
    return cfg


def test_default_and_paper_configs_validate():
    validate(copy.deepcopy(load("config.yaml")), SCHEMA)
    cfg = merged_paper()
    validate(cfg, SCHEMA)
    # the overlay merges nested keys: untouched keys of the default survive
    assert cfg["datasets"]["nuscenes"]["width"] == 576 and cfg["datasets"]["nuscenes"]["enabled"] is True
    assert cfg["train"]["weights"] == {"light": 0.01, "sf": 1.0, "cst": 1.0, "ds": 1.0, "seg": 1.0}
    # Monodepth2's auto-masking: off on the demo (README: seeds), on at the paper's settings (its default)
    assert load("config.yaml")["depth_teacher"]["automask"] is False and cfg["depth_teacher"]["automask"] is True


def test_depth_teacher_lr_is_one_value_or_one_per_dataset():
    """The demo gives each dataset its teacher lr; paper.yaml's single Monodepth2 value replaces the mapping."""
    assert load("config.yaml")["depth_teacher"]["lr"] == {"nuscenes": 0.00025, "robotcar": 0.0005}
    assert merged_paper()["depth_teacher"]["lr"] == 0.0001
    for bad in ({"nuscenes": 1e-4}, {"nuscenes": 1e-4, "robotcar": 1e-4, "kitti": 1e-4}, {"nuscenes": -1,
                                                                                         "robotcar": 1e-4}, -0.1):
        cfg = copy.deepcopy(load("config.yaml"))
        cfg["depth_teacher"]["lr"] = bad
        with pytest.raises(Exception, match="lr|valid"):
            validate(cfg, SCHEMA)


def test_paper_config_builds_the_paper_model():
    from pipeline.model import build_model, count_parameters

    model = build_model(merged_paper() | {"model": {**merged_paper()["model"], "encoder": {"num_layers": 18,
                                                                                         "pretrained": None}}})
    total = sum(count_parameters(getattr(model, m)) for m in ("light", "encoder", "depth_decoder", "seg_decoder"))
    assert abs(total / 1e6 - 17.688) < 0.01


@pytest.mark.parametrize("path, value, needle", [
    (("datasets", "nuscenes", "widht"), 192, "widht"),                 # misspelt key
    (("datasets", "nuscenes", "width"), 100, "100"),                   # not a multiple of 32
    (("seg_teacher", "tau"), 1.5, "1.5"),                              # probability out of range
    (("device",), "gpu", "gpu"),                                       # not auto/cpu/cuda
    (("datasets", "robotcar", "runs"), {"day": []}, "night"),          # both run lists needed
])
def test_bad_values_are_named(path, value, needle):
    cfg = copy.deepcopy(load("config.yaml"))
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(Exception) as exc:
        validate(cfg, SCHEMA)
    assert needle in str(exc.value)


def test_snakemake_stops_at_parse_time_naming_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets:\n  nuscenes:\n    height: 90\n")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "frames", "-n", "--cores", "1", "--configfile", str(bad)],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "90" in out and "height" in out


@pytest.mark.parametrize("profile", ["slurm", "lsf"])
def test_cluster_profiles_load_with_their_executor_plugins(profile):
    """The profiles name executor plugins (installed by the `cluster` extra): a dry run must build the DAG."""
    proc = subprocess.run([sys.executable, "-m", "snakemake", "train", "-n", "--profile",
                           f"workflow/profiles/{profile}"], cwd=REPO, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-2000:]
    assert "train_student" in out and "This was a dry-run" in out


def test_the_schema_holds_every_default_and_config_yaml_shows_the_same_values():
    """One config: an empty config validates to exactly config.yaml (the schema's defaults), so no key
    can have a default that disagrees with the documented one."""
    from pipeline.config import validated

    assert validated({}) == validated(load("config.yaml")) == load("config.yaml")


def test_a_missing_real_dataset_root_fails_the_dry_run_naming_the_key(tmp_path):
    for name in ("Snakefile", "config.yaml"):
        (tmp_path / name).write_text((REPO / name).read_text())
    subprocess.run(["cp", "-r", str(REPO / "workflow"), str(REPO / "envs"), str(tmp_path)], check=True)
    (tmp_path / "pipeline").symlink_to(REPO / "pipeline")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "train", "-n", "--cores", "1", "--configfile",
                           str(REPO / "workflow/configs/paper.yaml")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0
    assert "config key datasets.nuscenes.root" in proc.stdout + proc.stderr
