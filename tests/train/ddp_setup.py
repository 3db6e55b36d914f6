"""The run shared by test_ddp.py (single process, batch 2B) and ddp_worker.py (2 ranks x B)."""
from train_toys import make_data, make_model  # noqa: F401
from vitkit.train import TrainConfig

B = 4  # per rank
TRAIN = make_data(32)
TEST = make_data(12, seed=1)
# no augmentation, no dropout, no mixing: the two runs see the same images and must agree
CFG = TrainConfig(model="toy", epochs=2, batch_size=2 * B, lr=1e-2, warmup_epochs=0.5, label_smoothing=0.0,
                  clip_grad=1.0, log_every=1, num_threads=1, amp=None)  # fp32: the ranks' sums must match to 1e-6
