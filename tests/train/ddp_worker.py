"""Run by test_ddp.py under torchrun (2 CPU processes, gloo): train the toy model, save each rank's weights."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402

from ddp_setup import B, CFG, TEST, TRAIN, make_model  # noqa: E402
from train_toys import ToyLoader  # noqa: E402
from vitkit.tasks import Classify  # noqa: E402
from vitkit.train import distributed as dist  # noqa: E402
from vitkit.train import fit  # noqa: E402

out = Path(sys.argv[1])
dist.init_distributed()
r, w = dist.rank(), dist.world_size()
assert w == 2 and dist.is_distributed(), (r, w)
model = make_model()
loaders = {"train": ToyLoader(*TRAIN, B, rank=r, world_size=w), "test": ToyLoader(*TEST, 4, shuffle=False, rank=r, world_size=w)}
fit(model, Classify(), loaders, CFG.replace(out=str(out)))
torch.save(model.state_dict(), out / f"rank{r}.pt")
dist.cleanup()
