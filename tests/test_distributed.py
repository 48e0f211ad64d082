"""pipeline.distributed reads the environment torchrun sets, on one node and across nodes: RANK is the
global rank, LOCAL_RANK the process's index on its node and the GPU it takes. Checked by hand-made
environments and by a real two-"node" torchrun c10d rendezvous on this machine (gloo, CPU)."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from pipeline import distributed


def test_env_info_across_nodes_and_device_per_local_rank():
    # node 1 of 2 with 4 processes each: the 6th process overall, the 2nd on its node
    info = distributed.env_info({"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"})
    assert (info.rank, info.world_size, info.local_rank, info.enabled, info.is_main) == (5, 8, 1, True, False)
    assert distributed.device_for(info, torch.device("cuda")) == torch.device("cuda", 1)
    assert distributed.device_for(info, torch.device("cpu")) == torch.device("cpu")
    single = distributed.env_info({})
    assert (single.rank, single.world_size, single.enabled) == (0, 1, False)
    assert distributed.device_for(single, torch.device("cuda", 2)) == torch.device("cuda", 2)  # as configured


@pytest.mark.parametrize("env, needle", [
    ({"RANK": "8", "WORLD_SIZE": "8"}, "RANK=8"),
    ({"RANK": "1", "WORLD_SIZE": "8", "LOCAL_RANK": "4", "LOCAL_WORLD_SIZE": "4"}, "LOCAL_RANK=4"),
    ({"RANK": "x"}, "must be integers"),
])
def test_env_info_rejects_inconsistent_environments(env, needle):
    with pytest.raises(ValueError, match=needle):
        distributed.env_info(env)


_WORKER = r"""
import json, os, torch, torch.distributed as dist
from pipeline import distributed
info, device = distributed.init(torch.device("cpu"))
total = torch.tensor([float(info.rank)])
dist.all_reduce(total)
print("RESULT " + json.dumps({"rank": info.rank, "local_rank": info.local_rank, "world_size": info.world_size,
      "node": int(os.environ["GROUP_RANK"]), "sum": total.item(),
      "gpu": str(distributed.device_for(info, torch.device("cuda")))}), flush=True)
distributed.cleanup()
"""


def test_two_node_torchrun_rendezvous_gives_global_and_local_ranks(tmp_path):
    """Two torchrun agents (the two nodes of the train_student launcher, here on one host) with 2
    processes each meet at one c10d endpoint, as `srun ... torchrun --nnodes 2 --rdzv_backend c10d` does."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "2",
           "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "test", str(script)]
    agents = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
              for _ in range(2)]
    outputs = [a.communicate(timeout=600) for a in agents]
    assert all(a.returncode == 0 for a in agents), [err[-2000:] for _, err in outputs]
    # the two processes of an agent share its stdout: their lines may run together, so match each record
    results = [json.loads(m) for out, _ in outputs for m in re.findall(r"RESULT (\{[^{}]*\})", out)]
    assert sorted(r["rank"] for r in results) == [0, 1, 2, 3]
    assert all(r["world_size"] == 4 and r["sum"] == 6.0 for r in results)  # one process group: 0+1+2+3
    for r in results:  # node-major ranks: LOCAL_RANK is the index on the node, and the GPU taken
        assert r["rank"] == 2 * r["node"] + r["local_rank"] and r["gpu"] == f"cuda:{r['local_rank']}"
