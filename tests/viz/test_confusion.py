import pytest
import torch

from vitkit.viz import confusion_matrix


def test_hand_made_example():
    preds = torch.tensor([0, 1, 2, 2, 1, 0, 2])
    labels = torch.tensor([0, 1, 1, 2, 2, 0, 0])
    # (true, pred) pairs: (0,0) x2, (0,2), (1,1), (1,2), (2,2), (2,1)
    want = torch.tensor([[2, 0, 1], [0, 1, 1], [0, 1, 1]])
    cm = confusion_matrix(preds, labels, 3)
    assert cm.dtype == torch.int64 and torch.equal(cm, want)
    # logits are argmax-ed; a class nobody predicts or holds is an all-zero row and column
    logits = torch.nn.functional.one_hot(preds, 4).float() * 3.0
    cm4 = confusion_matrix(logits, labels, 4)
    assert torch.equal(cm4[:3, :3], want) and cm4[3].sum() == 0 and cm4[:, 3].sum() == 0


def test_checks():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match="labels"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0]), 3)
    assert confusion_matrix(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long), 2).sum() == 0
