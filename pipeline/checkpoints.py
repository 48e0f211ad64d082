"""Checkpoint files and resumable training state: one home for the student, CycleGAN and Monodepth2.

- `save(obj, path)` / `load(path)`: torch.save written atomically (never a half-written file), and
  torch.load with `weights_only=True`.
- `TrainingState(folder, record, keep, every_s)`: the resumable state of one training run. `record` is what
  shapes the weights (the caller's settings that matter and the digests of its input data); its
  digest is the run's key and the states live in `folder/<key>/epoch_NNN.pt`. One stale-state policy:
  states of any other key are removed when a run starts (they can never be resumed by this run), and
  a finished run clears the folder. `folder` is the rule's state folder (`results/state/...`): never a
  declared output, so Snakemake does not delete it before a re-run of a killed job. `due()` tells an
  epoch's end whether to write one: `every_s` seconds after the run started or its last state (0 =
  every epoch). The training verbs use `STATE_EVERY_S`: on real data every epoch outlasts it, so every
  epoch writes a state; on the demo (epochs of ~10 s, a Monodepth2 state of ~320 MB and ~0.9 s to
  write) a killed run loses at most 5 minutes of training.
- `rng_state()` / `set_rng_state()`: the global RNGs (torch, CUDA, numpy, random) in a form that
  `load` accepts.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from pipeline.atomic import atomic_path

log = logging.getLogger(__name__)

STATE_EVERY_S = 300.0  # the training verbs' interval between resumable states (see the module docstring)


def save(obj: Any, path: str | os.PathLike) -> Path:
    """`torch.save` to `path` atomically. A failed write (torch reports a full disk as "enforce fail at
    inline_container.cc ... unexpected pos") raises OSError naming the file and its file system's free
    space; nothing is left at `path`."""
    try:
        with atomic_path(path) as tmp:
            torch.save(obj, tmp)
    except RuntimeError as exc:
        free = shutil.disk_usage(Path(path).parent).free
        raise OSError(f"could not write {path}: {exc} ({free / 1e9:.2f} GB free on its file system; "
                      "a full disk shows as 'unexpected pos')") from exc
    return Path(path)


def load(path: str | os.PathLike, map_location="cpu") -> Any:
    return torch.load(path, map_location=map_location, weights_only=True)


def record_key(record: Mapping) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]


class TrainingState:
    """Resumable state of one run (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike, record: Mapping, keep: int = 1, every_s: float = 0.0):
        if keep < 0:
            raise ValueError(f"keep must be >= 0 (0 = keep all), got {keep}")
        if every_s < 0:
            raise ValueError(f"the interval between resumable states must be >= 0 s (0 = every epoch), got {every_s}")
        self.every_s = float(every_s)
        self._last = time.monotonic()
        self.root = Path(folder)
        self.key = record_key(record)
        self.dir = self.root / self.key
        self.keep = keep
        if self.root.is_dir():
            for other in self.root.iterdir():
                if other.name != self.key:
                    log.warning("removing %s: resumable state of other settings or input data", other)
                    shutil.rmtree(other) if other.is_dir() else other.unlink()

    def epochs(self) -> dict[int, Path]:
        out = {}
        for p in self.dir.glob("epoch_*.pt"):
            stem = p.stem.split("_", 1)[1]
            if stem.isdigit():
                out[int(stem)] = p
        return out

    def latest(self, max_epoch: int | None = None, map_location="cpu") -> dict | None:
        """The newest saved state with epoch <= max_epoch, or None."""
        found = {n: p for n, p in self.epochs().items() if max_epoch is None or n <= max_epoch}
        if not found:
            return None
        n = max(found)
        log.info("resuming from %s (epoch %d)", found[n], n)
        return load(found[n], map_location)

    def due(self) -> bool:
        """Whether the epoch that just ended writes a state: `every_s` since the start or the last state."""
        return time.monotonic() - self._last >= self.every_s

    def save(self, epoch: int, state: Mapping) -> Path:
        path = save({**state, "epoch": int(epoch)}, self.dir / f"epoch_{epoch:03d}.pt")
        self._last = time.monotonic()
        if self.keep:
            found = self.epochs()
            for n in sorted(found)[:-self.keep]:
                found[n].unlink(missing_ok=True)
        return path

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def seed_everything(seed: int) -> None:
    """Seed every global RNG (random, numpy, torch)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every global RNG, in a form torch.load(weights_only=True) accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
            "random": random.getstate()}


def set_rng_state(state: Mapping) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["random"]
    random.setstate((version, tuple(internal), gauss))
