"""Run by test_ddp_tasks.py under torchrun (2 CPU processes, gloo): one epoch of every pretraining task,
each rank saving its weights so the test can check that DDP kept the ranks identical."""
import sys
from pathlib import Path

import torch

from vitkit.train import TrainConfig, fit
from vitkit.train import distributed as dist
from vitkit.train.run import build_run

out = Path(sys.argv[1])
dist.init_distributed()
r = dist.rank()
assert dist.world_size() == 2 and dist.is_distributed()
base = dict(model="vit_nano_patch2_8", data="digits", epochs=1, batch_size=64, num_threads=1, log_every=1000)
tok = {"channels": [8, 16], "codebook_size": 16, "embed_dim": 4}
small = {"dim": 16, "depth": 1, "num_heads": 2}
runs = {
    "mae": dict(task="mae", task_args={"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2}),
    "simclr": dict(task="simclr"),
    "mocov3": dict(task="mocov3", task_args={"hidden_dim": 64, "dim": 32}),
    "clip": dict(task="clip", task_args={"embed_dim": 16, "text_args": {"width": 16, "depth": 1, "num_heads": 2}}),
    "diverse_patch": dict(task="diverse_patch"),
    "msvq": dict(task="vq", task_args={**tok, "kind": "multiscale"}),
    "var": dict(task="var", task_args={"tokenizer": str(out / "msvq"), **small}),
}
for name, extra in runs.items():
    cfg = TrainConfig(**{**base, **extra}, out=str(out / name))
    model, task, loaders, bundle, meta = build_run(cfg)
    fit(model, task, loaders, cfg, meta)
    torch.save(model.state_dict(), out / f"{name}_rank{r}.pt")
dist.cleanup()
