"""Parameter and MAC counting for paper Table 4.

Two MAC conventions: "thop" (the paper's counter: thop.profile; it charges a transposed conv per
OUTPUT pixel and counts batch norm) and "flop_counter" (torch.utils.flop_counter.FlopCounterMode,
the true matmul/conv cost; MACs = FLOPs / 2)."""
from __future__ import annotations

import copy
import warnings

import torch
import torch.nn as nn

CONVENTIONS = ("thop", "flop_counter")


def count_parameters(module: nn.Module, exclude_fc: bool = True) -> int:
    """Number of parameters; with exclude_fc, parameters whose name has a component `fc` (ResNet's
    unused classifier) are left out, as Table 4 does (ResNet-18: 11,176,512 instead of 11,689,512)."""
    return sum(p.numel() for name, p in module.named_parameters()
               if not (exclude_fc and "fc" in name.split(".")))


def count_macs(module: nn.Module, inputs: tuple, convention: str = "thop") -> float:
    """MACs of one forward pass `module(*inputs)` (inputs may live on the "meta" device for
    flop_counter). The module is deep-copied first: thop leaves buffers behind in modules it
    has no rule for."""
    if convention not in CONVENTIONS:
        raise ValueError(f"count_macs: convention must be one of {CONVENTIONS}, got {convention!r}")
    if not isinstance(inputs, tuple):
        raise ValueError(f"count_macs: inputs must be a tuple of forward arguments, got {type(inputs).__name__}")
    module = copy.deepcopy(module).eval()
    if convention == "thop":
        with warnings.catch_warnings():  # thop imports distutils' LooseVersion
            warnings.simplefilter("ignore", DeprecationWarning)
            import thop
        macs, _ = thop.profile(module, inputs=inputs, verbose=False)
        return float(macs)
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return counter.get_total_flops() / 2.0
