"""torch.distributed in a few functions: init from torchrun's env vars, rank / world size, barrier, cleanup.

NCCL when the device is CUDA (one GPU per process, cuda:LOCAL_RANK), gloo on the CPU. Without torchrun
(no WORLD_SIZE, or WORLD_SIZE=1) nothing is initialised and every helper is a cheap no-op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info(env=None) -> DistInfo:
    """RANK, WORLD_SIZE, LOCAL_RANK as torchrun sets them (defaults: one process). Across nodes RANK is
    global (0 .. WORLD_SIZE - 1) and LOCAL_RANK the process's index on its node (the GPU it takes)."""
    env = os.environ if env is None else env
    try:
        info = DistInfo(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))
    except ValueError as exc:
        raise ValueError(f"torchrun environment variables RANK/WORLD_SIZE/LOCAL_RANK must be integers: {exc}") from exc
    if info.world_size < 1 or not 0 <= info.rank < info.world_size:
        raise ValueError(f"invalid torchrun environment: RANK={info.rank}, WORLD_SIZE={info.world_size}")
    local_world = int(env.get("LOCAL_WORLD_SIZE", info.world_size))
    if not 0 <= info.local_rank < local_world:
        raise ValueError(f"invalid torchrun environment: LOCAL_RANK={info.local_rank}, LOCAL_WORLD_SIZE={local_world}")
    return info


def device_for(info: DistInfo, device: torch.device) -> torch.device:
    """This process's device: cuda:LOCAL_RANK under torchrun on CUDA (one GPU per process on each node)."""
    if device.type == "cuda" and info.enabled:
        return torch.device("cuda", info.local_rank)
    return device


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def init(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun describes (if any); returns (info, this process's device).

    On CUDA each process takes cuda:LOCAL_RANK."""
    info = env_info()
    device = device_for(info, device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    if info.enabled and not dist.is_initialized():
        dist.init_process_group(backend=backend_for(device), init_method="env://",
                                rank=info.rank, world_size=info.world_size,
                                device_id=device if device.type == "cuda" else None)
    return info, device


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
