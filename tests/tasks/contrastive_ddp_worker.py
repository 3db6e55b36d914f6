"""Run by test_contrastive.py under torchrun (2 CPU processes, gloo).

Each rank takes its half of one fixed pair of views, runs SimCLR and MoCo v3 (BN-free heads, so the
per-rank BatchNorm question does not arise) inside DDP with negatives gathered across ranks, and
saves the loss and accuracy averaged over ranks, the DDP-averaged gradients and MoCo's momentum
encoder. The test compares them with one process on the whole batch. `setup` is shared with the test.
"""
import sys
from pathlib import Path

import torch
from torch import nn

from vitkit import create_model
from vitkit.tasks.contrastive import MoCoV3, ProjectionHead, SimCLR

N = 8  # global batch: 4 images per rank


def setup(kind: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The model (same init on every process) and the two fixed views (N, 1, 28, 28)."""
    torch.manual_seed(0)
    backbone = create_model("vit_nano_patch4_28", depth=1, embed_dim=32, num_heads=2)
    if kind == "simclr":
        model = SimCLR(backbone, proj_hidden_dim=32, proj_dim=16, tau=0.5)
    else:
        model = MoCoV3(backbone, total_steps=10, tau=0.2,
                       projector=ProjectionHead(32, 64, 16, num_layers=3, batch_norm=False),
                       predictor=ProjectionHead(16, 64, 16, num_layers=2, batch_norm=False))
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(2, N, 1, 28, 28, generator=g)
    return model, x1, x2


def main(out: Path) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo")
    r, w = dist.get_rank(), dist.get_world_size()
    assert w == 2, w
    n = N // w
    for kind in ("simclr", "mocov3"):
        model, x1, x2 = setup(kind)
        ddp = nn.parallel.DistributedDataParallel(model)
        loss, metrics = ddp(x1[r * n:(r + 1) * n], x2[r * n:(r + 1) * n])
        loss.backward()  # DDP averages the gradients over the ranks
        stats = torch.stack([loss.detach(), metrics["acc"]])
        dist.all_reduce(stats)
        stats /= w
        torch.save({"loss": stats[0], "acc": stats[1],
                    "grads": {k: p.grad for k, p in model.named_parameters() if p.grad is not None},
                    "state": model.state_dict()}, out / f"{kind}_rank{r}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
