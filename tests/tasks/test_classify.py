import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vitkit.tasks import Classify


class Fixed(nn.Module):
    """A 'model' returning given logits whatever the images (plus one weight, so it has a mode)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.logits + 0 * self.w


LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [1.0, 1.0, 0.0], [-2.0, 4.0, 1.0]])
LABELS = torch.tensor([0, 2, 1, 0])
IMAGES = torch.zeros(4, 1, 4, 4)


def test_label_smoothing_matches_the_formula():
    eps, k = 0.2, 3
    loss, metrics = Classify(label_smoothing=eps).loss(Fixed(LOGITS), (IMAGES, LABELS))
    logp = LOGITS.log_softmax(-1)
    expected = sum(-(1 - eps) * logp[i, y] - eps / k * logp[i].sum() for i, y in enumerate(LABELS.tolist())) / 4
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert metrics["acc"].item() == pytest.approx(2 / 4)  # rows 0 and 1 are right
    plain, _ = Classify().loss(Fixed(LOGITS), (IMAGES, LABELS))
    assert plain.item() == pytest.approx(F.cross_entropy(LOGITS, LABELS).item())


@pytest.mark.parametrize("mixup,cutmix", [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_mixing_gives_soft_targets_that_sum_to_one(mixup, cutmix):
    torch.manual_seed(0)
    task = Classify(mixup=mixup, cutmix=cutmix)
    images = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 8, 8).contiguous()  # image i is all i
    labels = torch.tensor([0, 2, 1, 1])
    mixed, targets = task.mix(images, labels, 3)
    assert targets.shape == (4, 3)
    assert torch.allclose(targets.sum(-1), torch.ones(4))
    assert mixed.shape == images.shape and not torch.equal(mixed, images)
    # sample 0 (label 0) is paired with sample 3 (label 1): its mean pixel is lam * 0 + (1 - lam) * 3
    lam = targets[0, 0].item()
    assert 0 < lam < 1 and targets[0, 1].item() == pytest.approx(1 - lam)
    assert mixed[0].mean().item() == pytest.approx((1 - lam) * 3.0, abs=1e-5)


def test_cutmix_lambda_is_the_kept_area():
    torch.manual_seed(1)
    images = torch.zeros(2, 1, 10, 10)
    images[1] = 1.0
    out, lam = Classify(cutmix=1.0).mix_images(images)
    assert out[0].mean().item() == pytest.approx(1 - lam)  # pasted area comes from image 1 (ones)


def test_mixing_only_in_training_mode_and_no_acc_when_mixed():
    model = Fixed(LOGITS)
    task = Classify(label_smoothing=0.1, mixup=1.0)
    loss, metrics = task.loss(model.train(), (IMAGES, LABELS))
    assert "acc" not in metrics and math.isfinite(loss.item())
    loss_eval, metrics_eval = task.loss(model.eval(), (IMAGES, LABELS))
    assert "acc" in metrics_eval
    assert loss_eval.item() == pytest.approx(Classify(label_smoothing=0.1).loss(model, (IMAGES, LABELS))[0].item())


def test_eval_metrics_counts_correct_and_summarize():
    task = Classify(label_smoothing=0.3)  # eval loss is plain cross-entropy
    sums = task.eval_metrics(Fixed(LOGITS), (IMAGES, LABELS))
    assert int(sums["correct"]) == 2 and sums["count"] == 4
    assert sums["loss_sum"].item() == pytest.approx(F.cross_entropy(LOGITS, LABELS, reduction="sum").item())
    out = task.summarize({k: float(v) for k, v in sums.items()})
    assert out["acc"] == 0.5 and out["loss"] == pytest.approx(F.cross_entropy(LOGITS, LABELS).item())


def test_predict_gives_probabilities_and_keeps_the_mode():
    model = Fixed(LOGITS).train()
    p = Classify().predict(model, IMAGES)
    assert model.training and torch.allclose(p.sum(-1), torch.ones(4)) and torch.equal(p.argmax(-1), LOGITS.argmax(-1))


def test_bad_inputs_say_what_was_expected():
    with pytest.raises(ValueError, match="integer class indices"):
        Classify().loss(Fixed(LOGITS), (IMAGES, LABELS.float()))
    with pytest.raises(ValueError, match="num_classes=5"):
        Classify(num_classes=5).loss(Fixed(LOGITS), (IMAGES, LABELS))
    with pytest.raises(ValueError):
        Classify(label_smoothing=1.0)
