"""Window activation pruning helpers: kept counts, L2 scores, top-k selection, gather/scatter round trip."""
import pytest
import torch

from vitkit.layers.sparse import gather_windows, kept_windows, scatter_windows, select_windows, window_scores


@pytest.mark.parametrize("nW,s,k", [(16, 0.0, 16), (16, 0.5, 8), (10, 0.3, 7), (16, 0.3, 12), (16, 0.8, 4),
                                    (4, 0.7, 2), (1, 0.8, 1), (7, 0.1, 7)])
def test_kept_windows_is_ceil(nW, s, k):
    assert kept_windows(nW, s) == k


def test_kept_windows_rejects_out_of_range():
    for s in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            kept_windows(4, s)


def test_scores_are_l2_norms_and_selection_takes_the_largest_in_window_order():
    w = torch.zeros(2, 5, 3, 4)
    norms = torch.tensor([[1.0, 5.0, 2.0, 4.0, 3.0], [9.0, 1.0, 8.0, 2.0, 7.0]])
    w[:, :, 0, 0] = norms                                       # one non-zero per window
    w[:, :, 1, 1] = 0.0
    assert torch.allclose(window_scores(w), norms)
    idx = select_windows(window_scores(w), 3)
    assert idx.tolist() == [[1, 3, 4], [0, 2, 4]]               # top 3, ascending
    assert select_windows(norms, 5).tolist() == [list(range(5))] * 2


def test_gather_scatter_updates_only_the_kept_windows():
    w = torch.randn(2, 6, 4, 3, requires_grad=True)
    idx = torch.tensor([[0, 4], [1, 5]])
    kept = gather_windows(w, idx)
    assert torch.equal(kept[1, 1], w[1, 5])
    out = scatter_windows(w, idx, kept * 2)
    for b, ks in enumerate(idx.tolist()):
        for j in range(6):
            assert torch.equal(out[b, j], w[b, j] * (2 if j in ks else 1))
    out.sum().backward()
    assert w.grad[0, 0].eq(2).all() and w.grad[0, 1].eq(1).all()
