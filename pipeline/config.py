"""The one config: the schema holds every key's default and bound; this is its typed view.

`validated(cfg)` applies `workflow/schemas/config.schema.yaml` to a config dict exactly as the
Snakefile does (Snakemake's own `validate(..., set_default=True)`): the schema is the only
validator and the only source of defaults. `TrainSettings` is the typed view the training verb
builds once, at the CLI edge, from the validated values the rule passes.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"
SWITCHES = ("real_night", "synthetic_night", "light", "distillation")


def validated(cfg: Mapping) -> dict:
    """A validated copy of `cfg` with the schema's defaults filled in; ValueError naming the key otherwise."""
    import jsonschema
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    if not isinstance(cfg, Mapping):
        raise ValueError(f"expected the config as a mapping, got {type(cfg).__name__}")
    if not SCHEMA.is_file():
        raise FileNotFoundError(f"config schema not found: {SCHEMA}")
    out = copy.deepcopy(dict(cfg))
    try:
        validate(out, str(SCHEMA), set_default=True)
    except (WorkflowError, jsonschema.ValidationError) as exc:
        cause = exc if isinstance(exc, jsonschema.ValidationError) else exc.__context__ or exc
        where = ".".join(str(p) for p in getattr(cause, "absolute_path", [])) or "<top>"
        raise ValueError(f"config key '{where}': {getattr(cause, 'message', cause)}") from exc
    check_relations(out)
    return out


def check_relations(cfg: Mapping) -> None:
    """The rules between keys that a JSON schema cannot state (the Snakefile calls this too)."""
    for section in ("model", "depth_teacher"):
        lo, hi = cfg[section]["min_depth"], cfg[section]["max_depth"]
        if not lo < hi:
            raise ValueError(f"config keys '{section}.min_depth' and '{section}.max_depth' must satisfy "
                             f"min < max, got {lo} and {hi}")


@dataclass(frozen=True)
class TrainSettings:
    """The `train` config section (validated) plus the run's seed and ablation switches."""
    epochs: int
    batch_size: int
    lr: float
    num_workers: int
    checkpoint_every: int
    keep_checkpoints: int
    weights: dict
    night_weight: float
    tau: float
    max_steps_per_epoch: int | None
    amp: bool
    image_every: int
    flip: bool
    color_aug: bool
    scheduler_step: int
    scheduler_gamma: float
    seed: int
    switches: dict

    @classmethod
    def from_config(cls, train: Mapping, seed: int, switches: Mapping) -> "TrainSettings":
        names = set(cls.__dataclass_fields__) - {"seed", "switches"}
        return cls(**{k: train[k] for k in names}, seed=int(seed), switches=ablation_switches(switches))


def ablation_switches(switches: Mapping | None) -> dict:
    """The Table 5 switches over their defaults (all on); an unknown name is an error."""
    switches = dict(switches or {})
    unknown = set(switches) - set(SWITCHES)
    if unknown:
        raise ValueError(f"unknown ablation switches {sorted(unknown)}; expected some of {list(SWITCHES)}")
    return {k: bool(switches.get(k, True)) for k in SWITCHES}
