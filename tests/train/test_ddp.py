"""Two CPU ranks (gloo, launched by torchrun) with B images each train like one process with 2B."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddp_setup import B, CFG, TEST, TRAIN, make_model
from train_toys import ToyLoader
from vitkit.tasks import Classify
from vitkit.train import fit

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def epoch_lines(out):
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["kind"] == "epoch"]


@pytest.mark.slow
def test_two_ranks_match_one_process_with_the_global_batch(tmp_path):
    ddp_out, single_out = tmp_path / "ddp", tmp_path / "single"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VITKIT_NO_PROGRESS": "1"}
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # stay on loopback whatever the hostname resolves to
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(HERE / "ddp_worker.py"), str(ddp_out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    model = make_model()
    loaders = {"train": ToyLoader(*TRAIN, 2 * B), "test": ToyLoader(*TEST, 8, shuffle=False)}
    fit(model, Classify(), loaders, CFG.replace(out=str(single_out)))

    rank0 = torch.load(ddp_out / "rank0.pt", weights_only=True)
    rank1 = torch.load(ddp_out / "rank1.pt", weights_only=True)
    for k, v in model.state_dict().items():
        assert torch.equal(rank0[k], rank1[k]), k
        assert torch.allclose(rank0[k], v, atol=1e-6, rtol=0), (k, (rank0[k] - v).abs().max())
    # the checkpoint written by rank 0 holds the same weights; metrics are reduced over both ranks
    ddp_epochs, single_epochs = epoch_lines(ddp_out), epoch_lines(single_out)
    for d, s in zip(ddp_epochs, single_epochs, strict=True):
        assert d["step"] == s["step"] and d["test_count"] == s["test_count"] == 12
        assert d["test_acc"] == s["test_acc"]
        assert d["train_loss"] == pytest.approx(s["train_loss"], abs=1e-5)
        assert d["test_loss"] == pytest.approx(s["test_loss"], abs=1e-5)
