"""Every pretraining task trains under 2-process gloo DDP and the ranks stay identical."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_ddp import free_port

HERE = Path(__file__).parent
TASKS = ("mae", "simclr", "mocov3", "clip", "diverse_patch", "msvq", "var")


@pytest.mark.slow
def test_every_pretraining_task_runs_under_two_ranks(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VITKIT_NO_PROGRESS": "1"}
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(HERE / "ddp_tasks_worker.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in TASKS:
        a = torch.load(tmp_path / f"{name}_rank0.pt", weights_only=True)
        b = torch.load(tmp_path / f"{name}_rank1.pt", weights_only=True)
        assert a.keys() == b.keys()
        for k in a:
            if k.endswith(("running_mean", "running_var", "num_batches_tracked")):
                continue  # BatchNorm statistics are per rank (DDP broadcasts rank 0's before each forward)
            assert torch.equal(a[k], b[k]), (name, k)  # gradients (and EMA codebooks) were synchronised
        assert (tmp_path / name / "model.safetensors").is_file()
