"""DeiT distillation: the hard and soft losses equal their formulas; a distilled ViT learns digits."""
import math
import time

import pytest
import torch
from torch import nn

from vitkit import create_model
from vitkit.tasks import Distill
from vitkit.train import TrainConfig, fit
from vitkit.train.run import build_run


class Fixed(nn.Module):
    """A 'model' returning given logits, whatever the input (the student in training mode: a pair)."""

    def __init__(self, *outs):
        super().__init__()
        self.outs = outs
        self.p = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.outs if len(self.outs) > 1 else self.outs[0]


def _ce(logits, y):  # cross-entropy by hand
    return sum(-math.log(math.exp(r[t]) / sum(math.exp(v) for v in r)) for r, t in zip(logits, y)) / len(y)


CLS = [[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]]
DIST = [[0.0, 1.0, 0.0], [1.0, -1.0, 2.0]]
TEACHER = [[0.1, 3.0, 0.2], [0.0, 0.3, 0.2]]   # argmax: 1, 1
LABELS = [0, 2]


def _batch():
    return torch.zeros(2, 1, 4, 4), torch.tensor(LABELS)


def test_hard_loss_equals_formula():
    task = Distill(Fixed(torch.tensor(TEACHER)), kind="hard")
    loss, m = task.loss(Fixed(torch.tensor(CLS), torch.tensor(DIST)), _batch())
    want = 0.5 * _ce(CLS, LABELS) + 0.5 * _ce(DIST, [1, 1])
    assert abs(loss.item() - want) < 1e-6 and abs(m["loss_dist"].item() - _ce(DIST, [1, 1])) < 1e-6
    assert m["acc"].item() == 0.5  # the class head: sample 0 right, sample 1 wrong


def test_soft_loss_equals_formula():
    tau, alpha = 2.0, 0.3
    task = Distill(Fixed(torch.tensor(TEACHER)), kind="soft", tau=tau, alpha=alpha)
    loss, _ = task.loss(Fixed(torch.tensor(CLS), torch.tensor(DIST)), _batch())

    def softmax(r):
        e = [math.exp(v / tau) for v in r]
        return [v / sum(e) for v in e]

    kl = sum(sum(pt * math.log(pt / ps) for pt, ps in zip(softmax(t), softmax(s)))
             for t, s in zip(TEACHER, DIST)) / 2   # KL(teacher || student) at tau, batch mean
    want = (1 - alpha) * _ce(CLS, LABELS) + alpha * tau ** 2 * kl
    assert abs(loss.item() - want) < 1e-6


def test_teacher_is_frozen_and_single_output_students_work():
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    task = Distill(teacher.train(), kind="soft")
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    student = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    teacher.train()  # left in training mode by someone: the task puts it back in eval
    loss, _ = task.loss(student, _batch())
    loss.backward()
    assert student[1].weight.grad is not None and teacher[1].weight.grad is None and not teacher.training
    with pytest.raises(ValueError, match="kind"):
        Distill(teacher, kind="medium")


def test_eval_metrics_score_the_average_of_the_heads():
    m = create_model("deit_nano_distilled_patch2_8").eval()
    x, y = torch.randn(5, 1, 8, 8), torch.randint(0, 10, (5,))
    sums = Distill(nn.Identity()).eval_metrics(m, (x, y))
    with torch.no_grad():
        f = m.forward_features(x)
        avg = (m.head(f[:, 0]) + m.head_dist(f[:, 1])) / 2
    assert sums["correct"].item() == (avg.argmax(-1) == y).sum().item() and sums["count"] == 5


@pytest.mark.slow
def test_distilled_vit_learns_digits_from_a_cnn_teacher(tmp_path):
    """The small CNN (2 epochs) teaches a 2-block nano DeiT (10 epochs, hard distillation): > 80% held-out."""
    torch.set_num_threads(1)
    t0 = time.time()
    common = dict(data="digits", batch_size=32, num_threads=1, log_every=1000)
    cfg = TrainConfig(model="resnet_small_28", epochs=2, lr=2e-3, warmup_epochs=0.5, out=str(tmp_path / "teacher"),
                      model_args={"img_size": 8}, **common)
    teacher, task, loaders, _, meta = build_run(cfg)
    assert fit(teacher, task, loaders, cfg, meta)["test_acc"] > 0.9
    cfg = TrainConfig(model="deit_nano_distilled_patch2_8", epochs=10, lr=3e-3, warmup_epochs=1,
                      out=str(tmp_path / "deit"), model_args={"depth": 2}, **common)
    model, _, loaders, bundle, meta = build_run(cfg)
    result = fit(model, Distill(teacher, kind="hard"), loaders, cfg, meta)
    seconds = time.time() - t0
    assert result["test_count"] == len(bundle.test) == 359
    assert result["test_acc"] > 0.80, result
    assert seconds < 60, seconds
