"""Device choice shared by every GPU rule (all of them also run on the CPU)."""
from __future__ import annotations

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` = cuda if available, else cpu; `cpu`, `cuda`, `cuda:1` as given (error if CUDA is absent)."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested (config key `device`) but CUDA is not available; use 'auto' or 'cpu'")
    if not (name == "cpu" or name.startswith("cuda")):
        raise ValueError(f"config key `device` must be auto, cpu or cuda[:N], got {name!r}")
    return torch.device(name)
